"""Report periods: months (YYYY-MM) and quarters (YYYY-Qn), and the first working day of
each, when the scheduled reports fall due. Pure functions; working days are England's
(``shared.workdays``: weekends and bank holidays excluded)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.workdays import next_working_day

LONDON = ZoneInfo("Europe/London")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")


@dataclass(frozen=True)
class Period:
    """A month or a quarter: its label, first day and the day after its last."""

    label: str
    start: date
    end: date  # exclusive

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def months(self) -> list[str]:
        out, day = [], self.start
        while day < self.end:
            out.append(f"{day.year:04d}-{day.month:02d}")
            day = _add_months(day, 1)
        return out

    def words(self) -> str:
        if len(self.months) == 1:
            return self.start.strftime("%B %Y")
        q = _QUARTER.match(self.label)
        assert q is not None
        return (f"quarter {q.group(2)} of {q.group(1)} ({self.start.strftime('%B')} to"
                f" {self.last_day.strftime('%B %Y')})")

    def next(self) -> Period:
        if len(self.months) == 1:
            return month(f"{self.end:%Y-%m}")
        return quarter_of(self.end)

    def previous(self) -> Period:
        if len(self.months) == 1:
            return month(f"{_add_months(self.start, -1):%Y-%m}")
        return quarter_of(_add_months(self.start, -3))


def _add_months(day: date, n: int) -> date:
    index = day.year * 12 + day.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def month(label: str) -> Period:
    m = _MONTH.match(label)
    if not m:
        raise ValueError(f"{label!r} is not a month: expected YYYY-MM")
    start = date(int(m.group(1)), int(m.group(2)), 1)
    return Period(label, start, _add_months(start, 1))


def quarter(label: str) -> Period:
    """A calendar quarter, ``YYYY-Qn`` (Q1 = January to March)."""
    q = _QUARTER.match(label)
    if not q:
        raise ValueError(f"{label!r} is not a quarter: expected YYYY-Qn (e.g. 2026-Q3)")
    start = date(int(q.group(1)), 3 * int(q.group(2)) - 2, 1)
    return Period(label, start, _add_months(start, 3))


def quarter_of(day: date) -> Period:
    return quarter(f"{day.year}-Q{(day.month - 1) // 3 + 1}")


def first_working_day(day: date) -> date:
    """The first working day of ``day``'s month (1 January 2027 is a bank holiday: the 4th)."""
    return next_working_day(day.replace(day=1))


def due_at(p: Period, at: time) -> datetime:
    """When a period's reports are made: the first working day after it ends, at ``at``
    London time."""
    return datetime.combine(first_working_day(p.end), at, LONDON)


def last_month_before(now: datetime) -> Period:
    """The latest month that has ended by ``now`` (London)."""
    today = now.astimezone(LONDON).date()
    return month(f"{_add_months(today.replace(day=1), -1):%Y-%m}")


def last_quarter_before(now: datetime) -> Period:
    today = now.astimezone(LONDON).date()
    return quarter_of(_add_months(quarter_of(today).start, -3))
