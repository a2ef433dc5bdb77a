"""The recurring Clinical Quality Review Meeting (CQRM) of each provider. Pure functions.

Each provider meets its commissioner monthly, on a fixed pattern such as "the 2nd Tuesday of
the month at 10:00" (configured in the policy, per provider if needed). A moderate concern
becomes an item on the first CQRM that is far enough away for the provider to prepare.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.escalation.calendar import LONDON, next_working_day, working_days_after


@dataclass(frozen=True)
class CqrmPattern:
    """When a provider's CQRM recurs: the ``week_of_month``-th ``weekday`` (0 = Monday) of each
    month, or the last one if ``week_of_month`` is -1, at ``start`` local time."""

    weekday: int = 1
    week_of_month: int = 2
    start: time = time(10, 0)
    duration_minutes: int = 120
    tz: ZoneInfo = LONDON

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError("weekday must be 0 (Monday) to 6 (Sunday)")
        if self.week_of_month not in (-1, 1, 2, 3, 4):
            raise ValueError("week_of_month must be 1 to 4, or -1 for the last")


def nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th ``weekday`` of the month (n = -1: the last one)."""
    if n == -1:
        following = date(year + month // 12, month % 12 + 1, 1)
        last = following - timedelta(days=1)
        return last - timedelta(days=(last.weekday() - weekday) % 7)
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def cqrm_days(pattern: CqrmPattern, from_month: date) -> Iterator[date]:
    """The CQRM date of each month from ``from_month``'s month on. A CQRM that falls on a bank
    holiday moves to the next working day."""
    year, month = from_month.year, from_month.month
    while True:
        yield next_working_day(nth_weekday(year, month, pattern.weekday, pattern.week_of_month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def next_cqrm(now: datetime, pattern: CqrmPattern, notice_working_days: int) -> datetime:
    """The start of the first CQRM on or after the ``notice_working_days``-th working day from
    today (London), so the provider has time to prepare its response."""
    earliest = working_days_after(now.astimezone(pattern.tz).date(), notice_working_days)
    for day in cqrm_days(pattern, earliest):
        if day >= earliest:
            return datetime.combine(day, pattern.start, pattern.tz)
    raise AssertionError("unreachable: cqrm_days never ends")  # pragma: no cover
