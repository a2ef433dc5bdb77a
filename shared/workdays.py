"""England working days: weekends and England bank holidays (with substitute days, from the
``holidays`` package) are not working days. Pure functions, shared by every service that
counts statutory deadlines (complaint acknowledgements, meeting deadlines).
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from functools import lru_cache

import holidays


@lru_cache(maxsize=64)
def _england_holidays(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("GB", subdiv="ENG", years=year)


def is_bank_holiday(day: date) -> bool:
    """True on an England bank holiday (substitute days included)."""
    return day in _england_holidays(day.year)


def is_working_day(day: date) -> bool:
    """Monday to Friday and not an England bank holiday."""
    return day.weekday() < 5 and not is_bank_holiday(day)


def working_days_after(day: date, n: int) -> date:
    """The n-th working day after ``day`` (``day`` itself does not count)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    current = day
    while n > 0:
        current += timedelta(days=1)
        if is_working_day(current):
            n -= 1
    return current


def next_working_day(day: date) -> date:
    """``day`` if it is a working day, else the next one."""
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def months_after(day: date, n: int) -> date:
    """The same day of the month ``n`` months later, or that month's last day if it is
    shorter (31 August + 6 months = 28 or 29 February)."""
    month_index = day.month - 1 + n
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
