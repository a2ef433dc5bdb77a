"""What a remedial meeting becomes when its concerns change or a person moves it
(services/escalation/meeting_changes.py): who attends, the agenda of several concerns, and
bringing a meeting forward, without a database or a clock."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.escalation.meeting_changes import (
    attendee_roles,
    earlier_slot_needed,
    is_safeguarding,
    meeting_details,
    rescheduled,
    revise,
)
from services.escalation.rota import Choice, Person
from shared.events import Attendee, ConcernRaised, Evidence, Severity
from tests.unit.builders import meeting, provider

BOOKED = meeting()  # 23 Nov 2026 09:00-10:00, deadline 24 Nov 17:00
LEAD = Person(email="lee@icb.example", name="Lee Lead", role="commissioner quality lead",
              works_from=time(9), works_until=time(17), working_days=frozenset(range(5)),
              max_meetings_per_day=3, buffer_minutes=15)


def concern(rule: str = "cluster", theme: str = "falls", severity: Severity = Severity.HIGH,
            **figures: object) -> ConcernRaised:
    return ConcernRaised(
        concern_id=uuid.uuid4(), fingerprint=f"{rule}:{theme}", provider=provider(), rule=rule,
        theme=theme, severity=severity, reason=f"{theme} rose", figures=dict(figures),
        evidence=[Evidence(feedback_id=uuid.UUID(int=1), kind="complaint",
                           occurred_on=date(2026, 11, 16))],
        raised_at=datetime(2026, 11, 20, tzinfo=UTC))


def choice(start: datetime, *, breach: bool = False, reason: str | None = None) -> Choice:
    return Choice(start=start, end=start + timedelta(hours=1), deadline=BOOKED.deadline,
                  breach=breach, people={"commissioner quality lead": LEAD},
                  breach_reason=reason)


def actions_for(rule: str, triggers: list[str] | None) -> list[str]:
    return [f"act on {rule}", *(f"act on {t}" for t in triggers or []), "shared action"]


# -- who attends ---------------------------------------------------------------------------
@pytest.mark.parametrize(("made", "safeguarding"), [
    (concern(), False),
    (concern(rule="safeguarding"), True),
    (concern(theme="safeguarding"), True),
    (concern(triggers=["self_harm", "safeguarding"]), True),
    (concern(triggers=["self_harm"]), False),
])
def test_a_safeguarding_concern_is_told_by_its_rule_theme_or_trigger(
        made: ConcernRaised, safeguarding: bool) -> None:
    assert is_safeguarding(made) is safeguarding


def test_a_safeguarding_lead_attends_only_for_a_safeguarding_concern() -> None:
    assert attendee_roles([]) == ["commissioner quality lead", "lay member"]
    assert attendee_roles([concern()]) == ["commissioner quality lead", "lay member"]
    assert attendee_roles([concern(), concern(rule="safeguarding")]) == [
        "commissioner quality lead", "lay member", "safeguarding lead"]


# -- the agenda ----------------------------------------------------------------------------
def test_one_concerns_agenda_has_no_numbering() -> None:
    details = meeting_details([concern()], actions_for)
    assert details["severity"] is Severity.HIGH
    assert details["title"].endswith("falls (high)")
    assert not any(item.startswith("[") for item in details["agenda"])
    assert details["agenda"][-1] == "Remedial actions requested and the provider's response."
    assert details["remedial_actions"] == ["act on cluster", "shared action"]


def test_several_concerns_share_one_agenda_led_by_the_most_severe() -> None:
    details = meeting_details([concern(theme="falls", severity=Severity.MODERATE),
                               concern(rule="spc", theme="pressure ulcers",
                                       severity=Severity.SERIOUS, triggers=["deaths"])],
                              actions_for)
    assert details["severity"] is Severity.SERIOUS
    assert "pressure ulcers (serious)" in details["title"]
    assert details["title"].endswith(" and 1 more concern(s)")
    assert details["agenda"][0].startswith("[1] The concern: falls")
    assert any(item.startswith("[2] The concern: pressure ulcers") for item in details["agenda"])
    # One closing item, not one per concern; actions in order, each once.
    assert details["agenda"].count("Remedial actions requested and the provider's"
                                   " response.") == 1
    assert details["remedial_actions"] == ["act on cluster", "shared action", "act on spc",
                                           "act on deaths"]


# -- bringing a meeting forward ------------------------------------------------------------
def test_a_change_without_a_new_need_only_updates_the_agenda() -> None:
    details = {"agenda": ["new"]}
    for needed_by in (None, BOOKED.deadline, BOOKED.deadline + timedelta(days=1)):
        assert not earlier_slot_needed(BOOKED, needed_by)
        revision = revise(BOOKED, details, "concern updated", needed_by=needed_by)
        assert revision.update == details
        assert revision.note == "agenda updated (concern updated)"
        assert revision.move_to is None


def test_a_meeting_already_early_enough_keeps_its_time_with_the_earlier_deadline() -> None:
    needed_by = BOOKED.ends_at  # before the deadline, and the meeting ends by then
    assert not earlier_slot_needed(BOOKED, needed_by)
    revision = revise(BOOKED, {}, "serious", needed_by=needed_by)
    assert revision.update == {"deadline": needed_by}
    assert revision.note == "agenda updated; the meeting is already early enough (serious)"
    assert revision.move_to is None


def test_a_meeting_needed_earlier_moves_to_an_earlier_free_slot() -> None:
    needed_by = BOOKED.starts_at - timedelta(hours=1)
    assert earlier_slot_needed(BOOKED, needed_by)
    slot = choice(BOOKED.starts_at - timedelta(days=1))
    people = [Attendee(role="commissioner quality lead", name=LEAD.name, email=LEAD.email)]
    revision = revise(BOOKED, {"agenda": ["x"]}, "serious", needed_by=needed_by, earlier=slot,
                      attendees=people)
    assert revision.move_to == slot
    assert revision.note == "brought forward (serious)"
    assert revision.update == {"agenda": ["x"], "deadline": needed_by, "starts_at": slot.start,
                               "ends_at": slot.end, "breach": False, "breach_reason": None,
                               "attendees": people}


def test_a_meeting_needed_earlier_with_no_earlier_slot_stays_and_is_a_breach() -> None:
    needed_by = BOOKED.starts_at - timedelta(hours=1)
    later = choice(BOOKED.starts_at + timedelta(days=2), breach=True, reason="nobody free")
    revision = revise(BOOKED, {}, "serious", needed_by=needed_by, earlier=later)
    assert revision.move_to is None
    assert revision.note == "agenda updated; no earlier slot is free (serious)"
    assert revision.update == {
        "deadline": needed_by, "breach": True,
        "breach_reason": f"no slot before {needed_by.isoformat()} for the meeting brought"
                         " forward"}


def test_a_needed_slot_must_be_given() -> None:
    with pytest.raises(ValueError, match="earlier"):
        revise(BOOKED, {}, "serious", needed_by=BOOKED.starts_at)


# -- moved by a person ---------------------------------------------------------------------
def test_a_meeting_moved_within_its_deadline_is_no_breach() -> None:
    slot = choice(BOOKED.starts_at + timedelta(hours=2))
    revision = rescheduled(BOOKED, slot, [], "the lead is ill")
    assert revision.update["breach"] is False and revision.update["breach_reason"] is None
    assert revision.note == f"rescheduled to {slot.start.isoformat()}: the lead is ill"
    assert revision.move_to == slot


def test_a_meeting_moved_past_its_deadline_is_a_breach_with_the_persons_reason() -> None:
    slot = choice(BOOKED.deadline)
    revision = rescheduled(BOOKED, slot, [], "the provider asked")
    assert revision.update["breach"] is True
    assert revision.update["breach_reason"] == "rescheduled by a person: the provider asked"
