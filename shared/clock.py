"""The one clock.

Every service reads the time through a `Clock` (a zero-argument callable returning an aware
UTC datetime) that its runtime injects; `utc_now` is the real one. Nothing else in `shared/`
or `services/` reads the wall clock (tests/unit/test_house_rules.py checks), so a test can
drive any service through a year in seconds with a fake clock.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "epoch_seconds", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC: the default `Clock`."""
    return datetime.now(UTC)


def epoch_seconds(clock: Clock = utc_now) -> float:
    """Seconds since the Unix epoch by `clock` (for protocols that speak in epoch seconds)."""
    return clock().timestamp()
