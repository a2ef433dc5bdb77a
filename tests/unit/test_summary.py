"""The Making Data Count summary row (services/quality_monitor/summary.py) and targets."""

from __future__ import annotations

from services.quality_monitor.config import load_rules
from services.quality_monitor.series import Series
from services.quality_monitor.spc import SpcOptions
from services.quality_monitor.summary import row

PERIODS = [f"2026-{m:02d}" for m in range(1, 13)] + ["2027-01"]


def series(values: list[float]) -> Series:
    return Series(PERIODS[:len(values)], values, [[] for _ in values])


def test_latest_point_with_variation_and_assurance() -> None:
    steady = [5.0, 5.4, 4.8, 5.2, 5.1, 4.9, 5.3, 4.7, 5.0, 5.2, 4.9, 5.1]
    r = row("RXX", "Example Trust", "fft_negative", "inpatient", series([*steady, 9.0]),
            SpcOptions(), [], 3.0)
    assert r is not None
    assert (r.period, r.value, r.variation, r.assurance) == (
        "2027-01", "9.0%", "concern_high", "consistent_fail")
    assert r.variation_words == "special cause: concern (high)"
    assert r.assurance_words == "consistently fails the target"
    same = row("RXX", "Example Trust", "fft_positive", "inpatient", series([*steady, 9.0]),
               SpcOptions(), [], None)
    assert same is not None and same.variation == "improvement_high" and same.assurance is None
    hit = row("RXX", "Example Trust", "fft_negative", "inpatient", series(steady),
              SpcOptions(), [], 5.0)
    assert hit is not None and hit.variation == "common_cause"
    assert hit.assurance == "inconsistent"
    assert row("RXX", "x", "complaints", "all", series(steady[:5]), SpcOptions(), [], None) \
        is None


def test_targets_default_to_national_fft_figures_and_are_configurable() -> None:
    spc_rules = load_rules().spc
    assert spc_rules.target("fft_positive", "a_and_e") == 80.0
    assert spc_rules.target("fft_negative", "inpatient") == 3.0
    assert spc_rules.target("complaints", "all") is None
    custom = spc_rules.model_copy(update={"targets": {"complaints": {"all": 20.0}}})
    assert custom.target("complaints", "all") == 20.0
