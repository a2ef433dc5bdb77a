"""The one backoff policy (shared/retry.py): the figures each caller relied on are kept."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.retry import TRANSIENT_BACKOFF, Backoff


def test_delays_double_from_the_first_up_to_the_cap() -> None:
    jobs = Backoff(first=30.0, cap=3600.0)  # a scheduled job (escalation's old retry_delay)
    assert [jobs.seconds(n) for n in range(1, 10)] == [
        30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert jobs.after(2) == timedelta(minutes=1)
    assert jobs.seconds(10_000) == 3600, "no overflow on a very late attempt"
    assert jobs.seconds(0) == 30, "an attempt before the first counts as the first"


def test_the_outbox_relays_figures_are_the_old_ones() -> None:
    outbox = Backoff(first=1.0, cap=256.0)
    assert [outbox.seconds(n + 1) for n in range(12)] == [
        min(300.0, 2.0 ** min(n, 8)) for n in range(12)]


def test_full_jitter_waits_between_zero_and_the_delay() -> None:
    policy = Backoff(first=2.0, cap=300.0, full_jitter=True)
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return high / 2

    assert policy.seconds(3, uniform) == 4.0
    assert policy.seconds(20, uniform) == 150.0
    assert asked == [(0.0, 8.0), (0.0, 300.0)]


def test_added_jitter_never_passes_the_cap() -> None:
    assert TRANSIENT_BACKOFF.seconds(1, lambda low, high: high) == pytest.approx(0.15)
    assert TRANSIENT_BACKOFF.seconds(3, lambda low, high: 0.0) == pytest.approx(0.2)
    assert TRANSIENT_BACKOFF.seconds(30, lambda low, high: high) == 5.0


@pytest.mark.parametrize("bad", [dict(first=-1.0, cap=1.0), dict(first=1.0, cap=1.0, factor=0.5),
                                 dict(first=1.0, cap=1.0, jitter=-0.1)])
def test_a_policy_that_is_not_one_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**bad)  # type: ignore[arg-type]
