"""Months, series and the concern lifecycle (services/quality_monitor/series.py, lifecycle.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from services.quality_monitor.lifecycle import (
    LONDON,
    last_closed_month,
    month_close_at,
    next_daily_review,
    outlier_resolved,
    spc_resolved,
    visit_resolves,
)
from services.quality_monitor.series import (
    METRICS,
    contiguous_tail,
    counts_by_month,
    month_range,
    percent,
    shift_month,
)
from services.quality_monitor.spc import Direction, assess


def test_months() -> None:
    assert shift_month("2026-01", -1) == "2025-12"
    assert shift_month("2026-11", 14) == "2028-01"
    assert month_range("2025-11", "2026-02") == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert month_range("2026-02", "2026-01") == []


def test_a_gap_ends_the_series_an_xmr_chart_is_drawn_on() -> None:
    assert contiguous_tail(["2026-01", "2026-02", "2026-04", "2026-05", "2026-06"]) == [
        "2026-04", "2026-05", "2026-06"]
    assert contiguous_tail(["2025-12", "2026-01"]) == ["2025-12", "2026-01"]
    assert contiguous_tail([]) == []


def test_monthly_counts_include_empty_months() -> None:
    days = [date(2026, 1, 5), date(2026, 1, 30), date(2026, 3, 1), date(2026, 5, 1)]
    assert counts_by_month(days, "2026-01", "2026-04") == [2, 0, 1, 0]


def test_metric_directions_and_themes() -> None:
    assert METRICS["fft_negative"].concern is Direction.UP
    assert METRICS["fft_positive"].concern is Direction.DOWN
    assert METRICS["complaints"].concern is Direction.UP
    assert METRICS["fft_negative"].theme("inpatient") == "FFT % negative: inpatient"
    assert METRICS["gp_alerts"].theme("all") == "GP alerts per month"
    assert percent(3, 12) == 25 and percent(1, 0) is None


def test_a_month_closes_days_after_it_ends_in_london_time() -> None:
    close = month_close_at("2026-10", 3)
    assert close == datetime(2026, 11, 4, 0, 0, tzinfo=LONDON)
    assert close.utcoffset().total_seconds() == 0  # type: ignore[union-attr]  # GMT in November
    assert month_close_at("2026-05", 3).utcoffset().total_seconds() == 3600  # type: ignore[union-attr]
    assert last_closed_month(datetime(2026, 11, 22, 12, tzinfo=UTC), 3) == "2026-10"
    assert last_closed_month(datetime(2026, 11, 3, 23, 59, tzinfo=UTC), 3) == "2026-09"
    assert last_closed_month(datetime(2026, 11, 4, 0, 0, tzinfo=UTC), 3) == "2026-10"


def test_the_daily_review_is_next_at_its_london_time() -> None:
    at = time(6, 0)
    assert next_daily_review(datetime(2026, 11, 22, 5, 0, tzinfo=UTC), at) == datetime(
        2026, 11, 22, 6, 0, tzinfo=LONDON)
    assert next_daily_review(datetime(2026, 11, 22, 6, 0, tzinfo=UTC), at) == datetime(
        2026, 11, 23, 6, 0, tzinfo=LONDON)


def test_an_spc_concern_resolves_after_n_months_without_a_concern_signal() -> None:
    steady = [10.0, 11.0] * 6
    v = assess([*steady, 16, 10.5, 10.5], Direction.UP)
    assert v is not None and v.common_cause_tail() == 2
    assert not spc_resolved(v.common_cause_tail(), 3)
    v = assess([*steady, 16, 10.5, 10.5, 10.5], Direction.UP)
    assert v is not None and spc_resolved(v.common_cause_tail(), 3)


def test_an_outlier_resolves_after_n_months_within_the_limit() -> None:
    assert outlier_resolved([False, False, True], 2)
    assert not outlier_resolved([False, True, False], 2)
    assert not outlier_resolved([False], 2)


def test_visits_rated_good_or_outstanding_resolve() -> None:
    assert visit_resolves("good") and visit_resolves("outstanding")
    assert not visit_resolves("requires_improvement")
