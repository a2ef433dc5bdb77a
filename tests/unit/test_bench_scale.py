"""The bench's scale-out and national-FFT figures (tools/bench.py): the CPU of a service's
replicas summed, the verdict on what limits the gain, and the extrapolation to a national
FFT year; and the FFT year the stream generator makes for it."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from typing import Any

import pytest

from shared.settings import Settings
from tools.bench import (
    NATIONAL_FFT_YEAR,
    extrapolate,
    machine_share,
    median,
    national_estimate,
    own_cpu_cap,
    rate_thirds,
    scale_table,
    scale_verdict,
)
from tools.stacks import ProcessCpu, Stack, cpu_used
from tools.stream import StreamGenerator, load_providers


def run(replicas: int, rate: float, cpu: dict[str, float], wall: float = 10.0,
        load: tuple[float, float] = (1.0, 2.0)) -> dict[str, Any]:
    return {"n": 20_000, "replicas": replicas, "rate": rate, "handled": int(rate * wall),
            "wall": wall, "cpu": cpu, "load": load}


# -- summing the replicas' CPU ------------------------------------------------------------------
def test_two_replicas_of_a_service_count_both() -> None:
    # Two intake processes (their parent, the bench, is outside the group): 3 s and 4 s.
    start = {(10, 1): ProcessCpu(1, 5.0, 0.0), (11, 2): ProcessCpu(1, 6.0, 0.0)}
    end = {(10, 1): ProcessCpu(1, 8.0, 0.0), (11, 2): ProcessCpu(1, 10.0, 0.0)}
    assert cpu_used(start, end) == 7.0


BURN = ("import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\n"
        "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
        "print('done', flush=True)\nsys.stdin.readline()\n")


def test_a_stacks_meter_sums_every_replica_of_a_service() -> None:
    # Two real processes started as replicas of one service, each burning 0.3 s of CPU
    # inside the window: the service's figure is both (one replica's would be ~0.3 s).
    procs = [subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        s = Stack(Settings(), "unused", procs={"intake": list(procs)})  # type: ignore[arg-type]
        meter = s.cpu().start()
        for p in procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "done"
        _wall, used = meter.read()
        assert 0.55 <= used["intake"] < 1.5
    finally:
        for p in procs:
            p.kill()
            p.wait()


# -- the scale figure ----------------------------------------------------------------------------
def test_machine_share_and_others() -> None:
    r = run(1, 500, {"intake": 6.0, "rabbitmq": 4.0, "everything else": 5.0})
    busy, others = machine_share(r, cores=2)  # 15 of 20 core-seconds; 5 of them others'
    assert busy == pytest.approx(0.75) and others == pytest.approx(0.25)


def test_median() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_the_table_has_a_row_per_run_with_summed_cpu_per_submission() -> None:
    rows = scale_table([run(1, 500, {"intake": 5.0, "quality_monitor": 2.5}),
                        run(2, 600, {"intake": 6.0, "quality_monitor": 3.0,
                                     "everything else": 3.0}, load=(3.1, 4.25))], cores=2)
    assert len(rows) == 4
    assert rows[0].count("|") == rows[1].count("|") == rows[2].count("|")
    one, two = rows[2].split(" | "), rows[3].split(" | ")
    assert one[:4] == ["| 1", "500", "1.00", "0.50"]  # 5 s / 5,000 submissions = 1 ms
    assert two[:4] == ["| 2", "600", "1.00", "0.50"]
    assert two[-3:] == ["2.00", "60% (15%)", "3.10 -> 4.25 |"]


def test_verdict_cpu_bound_when_the_cores_are_busy() -> None:
    runs = [run(1, 500, {"intake": 10.0, "everything else": 4.0}),
            run(2, 550, {"intake": 12.0, "quality_monitor": 5.0, "everything else": 2.0}),
            run(1, 520, {"intake": 10.0, "everything else": 4.0}),
            run(2, 530, {"intake": 12.0, "quality_monitor": 5.0, "everything else": 2.0})]
    verdict = scale_verdict(runs, cores=2)
    assert "540 submissions/s against 510 with one (1.06 x" in verdict
    assert "CPU" in verdict and "95% busy" in verdict and "10% of the machine other" in verdict
    assert "the run had 85%" in verdict
    # Own CPU per submission, other work left out: medians of 10 s over 5,000 and 5,200
    # submissions, and of 17 s over 5,500 and 5,300.
    assert "from 1.96 ms to 3.15 ms" in verdict
    # The cores' cap: 2 cores / 1.96 ms; one intake process: 1 / 1.96 ms (all of it intake's).
    assert "~1,020/s with one replica and ~635/s with 2" in verdict
    assert "one process of intake binds before the cores" in verdict


def test_verdict_cpu_bound_the_cores_binding_first() -> None:
    # 4 ms per submission of the run's own (intake 1, quality-monitor 1.2, the broker and
    # the database 1.8): the 2 cores carry 500/s, one quality-monitor process 833/s.
    cpu = {"intake": 5.0, "quality_monitor": 6.0, "rabbitmq": 4.0, "postgresql": 5.0,
           "everything else": 0.0}
    verdict = scale_verdict([run(1, 500, cpu), run(2, 500, cpu)], cores=2)
    assert "~500/s with one replica" in verdict and "~833/s per replica of quality_monitor" \
        in verdict and "the cores bind before any one process does" in verdict


def test_verdict_a_serial_step_when_one_process_holds_a_core() -> None:
    # The broker at 9.5 s of 10 (one process: not divided), the cores 70% busy.
    runs = [run(1, 500, {"rabbitmq": 9.0, "intake": 2.0}),
            run(2, 510, {"rabbitmq": 9.5, "intake": 4.0, "quality_monitor": 0.5})]
    verdict = scale_verdict(runs, cores=2)
    assert "rabbitmq, at 95% of a core per process" in verdict and "70% busy" in verdict


def test_verdict_replicas_divide_a_services_share_of_a_core() -> None:
    # intake's 12 s over 10 s is two replicas at 60% each: not a serial step.
    runs = [run(1, 500, {"intake": 8.0}), run(2, 900, {"intake": 12.0, "postgresql": 1.0})]
    verdict = scale_verdict(runs, cores=2)
    assert "1.80 x" in verdict and "not the CPU" in verdict and "60% of a core" in verdict


def test_verdict_needs_both_kinds_of_run() -> None:
    assert "no comparison" in scale_verdict([run(1, 500, {"intake": 1.0})], cores=2)


# -- the national FFT year -----------------------------------------------------------------------
def test_extrapolation_is_linear_in_the_responses() -> None:
    assert extrapolate(100_000, 200.0) == 200.0 * 140
    assert extrapolate(2_000_000, 3600.0, target=NATIONAL_FFT_YEAR) == 7 * 3600.0
    with pytest.raises(ValueError):
        extrapolate(0, 10.0)


def test_rate_of_the_first_and_last_thirds() -> None:
    # 100/s for 30 s, then 50/s for 30 s.
    samples = [(float(t), 100 * t if t <= 30 else 3000 + 50 * (t - 30)) for t in range(61)]
    early, late = rate_thirds(samples)
    assert early == pytest.approx(100.0) and late == pytest.approx(50.0)
    with pytest.raises(ValueError):
        rate_thirds(samples[:3])


def test_a_run_that_slows_is_extrapolated_at_its_late_rate() -> None:
    samples = [(float(t), 100 * t if t <= 30 else 3000 + 50 * (t - 30)) for t in range(61)]
    e = national_estimate(4_500, 60.0, samples)
    assert e["by_average"] == pytest.approx(60.0 * NATIONAL_FFT_YEAR / 4_500)
    assert e["by_late"] == pytest.approx(NATIONAL_FFT_YEAR / 50.0)
    assert e["year"] == e["by_late"]  # the slower
    assert e["asked"] == pytest.approx(60.0 * 2_000_000 / 4_500)
    steady = [(float(t), 75 * t) for t in range(61)]
    e = national_estimate(4_500, 60.0, steady)
    assert e["year"] == pytest.approx(e["by_average"])


def test_the_fft_year_is_distinct_accepted_responses_of_that_year_none_kept() -> None:
    generator = StreamGenerator(load_providers(), seed=31)
    items = list(generator.fft_year(5_000, 2025))
    assert len(items) == 5_000 and generator.expected.accepted == 5_000
    bodies = [i.body for i in items if isinstance(i.body, dict)]
    assert len({b["record_id"] for b in bodies}) == 5_000
    assert {b["kind"] for b in bodies} == {"fft_response"}
    days = {date.fromisoformat(b["responded_on"]) for b in bodies}
    assert min(days).year == max(days).year == 2025 and len(days) > 300
    assert len({b["ods_code"] for b in bodies}) == len(load_providers())
    assert generator.duplicate() is None  # nothing kept to send again


def test_what_the_cpu_alone_allows_leaves_other_work_out() -> None:
    # 3 ms of the run's own CPU per response (300 s over 100,000), 900 s of other work.
    r = {"handled": 100_000, "cpu": {"intake": 100.0, "quality_monitor": 120.0,
                                     "rabbitmq": 80.0, "everything else": 900.0}}
    cap = own_cpu_cap(r, cores=2)
    assert cap["ms"] == pytest.approx(3.0) and cap["rate"] == pytest.approx(2000 / 3)
    assert cap["seconds"] == pytest.approx(NATIONAL_FFT_YEAR * 0.003 / 2)
    assert cap["cores"] == pytest.approx(NATIONAL_FFT_YEAR * 0.003 / 7200)  # ~5.8
    with pytest.raises(ValueError):
        own_cpu_cap({"handled": 10, "cpu": {"everything else": 5.0}}, cores=2)
