"""escalation's handlers (services/escalation/app.py ``Escalation``) reached through a fake
store, schedule and outbox: load -> decide -> store -> publish, without a database or broker.
The paths that book meetings are in test_escalation_booking.py; the locks and the exclusion
constraints on bookings are tested against PostgreSQL in tests/integration/test_escalation*.py
and test_meetings*.py."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from services.escalation.app import Escalation
from services.escalation.config import load_policy
from shared.events import (
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    Evidence,
    MeetingReplied,
    Severity,
)
from shared.settings import Settings
from tests.unit.builders import provider
from tests.unit.fake_escalation_store import FakeEscalationStore, install
from tests.unit.fakes import FakeOutbox, FakeSchedule

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)  # a Wednesday


def evidence(n: int = 1) -> list[Evidence]:
    return [Evidence(feedback_id=uuid.uuid4(), kind="complaint", occurred_on=date(2026, 11, 16))
            for _ in range(n)]


def concern(severity: Severity, concern_id: uuid.UUID | None = None,
            items: list[Evidence] | None = None) -> ConcernRaised:
    return ConcernRaised(
        concern_id=concern_id or uuid.uuid4(), fingerprint="RJ1:cluster:discharge",
        provider=provider(), rule="cluster", theme="Discharge", severity=severity,
        reason="3 GP alerts in 30 days", evidence=evidence() if items is None else items,
        raised_at=NOW)


@pytest.fixture
def jobs() -> FakeSchedule:
    return FakeSchedule()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, jobs: FakeSchedule) -> FakeEscalationStore:
    return install(monkeypatch, schedule=jobs)


def escalation(now: datetime = NOW) -> Escalation:
    return Escalation(Settings(), load_policy(), clock=lambda: now)


async def test_a_moderate_concern_goes_on_the_provider_s_next_cqrm(fake: FakeEscalationStore) -> None:
    raised = concern(Severity.MODERATE)
    outbox = FakeOutbox()
    await escalation().on_concern_raised(object(), raised, outbox)  # type: ignore[arg-type]
    item = fake.cqrm[raised.concern_id]
    assert item["status"] == "open" and item["cqrm_at"] > NOW
    assert item["item"].startswith("Guy's and St Thomas' NHS Foundation Trust: Discharge"
                                   " (moderate): 3 GP alerts in 30 days [1 piece(s)")
    assert not fake.watch and not outbox.added
    [entry] = fake.audit_log
    assert entry["action"] == "concern raised" and entry["event_id"] == outbox.handled.id
    assert entry["detail"]["action"] == "cqrm_agenda"
    assert entry["detail"]["cqrm_at"] == item["cqrm_at"].isoformat()


async def test_a_low_concern_goes_on_the_watch_list(fake: FakeEscalationStore) -> None:
    raised = concern(Severity.LOW)
    await escalation().on_concern_raised(object(), raised, FakeOutbox())  # type: ignore[arg-type]
    assert fake.watch[raised.concern_id].endswith("[1 piece(s) of evidence]")
    assert not fake.cqrm
    assert fake.audit_log[0]["detail"]["watch_list"] is True


async def test_an_update_adds_only_new_evidence_and_keeps_the_cqrm_date(
        fake: FakeEscalationStore) -> None:
    first = concern(Severity.MODERATE)
    await escalation().on_concern_raised(object(), first, FakeOutbox())  # type: ignore[arg-type]
    cqrm_at = fake.cqrm[first.concern_id]["cqrm_at"]
    new = evidence(2)
    update = ConcernUpdated(**(first.model_dump(exclude={"evidence"})
                               | {"evidence": [first.evidence[0], *new]}),
                            previous_severity=Severity.MODERATE, evidence_count=3)
    await escalation(NOW + timedelta(days=1)).on_concern_updated(
        object(), update, FakeOutbox())  # type: ignore[arg-type]
    assert fake.evidence[first.concern_id] == [*first.evidence, *new]  # the repeat kept once
    assert fake.cqrm[first.concern_id]["cqrm_at"] == cqrm_at
    assert fake.cqrm[first.concern_id]["item"].endswith("[3 piece(s) of evidence]")
    assert [e["action"] for e in fake.audit_log] == ["concern raised", "concern updated"]


async def test_a_concern_already_resolved_is_noted_and_nothing_is_done(
        fake: FakeEscalationStore) -> None:
    raised = concern(Severity.MODERATE)
    await escalation().on_concern_raised(object(), raised, FakeOutbox())  # type: ignore[arg-type]
    fake.concerns[raised.concern_id]["status"] = "resolved"
    fake.cqrm.clear()
    later = concern(Severity.LOW, concern_id=raised.concern_id)
    await escalation().on_concern_raised(object(), later, FakeOutbox())  # type: ignore[arg-type]
    assert not fake.cqrm and not fake.watch
    assert fake.audit_log[-1]["detail"]["note"] == "concern already resolved: noted, no action"


async def test_a_resolution_withdraws_the_cqrm_item_and_cancels_the_concern_s_jobs(
        fake: FakeEscalationStore, jobs: FakeSchedule) -> None:
    raised = concern(Severity.MODERATE)
    await escalation().on_concern_raised(object(), raised, FakeOutbox())  # type: ignore[arg-type]
    for concern_id, kind in ((raised.concern_id, "action_due_soon"),
                             (raised.concern_id, "action_overdue"),
                             (uuid.uuid4(), "action_overdue")):  # another concern's
        await jobs.schedule(object(), kind=kind, due_at=NOW + timedelta(days=5), payload={},
                            concern_id=concern_id)
    resolved = ConcernResolved(
        concern_id=raised.concern_id, fingerprint=raised.fingerprint,
        provider=raised.provider, rule=raised.rule, theme=raised.theme,
        severity=Severity.MODERATE, resolution="signal returned to common cause",
        resolved_at=NOW + timedelta(days=2))
    outbox = FakeOutbox()
    await escalation(NOW + timedelta(days=2)).on_concern_resolved(
        object(), resolved, outbox)  # type: ignore[arg-type]
    assert fake.concerns[raised.concern_id]["status"] == "resolved"
    assert fake.cqrm[raised.concern_id]["status"] == "withdrawn"
    assert [j["concern_id"] for j in jobs.waiting()] == [jobs.jobs[3]["concern_id"]]
    entry = fake.audit_log[-1]
    assert entry["action"] == "concern resolved" and entry["detail"]["was"] == "open"
    assert entry["detail"]["jobs_cancelled"] == 2 and "meeting_cancelled" not in entry["detail"]
    assert not outbox.added


async def test_a_reply_is_kept_per_attendee_and_audited_on_each_concern_of_the_meeting(
        fake: FakeEscalationStore) -> None:
    meeting_id, concerns = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()]
    fake.meetings[meeting_id] = {
        "meeting_id": meeting_id, "ods_code": "RJ1", "status": "scheduled",
        "starts_at": NOW + timedelta(days=1), "title": "Remedial action meeting", "rsvp": {},
        "attendees": [{"role": "ICB chief nurse", "name": "Ian", "email": "ian@icb.example"}]}
    fake.agenda |= dict.fromkeys(concerns, meeting_id)
    reply = MeetingReplied(meeting_id=meeting_id, attendee="Ian@ICB.example",
                           partstat="accepted", sequence=1, received_at=NOW)
    outbox = FakeOutbox()
    await escalation().on_meeting_reply(object(), reply, outbox)  # type: ignore[arg-type]
    assert fake.meetings[meeting_id]["rsvp"] == {
        "ian@icb.example": {"partstat": "accepted", "at": NOW.isoformat(), "sequence": 1}}
    assert [(e["concern_id"], e["action"], e["party"]) for e in fake.audit_log] == [
        (c, "meeting invitation accepted", "commissioner") for c in concerns]
    assert all(e["detail"]["role"] == "ICB chief nurse" for e in fake.audit_log)
    assert not outbox.added  # an acceptance proposes nothing


async def test_a_reply_to_an_unknown_meeting_changes_nothing(fake: FakeEscalationStore) -> None:
    reply = MeetingReplied(meeting_id=uuid.uuid4(), attendee="ian@icb.example",
                           partstat="declined", sequence=0, received_at=NOW)
    await escalation().on_meeting_reply(object(), reply, FakeOutbox())  # type: ignore[arg-type]
    assert not fake.audit_log and not fake.meetings
