"""England working days and meeting slots (services/escalation/calendar.py).

All instants passed in are timezone-aware UTC, as the escalation service passes them; results
are checked both as London wall-clock times and as UTC instants.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.escalation.calendar import (
    LONDON,
    OfficeHours,
    Slot,
    first_free_slot,
    is_bank_holiday,
    is_working_day,
    next_working_day,
    working_days_after,
)

HOUR = timedelta(hours=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def slot(now: datetime, *, within: int = 2, duration: timedelta = HOUR,
         busy: list[tuple[datetime, datetime]] | None = None,
         notice: timedelta = HOUR) -> Slot:
    return first_free_slot(now, within_working_days=within, duration=duration,
                           busy=busy or [], minimum_notice=notice)


# -- bank holidays and weekends ------------------------------------------------------------

@pytest.mark.parametrize("day, name", [
    (date(2026, 1, 1), "New Year's Day"),
    (date(2026, 4, 3), "Good Friday 2026"),
    (date(2026, 4, 6), "Easter Monday 2026"),
    (date(2026, 5, 4), "Early May bank holiday 2026"),
    (date(2026, 5, 25), "Spring bank holiday 2026"),
    (date(2026, 8, 31), "Summer bank holiday 2026"),
    (date(2026, 12, 25), "Christmas Day 2026 (Friday)"),
    (date(2026, 12, 28), "Boxing Day 2026 observed on Monday 28 December"),
    (date(2027, 3, 26), "Good Friday 2027"),
    (date(2027, 3, 29), "Easter Monday 2027"),
    (date(2027, 5, 3), "Early May bank holiday 2027"),
    (date(2027, 5, 31), "Spring bank holiday 2027"),
    (date(2027, 12, 27), "Christmas Day 2027 (Saturday) substitute, Monday 27 December"),
    (date(2027, 12, 28), "Boxing Day 2027 (Sunday) substitute, Tuesday 28 December"),
])
def test_england_bank_holidays_are_not_working_days(day: date, name: str) -> None:
    assert day.weekday() < 5, f"{name} should fall on a weekday"
    assert is_bank_holiday(day), name
    assert not is_working_day(day), name


@pytest.mark.parametrize("day, why", [
    (date(2026, 12, 24), "Christmas Eve is not a bank holiday"),
    (date(2026, 12, 29), "Tuesday after the Christmas substitute day"),
    (date(2026, 12, 31), "New Year's Eve"),
    (date(2027, 3, 25), "Maundy Thursday"),
    (date(2027, 3, 30), "Tuesday after Easter Monday"),
    (date(2026, 5, 5), "Tuesday after the early May bank holiday"),
    (date(2026, 3, 17), "St Patrick's Day is a holiday in Northern Ireland only"),
    (date(2026, 8, 3), "Scotland's summer bank holiday is not England's"),
    (date(2026, 11, 30), "St Andrew's Day is a holiday in Scotland only"),
])
def test_ordinary_weekdays_are_working_days(day: date, why: str) -> None:
    assert is_working_day(day), why
    assert not is_bank_holiday(day), why


@pytest.mark.parametrize("day", [date(2026, 11, 21), date(2026, 11, 22),   # Sat, Sun
                                 date(2027, 12, 25), date(2027, 12, 26)])  # Christmas at a weekend
def test_weekends_are_not_working_days(day: date) -> None:
    assert day.weekday() >= 5
    assert not is_working_day(day)


# -- working_days_after ------------------------------------------------------------------------

@pytest.mark.parametrize("start, n, expected, why", [
    (date(2026, 11, 20), 1, date(2026, 11, 23), "Friday + 1 = Monday"),
    (date(2026, 11, 20), 5, date(2026, 11, 27), "Friday + 5 = next Friday"),
    (date(2026, 11, 18), 2, date(2026, 11, 20), "Wednesday + 2 = Friday"),
    (date(2026, 5, 22), 1, date(2026, 5, 26), "Friday before the spring bank holiday + 1 = Tuesday"),
    (date(2026, 4, 2), 1, date(2026, 4, 7), "Maundy Thursday + 1 skips Good Friday to Easter Monday"),
    (date(2027, 3, 25), 1, date(2027, 3, 30), "Maundy Thursday 2027 + 1 = Tuesday 30 March"),
    (date(2026, 12, 24), 1, date(2026, 12, 29), "Christmas Eve 2026 + 1 = Tuesday 29 December"),
    (date(2027, 12, 24), 1, date(2027, 12, 29), "Christmas Eve 2027 + 1 = Wednesday 29 December"),
    (date(2026, 11, 21), 1, date(2026, 11, 23), "from a Saturday, the day itself does not count"),
    (date(2026, 11, 20), 0, date(2026, 11, 20), "n = 0 is the day itself"),
    (date(2026, 11, 21), 0, date(2026, 11, 21), "n = 0 is the day itself, even on a weekend"),
])
def test_working_days_after(start: date, n: int, expected: date, why: str) -> None:
    assert working_days_after(start, n) == expected, why


def test_working_days_after_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError):
        working_days_after(date(2026, 11, 20), -1)


@pytest.mark.parametrize("day, expected", [
    (date(2026, 11, 23), date(2026, 11, 23)),  # a working Monday is itself
    (date(2026, 11, 21), date(2026, 11, 23)),  # Saturday -> Monday
    (date(2026, 12, 25), date(2026, 12, 29)),  # Christmas -> Tuesday 29 December
])
def test_next_working_day(day: date, expected: date) -> None:
    assert next_working_day(day) == expected


# -- first_free_slot: office hours, grid and notice -------------------------------------------

def test_first_slot_is_on_the_half_hour_grid_after_the_minimum_notice() -> None:
    # Monday 23 Nov 2026 09:10 GMT + 1 hour notice = 10:10 -> next grid point 10:30.
    s = slot(utc(2026, 11, 23, 9, 10))
    assert s.start == london(2026, 11, 23, 10, 30)
    assert s.end == london(2026, 11, 23, 11, 30)
    assert not s.breach


@pytest.mark.parametrize("now, notice, expected", [
    (utc(2026, 11, 23, 9, 0), timedelta(0), london(2026, 11, 23, 9, 0)),   # exactly on the grid
    (utc(2026, 11, 23, 9, 0, 1), timedelta(0), london(2026, 11, 23, 9, 30)),  # a second late
    (utc(2026, 11, 23, 7, 0), HOUR, london(2026, 11, 23, 9, 0)),           # before opening
    (utc(2026, 11, 23, 9, 0), timedelta(minutes=90), london(2026, 11, 23, 10, 30)),
    (utc(2026, 11, 23, 9, 0), timedelta(hours=24), london(2026, 11, 24, 9, 0)),
])
def test_minimum_notice(now: datetime, notice: timedelta, expected: datetime) -> None:
    assert slot(now, notice=notice).start == expected


def test_raised_late_on_a_friday_lands_on_monday_morning() -> None:
    s = slot(utc(2026, 11, 20, 16, 30))  # Friday 16:30 GMT; + 1 h notice is after closing
    assert s.start == london(2026, 11, 23, 9, 0)
    assert s.deadline == london(2026, 11, 24, 17, 0)  # two working days after Friday
    assert not s.breach


@pytest.mark.parametrize("raised", [utc(2026, 12, 24, 15, 30), utc(2026, 12, 24, 16, 0)])
def test_raised_on_christmas_eve_afternoon_lands_on_tuesday_29_december(raised: datetime) -> None:
    # Fri 25 Christmas, Sat 26, Sun 27, Mon 28 Boxing Day (substitute): next is Tue 29.
    s = slot(raised)
    assert s.start == london(2026, 12, 29, 9, 0)
    assert s.deadline == london(2026, 12, 30, 17, 0)
    assert not s.breach


def test_raised_on_christmas_eve_morning_still_meets_that_day() -> None:
    assert slot(utc(2026, 12, 24, 10, 0)).start == london(2026, 12, 24, 11, 0)


def test_easter_2027_is_skipped() -> None:
    # Thursday 25 March 2027 after hours: Good Friday 26, weekend, Easter Monday 29.
    s = slot(utc(2027, 3, 25, 17, 0))
    assert s.start == london(2027, 3, 30, 9, 0)


@pytest.mark.parametrize("duration", [timedelta(minutes=m) for m in (30, 45, 60, 90, 120)])
def test_meetings_stay_inside_office_hours_on_working_days(duration: timedelta) -> None:
    # Every 37 minutes across a week that has a bank holiday (spring bank holiday 2026)
    # and a weekend, with a busy block that pushes meetings towards the end of the day.
    now = utc(2026, 5, 21, 0, 0)
    busy = [(london(2026, 5, 26, 9, 0), london(2026, 5, 26, 15, 30))]
    while now < utc(2026, 5, 28, 0, 0):
        s = slot(now, duration=duration, busy=busy)
        start, end = s.start.astimezone(LONDON), s.end.astimezone(LONDON)
        assert is_working_day(start.date())
        assert start.date() == end.date()
        assert start.time() >= time(9, 0)
        assert end.time() <= time(17, 0), f"{start} + {duration} runs past 17:00"
        assert start.minute in (0, 30) and start.second == 0
        assert end - start == duration
        assert s.start >= now + HOUR
        now += timedelta(minutes=37)


def test_a_ninety_minute_meeting_late_in_the_day_moves_to_the_next_day() -> None:
    # Monday 14:45 GMT + 1 h = 15:45 -> 16:00, but 16:00 + 90 min is 17:30.
    s = slot(utc(2026, 11, 23, 14, 45), duration=timedelta(minutes=90))
    assert s.start == london(2026, 11, 24, 9, 0)


def test_the_last_slot_of_the_day_ends_exactly_at_five() -> None:
    s = slot(utc(2026, 11, 23, 14, 55), duration=timedelta(minutes=60))  # 15:55 -> 16:00
    assert (s.start, s.end) == (london(2026, 11, 23, 16, 0), london(2026, 11, 23, 17, 0))


def test_custom_office_hours() -> None:
    hours = OfficeHours(start=time(10, 0), end=time(12, 0), slot_minutes=15)
    s = first_free_slot(utc(2026, 11, 23, 10, 20), within_working_days=1, duration=HOUR,
                        busy=[], hours=hours, minimum_notice=timedelta(0))
    assert s.start == london(2026, 11, 23, 10, 30)
    s = first_free_slot(utc(2026, 11, 23, 11, 5), within_working_days=1, duration=HOUR,
                        busy=[], hours=hours, minimum_notice=timedelta(0))
    assert s.start == london(2026, 11, 24, 10, 0)


# -- first_free_slot: busy intervals -----------------------------------------------------------

MONDAY_8AM = utc(2026, 11, 23, 8, 0)  # first candidate (1 h notice) is Monday 09:00


def monday(hhmm: str) -> datetime:
    """A time on Monday 23 November 2026 (GMT, so UTC and London agree)."""
    hour, minute = map(int, hhmm.split(":"))
    return utc(2026, 11, 23, hour, minute)


@pytest.mark.parametrize("busy, expected_start, why", [
    ([], "09:00", "no clash"),
    ([("09:00", "10:00")], "10:00", "exact overlap"),
    ([("09:45", "10:15")], "10:30", "partial overlap with the 09:00, 09:30 and 10:00 slots"),
    ([("08:30", "09:15")], "09:30", "partial overlap at the start"),
    ([("09:20", "09:25")], "09:30", "busy interval inside the slot"),
    ([("08:00", "12:00")], "12:00", "slot inside a long busy interval"),
    ([("10:00", "11:00")], "09:00", "back to back after: not a clash"),
    ([("08:00", "09:00")], "09:00", "back to back before: not a clash"),
    ([("10:00", "11:00"), ("08:00", "09:30")], "11:00", "unsorted busy list"),
])
def test_busy_intervals(busy: list[tuple[str, str]], expected_start: str, why: str) -> None:
    intervals = [(monday(a), monday(b)) for a, b in busy]
    s = slot(MONDAY_8AM, busy=intervals)
    assert s.start == monday(expected_start), why
    assert s.start.tzinfo is LONDON


def test_busy_intervals_in_utc_during_summer_time() -> None:
    # 1 June 2026 is BST: a busy 08:00-09:00 UTC is 09:00-10:00 London.
    s = slot(utc(2026, 6, 1, 7, 0), busy=[(utc(2026, 6, 1, 8, 0), utc(2026, 6, 1, 9, 0))],
             notice=timedelta(0))
    assert s.start == london(2026, 6, 1, 10, 0)
    assert s.start.astimezone(UTC) == utc(2026, 6, 1, 9, 0)


def test_full_window_gives_the_earliest_slot_after_the_deadline_flagged_as_breach() -> None:
    # Raised Monday 08:00; two working days -> deadline Wednesday 25 Nov 17:00; all booked.
    busy = [(utc(2026, 11, 23, 9, 0), utc(2026, 11, 25, 17, 0))]
    s = slot(MONDAY_8AM, busy=busy)
    assert s.deadline == london(2026, 11, 25, 17, 0)
    assert s.start == london(2026, 11, 26, 9, 0)
    assert s.breach


def test_a_slot_ending_exactly_at_the_deadline_is_not_a_breach() -> None:
    busy = [(utc(2026, 11, 23, 9, 0), utc(2026, 11, 25, 16, 0))]
    s = slot(MONDAY_8AM, busy=busy)
    assert (s.start, s.end) == (london(2026, 11, 25, 16, 0), london(2026, 11, 25, 17, 0))
    assert s.end == s.deadline
    assert not s.breach


def test_breach_slot_skips_a_bank_holiday_after_the_deadline() -> None:
    # Raised Wed 20 May 2026; deadline Fri 22 May 17:00 (all busy); Mon 25 May is a bank holiday.
    busy = [(utc(2026, 5, 20, 0, 0), utc(2026, 5, 22, 16, 0))]
    s = slot(utc(2026, 5, 20, 8, 0), busy=busy, duration=timedelta(hours=2))
    assert s.deadline == london(2026, 5, 22, 17, 0)
    assert s.start == london(2026, 5, 26, 9, 0)
    assert s.breach


def test_no_free_slot_within_the_horizon_raises() -> None:
    busy = [(utc(2026, 11, 1), utc(2027, 6, 1))]
    with pytest.raises(LookupError):
        first_free_slot(MONDAY_8AM, within_working_days=2, duration=HOUR, busy=busy,
                        horizon_working_days=10)


# -- clock changes -----------------------------------------------------------------------------

def test_first_meeting_after_the_spring_clock_change_is_0800_utc() -> None:
    # Clocks go forward on Sunday 29 March 2026; raised Friday 27 March after hours (GMT).
    s = slot(utc(2026, 3, 27, 16, 30))
    assert s.start == london(2026, 3, 30, 9, 0)
    assert s.start.astimezone(UTC) == utc(2026, 3, 30, 8, 0)
    assert s.start.utcoffset() == timedelta(hours=1)


def test_first_meeting_after_the_autumn_clock_change_is_0900_utc() -> None:
    # Clocks go back on Sunday 25 October 2026; raised Friday 23 October after hours (BST).
    s = slot(utc(2026, 10, 23, 15, 30))
    assert s.start == london(2026, 10, 26, 9, 0)
    assert s.start.astimezone(UTC) == utc(2026, 10, 26, 9, 0)


def test_summer_time_now_in_utc_is_read_as_london_time() -> None:
    # 07:30 UTC on 1 June is 08:30 BST: with no notice the first slot is 09:00 BST = 08:00 UTC,
    # not 09:00 UTC (which a UTC-as-local reading would give).
    s = slot(utc(2026, 6, 1, 7, 30), notice=timedelta(0))
    assert s.start.astimezone(UTC) == utc(2026, 6, 1, 8, 0)


def test_late_evening_utc_in_summer_is_already_the_next_london_day() -> None:
    # 23:30 UTC Monday 1 June = 00:30 BST Tuesday 2 June; two working days -> Thursday 4 June.
    s = slot(utc(2026, 6, 1, 23, 30))
    assert s.deadline == london(2026, 6, 4, 17, 0)
    assert s.start == london(2026, 6, 2, 9, 0)
