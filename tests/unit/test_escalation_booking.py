"""escalation's booking paths (services/escalation/app.py ``Escalation._meeting``,
``on_concern_resolved``, ``on_meeting_reply``; meetings.py ``MeetingPlanner``; plans.py
``ActionPlans.climb``) reached through a fake store, schedule and outbox: a serious concern
books a remedial-action meeting in the first slot its people and the provider are free, a
later concern joins (or brings forward) that meeting, a resolution cancels it, a declining
lead gets a slot proposed, and an overdue action climbs the ladder to a Rapid Quality Review.

What stays with PostgreSQL (tests/integration/test_escalation*.py, test_meetings*.py): the
locks between replicas, the exclusion constraints that refuse a double booking, and the SQL
of each query."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.escalation.app import Escalation
from services.escalation.config import load_policy
from shared.events import (
    ConcernEscalated,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    Evidence,
    MeetingCancelled,
    MeetingReplied,
    MeetingScheduled,
    MeetingSlotProposed,
    Severity,
    VisitScheduled,
)
from shared.settings import Settings
from tests.unit.builders import provider
from tests.unit.fake_escalation_store import FakeEscalationStore, install, person
from tests.unit.fakes import FakeClock, FakeOutbox, FakeSchedule

WED = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)  # London is on GMT: 10:00 local
LEAD, LAY = "quality.lead@icb.example.nhs.uk", "lay.member@icb.example.nhs.uk"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant in November 2026 (UTC, which is London's time then)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def concern(severity: Severity, theme: str = "Discharge", **fields: Any) -> ConcernRaised:
    values: dict[str, Any] = {
        "concern_id": uuid.uuid4(), "fingerprint": f"RJ1:cluster:{theme.lower()}",
        "provider": provider(), "rule": "cluster", "theme": theme, "severity": severity,
        "reason": "3 GP alerts in 30 days", "raised_at": WED,
        "evidence": [Evidence(feedback_id=uuid.uuid4(), kind="complaint",
                              occurred_on=date(2026, 11, 16))]}
    return ConcernRaised(**(values | fields))


def resolution(c: ConcernRaised, when: datetime) -> ConcernResolved:
    return ConcernResolved(concern_id=c.concern_id, fingerprint=c.fingerprint,
                           provider=c.provider, rule=c.rule, theme=c.theme,
                           severity=c.severity, resolution="signal returned to common cause",
                           resolved_at=when)


@pytest.fixture
def jobs() -> FakeSchedule:
    return FakeSchedule()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, jobs: FakeSchedule) -> FakeEscalationStore:
    return install(monkeypatch, schedule=jobs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(WED)


@pytest.fixture
def esc(clock: FakeClock) -> Escalation:
    return Escalation(Settings(), load_policy(), clock=clock)


async def raise_(esc: Escalation, c: ConcernRaised) -> FakeOutbox:
    outbox = FakeOutbox()
    await esc.on_concern_raised(object(), c, outbox)  # type: ignore[arg-type]
    return outbox


async def test_a_serious_concern_books_a_meeting_in_the_first_free_slot(
        fake: FakeEscalationStore, esc: Escalation) -> None:
    serious = concern(Severity.SERIOUS)
    outbox = await raise_(esc, serious)
    [meeting] = outbox.of(MeetingScheduled)
    # An hour's notice from 10:00 on Wednesday; within two working days (Friday 17:00).
    assert (meeting.starts_at, meeting.ends_at) == (at(18, 11), at(18, 12))
    assert meeting.deadline == at(20, 17) and not meeting.breach
    assert [(a.role, a.email) for a in meeting.attendees] == [
        ("provider quality lead", "q@provider.example"),
        ("commissioner quality lead", LEAD), ("lay member", LAY)]
    assert meeting.concern_ids == [serious.concern_id] and meeting.sequence == 0
    # Stored: the meeting, its agenda, and a booking each for the provider and its people.
    assert fake.agenda == {serious.concern_id: meeting.meeting_id}
    assert fake.booked_keys(meeting.meeting_id) == dict.fromkeys(
        ["provider:RJ1", f"person:{LEAD}", f"person:{LAY}"], (at(18, 11), at(18, 12)))
    assert fake.locked[0] == "provider:RJ1"  # the provider's lock first
    assert fake.concerns[serious.concern_id]["level"] == "remedial_meeting"
    assert [s["level"] for s in fake.ladder] == ["remedial_meeting"]
    entry = fake.audit_log[-1]
    assert entry["detail"]["meeting"] == (f"booked {meeting.meeting_id} at"
                                          " 2026-11-18T11:00:00+00:00")
    assert entry["detail"]["published"] == [str(outbox.added[0].id)]


async def test_a_moderate_concern_that_turns_serious_leaves_the_cqrm_for_a_meeting(
        fake: FakeEscalationStore, esc: Escalation, clock: FakeClock) -> None:
    moderate = concern(Severity.MODERATE)
    await raise_(esc, moderate)
    assert fake.cqrm[moderate.concern_id]["status"] == "open"
    clock.advance(hours=1)
    update = ConcernUpdated(**(moderate.model_dump(exclude={"evidence", "severity"})
                               | {"severity": Severity.SERIOUS, "evidence": []}),
                            previous_severity=Severity.MODERATE, evidence_count=1)
    outbox = FakeOutbox()
    await esc.on_concern_updated(object(), update, outbox)  # type: ignore[arg-type]
    [meeting] = outbox.of(MeetingScheduled)
    assert meeting.starts_at == at(18, 12) and meeting.severity == Severity.SERIOUS
    assert fake.cqrm[moderate.concern_id]["status"] == "moved_to_meeting"


async def test_the_lead_s_working_days_and_daily_cap_decide_the_day(
        fake: FakeEscalationStore, esc: Escalation) -> None:
    # The lead does not work Wednesdays, and has Thursday's one meeting already.
    fake.people[LEAD] = person(LEAD, "quality lead", working_days=[0, 1, 3, 4],
                               max_meetings_per_day=1)
    fake.bookings.append((uuid.uuid4(), f"person:{LEAD}", at(19, 14), at(19, 15), 30))
    outbox = await raise_(esc, concern(Severity.SERIOUS))
    [meeting] = outbox.of(MeetingScheduled)
    assert meeting.starts_at == at(20, 9) and not meeting.breach


async def test_the_lighter_loaded_of_two_leads_takes_the_meeting(
        fake: FakeEscalationStore, esc: Escalation) -> None:
    deputy = "zoe.deputy@icb.example.nhs.uk"  # after the lead by email, so load decides
    fake.people[deputy] = person(deputy, "deputy quality lead")
    # The lead has had two meetings in the last four weeks; the deputy none.
    for day in (2, 9):
        fake.bookings.append((uuid.uuid4(), f"person:{LEAD}", at(day, 9), at(day, 10), 30))
    outbox = await raise_(esc, concern(Severity.SERIOUS))
    [meeting] = outbox.of(MeetingScheduled)
    assert [a.email for a in meeting.attendees][1:] == [deputy, LAY]


async def test_no_lead_free_in_the_window_books_after_it_as_a_breach(
        fake: FakeEscalationStore, esc: Escalation) -> None:
    fake.people[LEAD] = person(LEAD, "quality lead")
    fake.people["hoq@icb.example.nhs.uk"] = person("hoq@icb.example.nhs.uk",
                                                   "head of quality", "Helen Head")
    fake.away[LEAD] = [(at(18, 0), at(21, 0))]  # on leave to the end of the week
    outbox = await raise_(esc, concern(Severity.SERIOUS))
    [meeting] = outbox.of(MeetingScheduled)
    assert meeting.starts_at == at(23, 9) and meeting.breach  # Monday, past Friday 17:00
    assert meeting.breach_reason is not None
    assert "no commissioner quality lead free" in meeting.breach_reason
    assert "unavailable" in meeting.breach_reason
    assert meeting.head_of_quality is not None
    assert meeting.head_of_quality.email == "hoq@icb.example.nhs.uk"
    assert "(breach: no slot before the deadline" in fake.audit_log[-1]["detail"]["meeting"]


async def test_a_later_concern_joins_the_provider_s_meeting_and_waits_to_be_announced(
        fake: FakeEscalationStore, esc: Escalation, jobs: FakeSchedule,
        clock: FakeClock) -> None:
    first = concern(Severity.SERIOUS)
    [meeting] = (await raise_(esc, first)).of(MeetingScheduled)
    clock.advance(minutes=20)
    second = concern(Severity.HIGH, theme="Falls")
    outbox = await raise_(esc, second)
    assert not outbox.events  # announced later, once for the burst
    assert fake.agenda == {first.concern_id: meeting.meeting_id,
                           second.concern_id: meeting.meeting_id}
    row = fake.meetings[meeting.meeting_id]
    assert row["title"].endswith(" and 1 more concern(s)")
    assert row["starts_at"] == meeting.starts_at and row["sequence"] == 0
    assert row["pending_changes"] == ["agenda updated (new high concern joins the agenda)"]
    [announce] = jobs.waiting("meeting_announce")
    assert announce["due_at"] == clock.now + timedelta(seconds=60)
    assert announce["dedupe_key"] == f"meeting_announce:{meeting.meeting_id}:1"
    assert fake.audit_log[-1]["detail"]["meeting"].startswith(
        f"joined meeting {meeting.meeting_id}: agenda updated")
    assert fake.concerns[second.concern_id]["level"] == "remedial_meeting"


async def test_a_serious_concern_brings_the_provider_s_later_meeting_forward(
        fake: FakeEscalationStore, esc: Escalation) -> None:
    fake.people[LEAD] = person(LEAD, "quality lead")
    fake.away[LEAD] = [(at(18, 0), at(23, 0))]
    high = concern(Severity.HIGH)
    [meeting] = (await raise_(esc, high)).of(MeetingScheduled)
    assert meeting.starts_at == at(23, 9)  # within the high concern's ten working days
    fake.away[LEAD] = []  # the leave is cancelled
    serious = concern(Severity.SERIOUS, theme="Falls")
    await raise_(esc, serious)
    row = fake.meetings[meeting.meeting_id]
    assert (row["starts_at"], row["deadline"]) == (at(18, 11), at(20, 17))
    assert fake.booked_keys(meeting.meeting_id)["provider:RJ1"] == (at(18, 11), at(18, 12))
    assert row["pending_changes"][0].startswith("brought forward")


async def test_a_resolution_keeps_a_meeting_with_concerns_left_and_cancels_an_empty_one(
        fake: FakeEscalationStore, esc: Escalation, jobs: FakeSchedule,
        clock: FakeClock) -> None:
    first, second = concern(Severity.SERIOUS), concern(Severity.HIGH, theme="Falls")
    [meeting] = (await raise_(esc, first)).of(MeetingScheduled)
    await raise_(esc, second)
    clock.advance(minutes=10)
    outbox = FakeOutbox()
    await esc.on_concern_resolved(object(), resolution(first, clock.now), outbox)  # type: ignore[arg-type]
    assert not outbox.events
    row = fake.meetings[meeting.meeting_id]
    assert row["status"] == "scheduled" and "Falls" in row["title"]
    assert len(row["pending_changes"]) == 2
    clock.advance(minutes=10)
    await esc.on_concern_resolved(object(), resolution(second, clock.now), outbox)  # type: ignore[arg-type]
    [cancelled] = outbox.of(MeetingCancelled)
    assert cancelled.meeting_id == meeting.meeting_id and cancelled.sequence == 1
    assert fake.meetings[meeting.meeting_id]["status"] == "cancelled"
    assert fake.meetings[meeting.meeting_id]["pending_changes"] == []
    assert fake.booked_keys(meeting.meeting_id) == {}
    assert not jobs.waiting("meeting_announce")
    assert fake.audit_log[-1]["detail"]["meeting_cancelled"] == str(meeting.meeting_id)


async def test_a_lead_who_declines_gets_the_next_free_slot_proposed(
        fake: FakeEscalationStore, esc: Escalation) -> None:
    [meeting] = (await raise_(esc, concern(Severity.SERIOUS))).of(MeetingScheduled)
    reply = MeetingReplied(meeting_id=meeting.meeting_id, attendee="q@provider.example",
                           partstat="declined", sequence=0, received_at=WED)
    # The lead has another meeting from noon, then a 30-minute buffer.
    fake.bookings.append((uuid.uuid4(), f"person:{LEAD}", at(18, 12), at(18, 13), 30))
    outbox = FakeOutbox()
    await esc.on_meeting_reply(object(), reply, outbox)  # type: ignore[arg-type]
    [proposal] = outbox.of(MeetingSlotProposed)
    assert proposal.proposed_starts_at == at(18, 13, 30)
    assert proposal.declined_by.role == "provider quality lead"
    assert fake.meetings[meeting.meeting_id]["proposed_starts_at"] == at(18, 13, 30)
    assert fake.booked_keys(meeting.meeting_id)["provider:RJ1"] == (at(18, 11), at(18, 12))
    entry = fake.audit_log[-1]
    assert entry["party"] == "provider" and entry["detail"]["proposed"] == "2026-11-18T13:30:00+00:00"


async def test_an_overdue_action_climbs_the_ladder_to_a_rapid_quality_review(
        fake: FakeEscalationStore, esc: Escalation, jobs: FakeSchedule,
        clock: FakeClock) -> None:
    serious = concern(Severity.SERIOUS)
    await raise_(esc, serious)
    action_id = fake.add_action(serious.concern_id, "Falls risk assessment", date(2026, 11, 23))
    clock.now = at(24, 9)  # the day after it was due
    outbox = FakeOutbox(caused=False)
    job = {"payload": {"action_id": str(action_id)}}
    done = await esc.plans.overdue_job(object(), job, outbox, clock.now)  # type: ignore[arg-type]
    assert done == "done; concern climbed to enhanced_surveillance"
    assert [type(e).__name__ for e in outbox.events] == ["ActionOverdue", "ConcernEscalated"]
    [review] = jobs.waiting("ladder_review")
    assert review["due_at"] == datetime(2026, 12, 8, 9, 0, tzinfo=UTC)  # ten working days on
    # Still overdue ten working days later: the top rung, and its review meeting booked.
    clock.now = review["due_at"]
    outbox = FakeOutbox(caused=False)
    done = await esc.plans.ladder_review_job(object(), review, outbox, clock.now)  # type: ignore[arg-type]
    assert done == "climbed to intensive_support"
    meeting, escalated = outbox.events
    assert isinstance(meeting, MeetingScheduled) and isinstance(escalated, ConcernEscalated)
    assert meeting.kind == "rapid_quality_review" and meeting.concern_ids == []
    assert meeting.ends_at - meeting.starts_at == timedelta(minutes=120)
    assert meeting.starts_at == datetime(2026, 12, 8, 10, 0, tzinfo=UTC)  # an hour's notice
    assert {"nhs england", "care quality commission"} <= {a.role for a in meeting.attendees}
    assert [s.level for s in escalated.history] == [
        "remedial_meeting", "enhanced_surveillance", "intensive_support"]
    assert fake.concerns[serious.concern_id]["level"] == "intensive_support"
    assert serious.concern_id not in {c for c, m in fake.agenda.items() if m == meeting.meeting_id}
    # The top rung schedules no further review (the one run here is still marked pending).
    assert [j["dedupe_key"] for j in jobs.waiting("ladder_review")] == [
        f"ladder_review:{serious.concern_id}:enhanced_surveillance"]


async def test_a_second_serious_concern_on_a_theme_plans_an_insight_visit(
        fake: FakeEscalationStore, esc: Escalation, clock: FakeClock) -> None:
    first = concern(Severity.SERIOUS)
    assert not (await raise_(esc, first)).of(VisitScheduled)
    clock.advance(days=1)
    second = concern(Severity.SERIOUS, raised_at=clock.now)
    outbox = await raise_(esc, second)
    [visit] = outbox.of(VisitScheduled)  # the second joins the meeting: nothing else published
    assert visit.visit_kind == "insight_visit" and visit.concern_id == second.concern_id
    assert "healthwatch" in {a.role for a in visit.attendees}
    assert "visit:RJ1:Discharge" in fake.locked  # one replica counts a provider and theme
    assert fake.audit_log[-1]["detail"]["insight_visit"] == str(visit.visit_id)
    clock.advance(days=1)
    third = concern(Severity.SERIOUS, raised_at=clock.now)
    assert not (await raise_(esc, third)).of(VisitScheduled)  # one visit per run of concerns
