"""Tools around carewatch: the realistic stream generator, the demo and the benchmarks."""
