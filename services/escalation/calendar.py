"""England working days, office hours and meeting slots. Pure functions over plain data.

Working days exclude weekends and England bank holidays (including substitute days: see
``shared.workdays``). Times are Europe/London wall-clock times, so meetings stay in office
hours across the clock changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# The working-day rules are shared (intake and quality-monitor count statutory deadlines).
from shared.workdays import is_bank_holiday, is_working_day, next_working_day, working_days_after

__all__ = ["LONDON", "Interval", "OfficeHours", "Slot", "booking_deadline", "candidate_slots",
           "first_free_slot", "is_bank_holiday", "is_working_day", "next_working_day",
           "working_days_after", "working_days_before", "working_days_between"]

LONDON = ZoneInfo("Europe/London")


def working_days_before(day: date, n: int) -> date:
    """The n-th working day before ``day`` (``day`` itself does not count)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    current = day
    while n > 0:
        current -= timedelta(days=1)
        if is_working_day(current):
            n -= 1
    return current


def working_days_between(start: date, end: date) -> int:
    """Working days after ``start`` up to and including ``end`` (negative if ``end`` is
    earlier): 1 from a Friday to the next Monday."""
    sign, low, high = (1, start, end) if end >= start else (-1, end, start)
    count, current = 0, low
    while current < high:
        current += timedelta(days=1)
        count += is_working_day(current)
    return sign * count


Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class OfficeHours:
    start: time = time(9, 0)
    end: time = time(17, 0)
    slot_minutes: int = 30
    tz: ZoneInfo = LONDON

    def opening(self, day: date) -> datetime:
        return datetime.combine(day, self.start, self.tz)

    def closing(self, day: date) -> datetime:
        return datetime.combine(day, self.end, self.tz)


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime
    deadline: datetime
    breach: bool  # no free slot existed before the deadline


def _round_up(moment: datetime, minutes: int) -> datetime:
    moment = moment.replace(second=0, microsecond=0) + (
        timedelta(minutes=1) if moment.second or moment.microsecond else timedelta())
    extra = (-moment.minute) % minutes
    return moment + timedelta(minutes=extra)


def candidate_slots(earliest: datetime, duration: timedelta,
                    hours: OfficeHours) -> Iterator[tuple[datetime, datetime]]:
    """Every slot start on the grid, in office hours on working days, from ``earliest`` on."""
    local = earliest.astimezone(hours.tz)
    day = local.date()
    while True:
        if is_working_day(day):
            start = max(hours.opening(day), _round_up(local, hours.slot_minutes)) \
                if day == local.date() else hours.opening(day)
            while start + duration <= hours.closing(day):
                yield start, start + duration
                start += timedelta(minutes=hours.slot_minutes)
        day += timedelta(days=1)


def _overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def booking_deadline(now: datetime, within_working_days: int, hours: OfficeHours) -> datetime:
    """Close of office on the n-th working day after today."""
    today = now.astimezone(hours.tz).date()
    return hours.closing(working_days_after(today, within_working_days))


def first_free_slot(now: datetime, *, within_working_days: int, duration: timedelta,
                    busy: Iterable[Interval], hours: OfficeHours = OfficeHours(),
                    minimum_notice: timedelta = timedelta(hours=1),
                    horizon_working_days: int = 60) -> Slot:
    """The earliest slot clear of every busy interval, at least ``minimum_notice`` from now.

    If none ends by the deadline, the earliest one after it, flagged as a breach.
    """
    busy_list = sorted(busy)
    deadline = booking_deadline(now, within_working_days, hours)
    horizon = hours.closing(working_days_after(deadline.date(), horizon_working_days))
    for start, end in candidate_slots(now + minimum_notice, duration, hours):
        if start > horizon:
            break
        if any(_overlaps((start, end), b) for b in busy_list):
            continue
        return Slot(start, end, deadline, breach=end > deadline)
    raise LookupError(f"no free slot within {horizon_working_days} working days of {deadline}")
