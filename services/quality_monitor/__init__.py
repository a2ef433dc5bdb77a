"""quality-monitor: turns accepted feedback into explainable concerns."""
