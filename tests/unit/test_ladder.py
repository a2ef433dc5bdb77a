"""The escalation ladder and the clock of an action plan (services/escalation/ladder.py):
given action states and a day, the next step; reminders and overdue checks across weekends,
Christmas and Easter; persistent concerns; re-visit dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.escalation.calendar import LONDON, OfficeHours
from services.escalation.ladder import (
    ActionState,
    LadderRule,
    PersistenceRule,
    is_persistent,
    matching_visit,
    needs_insight_visit,
    next_step,
    overdue_at,
    reminder_at,
    review_day,
    revisit_due_on,
    working_days_left,
)

HOURS = OfficeHours()
RULE = LadderRule(("enhanced_surveillance", "risk_summit"), step_after_working_days=10)


def action(due: date, completed: date | None = None, name: str = "a") -> ActionState:
    return ActionState(name, f"action {name}", due, completed)


def london(y: int, m: int, d: int, hh: int = 9, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=LONDON)


# -- next_step --------------------------------------------------------------------------------

def test_nothing_overdue_means_no_climb() -> None:
    actions = [action(date(2026, 12, 4)), action(date(2026, 11, 27), date(2026, 11, 26))]
    assert next_step("remedial_meeting", actions, date(2026, 12, 4), date(2026, 11, 20)) is None


def test_due_today_is_not_overdue() -> None:
    assert next_step(None, [action(date(2026, 12, 4))], date(2026, 12, 4), None) is None


def test_a_completed_late_action_is_not_overdue() -> None:
    late = action(date(2026, 12, 1), completed=date(2026, 12, 3))
    assert next_step("remedial_meeting", [late], date(2026, 12, 10), date(2026, 11, 20)) is None


@pytest.mark.parametrize("current", [None, "remedial_meeting"])
def test_first_overdue_action_climbs_to_enhanced_surveillance(current: str | None) -> None:
    step = next_step(current, [action(date(2026, 12, 4))], date(2026, 12, 7), date(2026, 11, 20),
                     RULE)
    assert step is not None
    assert step.level == "enhanced_surveillance"
    assert "1 remedial action(s) overdue" in step.reason and "3 days overdue" in step.reason


def test_enhanced_surveillance_holds_until_the_step_interval_has_passed() -> None:
    # Overdue since Mon 7 Dec; enhanced surveillance began that day.
    overdue = [action(date(2026, 12, 4))]
    began = date(2026, 12, 7)
    # 9 working days later: Fri 18 Dec.
    assert next_step("enhanced_surveillance", overdue, date(2026, 12, 18), began, RULE) is None
    # 10 working days after Mon 7 Dec is Mon 21 Dec.
    step = next_step("enhanced_surveillance", overdue, date(2026, 12, 21), began, RULE)
    assert step is not None and step.level == "risk_summit"
    assert "10 working days" in step.reason


def test_the_step_interval_counts_working_days_across_christmas() -> None:
    # Enhanced surveillance from Wed 16 Dec 2026: Christmas Day (Fri 25), the Boxing Day
    # substitute (Mon 28) and New Year's Day (Fri 1 Jan) do not count, so the tenth working
    # day is Monday 4 January 2027.
    overdue = [action(date(2026, 12, 10))]
    began = date(2026, 12, 16)
    assert review_day(began, RULE) == date(2027, 1, 4)
    assert next_step("enhanced_surveillance", overdue, date(2026, 12, 31), began, RULE) is None
    assert next_step("enhanced_surveillance", overdue, date(2027, 1, 4), began, RULE) is not None


def test_another_action_becoming_overdue_climbs_at_once() -> None:
    first = action(date(2026, 12, 4), name="first")
    second = action(date(2026, 12, 8), name="second")  # overdue from Wed 9 Dec
    began = date(2026, 12, 7)
    step = next_step("enhanced_surveillance", [first, second], date(2026, 12, 9), began, RULE)
    assert step is not None and step.level == "risk_summit"
    assert "action second" in step.reason and "action first" not in step.reason


def test_two_actions_overdue_the_same_day_climb_once() -> None:
    # Both due Friday, both overdue Monday: the climb on Monday accounts for both.
    actions = [action(date(2026, 12, 4), name="x"), action(date(2026, 12, 4), name="y")]
    assert next_step("enhanced_surveillance", actions, date(2026, 12, 7), date(2026, 12, 7),
                     RULE) is None


def test_the_top_of_the_ladder_is_the_top() -> None:
    assert next_step("risk_summit", [action(date(2026, 1, 5))], date(2026, 12, 7),
                     date(2026, 2, 1), RULE) is None


def test_a_ladder_of_three_rungs_from_the_policy() -> None:
    rule = LadderRule(("enhanced_surveillance", "risk_summit", "regulator_referral"), 5)
    step = next_step("risk_summit", [action(date(2026, 11, 2))], date(2026, 12, 7),
                     date(2026, 11, 16), rule)
    assert step is not None and step.level == "regulator_referral"


# -- reminders and overdue checks ------------------------------------------------------------

def test_reminder_three_working_days_before_the_due_date() -> None:
    # Due Friday 11 Dec 2026: three working days before is Tuesday 8 Dec, 09:00.
    assert reminder_at(date(2026, 12, 11), london(2026, 11, 23), 3, HOURS) == london(2026, 12, 8)


def test_reminder_before_a_tuesday_after_a_weekend() -> None:
    # Due Tue 24 Nov 2026: Mon 23, Fri 20, Thu 19 -> Thursday 19 November.
    assert reminder_at(date(2026, 11, 24), london(2026, 11, 2), 3, HOURS) == london(2026, 11, 19)


def test_reminder_skips_christmas_and_boxing_day() -> None:
    # Due Wed 30 Dec 2026: Tue 29, (Mon 28 Boxing Day substitute, Sun, Sat, Fri 25 Christmas),
    # Thu 24, Wed 23 -> Wednesday 23 December.
    assert reminder_at(date(2026, 12, 30), london(2026, 12, 1), 3, HOURS) == london(2026, 12, 23)


def test_reminder_skips_easter() -> None:
    # Due Wed 31 March 2027: Tue 30, (Mon 29 Easter Monday, weekend, Fri 26 Good Friday),
    # Thu 25, Wed 24 -> Wednesday 24 March.
    assert reminder_at(date(2027, 3, 31), london(2027, 3, 1), 3, HOURS) == london(2027, 3, 24)


def test_reminder_is_sent_at_once_when_the_action_is_due_within_the_notice() -> None:
    now = london(2026, 12, 9, 14, 0)
    assert reminder_at(date(2026, 12, 10), now, 3, HOURS) == now
    assert reminder_at(date(2026, 12, 9), now, 3, HOURS) == now  # due today


def test_no_reminder_for_an_action_already_past_due() -> None:
    assert reminder_at(date(2026, 12, 8), london(2026, 12, 9), 3, HOURS) is None


@pytest.mark.parametrize("due, checked", [
    (date(2026, 12, 10), london(2026, 12, 11)),  # Thursday -> Friday 09:00
    (date(2026, 12, 11), london(2026, 12, 14)),  # Friday -> Monday
    (date(2026, 12, 24), london(2026, 12, 29)),  # Christmas Eve -> Tuesday 29 December
    (date(2027, 3, 25), london(2027, 3, 30)),    # Maundy Thursday -> Tuesday after Easter
])
def test_overdue_check_at_opening_of_the_next_working_day(due: date, checked: datetime) -> None:
    assert overdue_at(due, HOURS) == checked


def test_working_days_left() -> None:
    assert working_days_left(date(2026, 12, 23), date(2026, 12, 30)) == 3
    assert working_days_left(date(2026, 12, 30), date(2026, 12, 30)) == 0
    assert working_days_left(date(2026, 12, 31), date(2026, 12, 30)) == 0


# -- persistent concerns and visits ----------------------------------------------------------

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_a_second_serious_concern_within_90_days_is_persistent() -> None:
    assert is_persistent([NOW - timedelta(days=89), NOW], NOW)
    assert not is_persistent([NOW - timedelta(days=91), NOW], NOW)
    assert not is_persistent([NOW], NOW)


def test_persistence_rule_is_configurable() -> None:
    rule = PersistenceRule(count=3, within_days=30)
    raised = [NOW - timedelta(days=20), NOW - timedelta(days=10), NOW]
    assert is_persistent(raised, NOW, rule)
    assert not is_persistent(raised[1:], NOW, rule)


def test_one_insight_visit_per_run_of_concerns() -> None:
    raised = [NOW - timedelta(days=30), NOW]
    assert needs_insight_visit(raised, NOW, None)
    assert not needs_insight_visit(raised, NOW, NOW - timedelta(days=10))
    assert needs_insight_visit(raised, NOW, NOW - timedelta(days=120))


@pytest.mark.parametrize("visited, expected", [
    (date(2026, 3, 10), date(2027, 3, 10)),    # a Wednesday
    (date(2025, 12, 25), date(2026, 12, 29)),  # a year on is Christmas Day -> Tue 29 Dec
    (date(2026, 3, 29), date(2027, 3, 30)),    # a year on is Easter Monday 2027 -> Tuesday
    (date(2025, 11, 22), date(2026, 11, 23)),  # a year on is a Sunday -> Monday
    (date(2028, 2, 29), date(2029, 2, 28)),    # from a leap day: 28 February, a Wednesday
])
def test_revisit_about_twelve_months_later_on_a_working_day(visited: date, expected: date) -> None:
    assert revisit_due_on(visited) == expected


def test_a_visit_report_fulfils_the_earliest_planned_visit_due_near_it() -> None:
    planned = [("revisit", date(2027, 11, 23)), ("insight", date(2026, 12, 18))]
    assert matching_visit(planned, date(2026, 12, 10)) == "insight"
    assert matching_visit(planned, date(2027, 1, 20)) == "insight"  # a late visit still counts
    assert matching_visit([("revisit", date(2027, 11, 23))], date(2026, 12, 10)) is None
    assert matching_visit([], date(2026, 12, 10)) is None
