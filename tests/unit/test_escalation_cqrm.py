"""The recurring CQRM (services/escalation/cqrm.py) and the policy that configures it."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from services.escalation.calendar import LONDON
from services.escalation.config import LadderPolicy, load_policy
from services.escalation.cqrm import CqrmPattern, cqrm_days, next_cqrm, nth_weekday

SECOND_TUESDAY = CqrmPattern(weekday=1, week_of_month=2, start=time(10, 0))


@pytest.mark.parametrize("year, month, weekday, n, expected", [
    (2026, 12, 1, 2, date(2026, 12, 8)),    # 2nd Tuesday of December 2026
    (2026, 9, 1, 1, date(2026, 9, 1)),      # the month starts on a Tuesday
    (2027, 2, 3, 4, date(2027, 2, 25)),     # 4th Thursday
    (2026, 12, 4, -1, date(2026, 12, 25)),  # last Friday of December 2026
    (2027, 2, 0, -1, date(2027, 2, 22)),    # last Monday of February
])
def test_nth_weekday(year: int, month: int, weekday: int, n: int, expected: date) -> None:
    assert nth_weekday(year, month, weekday, n) == expected


def test_a_cqrm_on_a_bank_holiday_moves_to_the_next_working_day() -> None:
    # Last Friday of December 2026 is Christmas Day; Mon 28 is the Boxing Day substitute.
    pattern = CqrmPattern(weekday=4, week_of_month=-1)
    days = cqrm_days(pattern, date(2026, 12, 1))
    assert next(days) == date(2026, 12, 29)
    assert next(days) == date(2027, 1, 29)


def test_item_goes_on_the_next_cqrm_at_least_five_working_days_away() -> None:
    # Mon 23 Nov 2026 + 5 working days = Mon 30 Nov: the November CQRM (Tue 10 Nov) is past,
    # so the next is Tuesday 8 December at 10:00 London.
    cqrm = next_cqrm(datetime(2026, 11, 23, 9, tzinfo=UTC), SECOND_TUESDAY, 5)
    assert cqrm == datetime(2026, 12, 8, 10, 0, tzinfo=LONDON)


def test_a_cqrm_too_close_is_skipped_for_the_following_month() -> None:
    # Wed 2 Dec 2026 + 5 working days = Wed 9 Dec: Tuesday 8 December is too soon.
    cqrm = next_cqrm(datetime(2026, 12, 2, 9, tzinfo=UTC), SECOND_TUESDAY, 5)
    assert cqrm == datetime(2027, 1, 12, 10, 0, tzinfo=LONDON)


def test_notice_counts_working_days_across_christmas() -> None:
    # Tue 22 Dec 2026 + 5 working days: 23, 24, 29, 30, 31 Dec -> Thu 31 Dec; next CQRM is
    # Tuesday 12 January 2027.
    cqrm = next_cqrm(datetime(2026, 12, 22, 9, tzinfo=UTC), SECOND_TUESDAY, 5)
    assert cqrm == datetime(2027, 1, 12, 10, 0, tzinfo=LONDON)


def test_a_cqrm_exactly_n_working_days_away_is_taken() -> None:
    # Tue 1 Dec 2026 + 5 working days = Tue 8 Dec, the CQRM itself.
    cqrm = next_cqrm(datetime(2026, 12, 1, 9, tzinfo=UTC), SECOND_TUESDAY, 5)
    assert cqrm.date() == date(2026, 12, 8)


def test_cqrm_start_is_london_time_in_summer() -> None:
    cqrm = next_cqrm(datetime(2026, 6, 1, 9, tzinfo=UTC), SECOND_TUESDAY, 5)
    assert cqrm == datetime(2026, 6, 9, 10, 0, tzinfo=LONDON)
    assert cqrm.astimezone(UTC).hour == 9  # 10:00 BST


def test_invalid_patterns_are_refused() -> None:
    with pytest.raises(ValueError):
        CqrmPattern(week_of_month=5)
    with pytest.raises(ValueError):
        CqrmPattern(weekday=7)


def test_policy_configures_the_cqrm_per_provider(tmp_path: pytest.TempPathFactory) -> None:
    policy = load_policy()
    assert policy.cqrm.pattern_for("RRV") == SECOND_TUESDAY
    assert policy.cqrm.minimum_notice_working_days == 5
    custom = tmp_path / "policy.yaml"  # type: ignore[operator]
    custom.write_text(
        "severities: {serious: {action: meeting}}\n"
        "cqrm:\n"
        "  default: {weekday: wednesday, week_of_month: 1, start: '14:00'}\n"
        "  providers: {RRU: {weekday: thursday, week_of_month: -1}}\n")
    policy = load_policy(custom)
    assert policy.cqrm.pattern_for("RRV") == CqrmPattern(2, 1, time(14, 0))
    assert policy.cqrm.pattern_for("RRU") == CqrmPattern(3, -1, time(10, 0))


def test_the_default_policy_states_the_nhs_process() -> None:
    policy = load_policy()
    assert policy.for_severity("serious").within_working_days == 2  # type: ignore[arg-type]
    assert policy.for_severity("high").within_working_days == 10  # type: ignore[arg-type]
    assert policy.for_severity("moderate").action == "cqrm_agenda"  # type: ignore[arg-type]
    assert policy.for_severity("low").action == "watch_list"  # type: ignore[arg-type]
    # The National Quality Board's 2022 ladder by default; the CCG-era names on request.
    assert policy.ladder.steps == ["enhanced_surveillance", "intensive_support"]
    assert policy.ladder.review_meeting_at == "intensive_support"
    assert (policy.ladder.name("review_meeting"), policy.ladder.name("group"),
            policy.ladder.name("routine")) == (
        "Rapid Quality Review", "System Quality Group", "Routine quality monitoring")
    ccg = LadderPolicy(naming="ccg")
    assert ccg.steps == ["enhanced_surveillance", "risk_summit"]
    assert (ccg.name("review_meeting"), ccg.name("group")) == (
        "Risk summit", "Quality Surveillance Group")
    with pytest.raises(ValueError, match="not one of the steps"):
        LadderPolicy(steps=["enhanced_surveillance"], review_meeting_at="intensive_support")
    assert policy.action_plans.reminder_working_days_before == 3
    assert (policy.persistent_concerns.count, policy.persistent_concerns.within_days) == (2, 90)
    assert policy.visits.revisit_after_months == 12
