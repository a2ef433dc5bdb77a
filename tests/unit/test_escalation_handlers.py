"""escalation's handlers (services/escalation/app.py ``Escalation``) reached through a fake
store, schedule and outbox: load -> decide -> store -> publish, without a database or broker.
The paths that book meetings (calendars, bookings under exclusion constraints) are tested
against PostgreSQL in tests/integration/test_escalation*.py and test_meetings*.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from services.escalation import app as escalation_app
from services.escalation import store as real_store
from services.escalation.app import Escalation
from services.escalation.policy import load_policy
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


@dataclass
class FakeStore:
    """The queries of the handlers under test, over dicts; ``concern_from_row`` is the real
    (pure) one."""

    concerns: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    evidence: dict[uuid.UUID, list[Evidence]] = field(default_factory=dict)
    cqrm: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    watch: dict[uuid.UUID, str] = field(default_factory=dict)
    meetings: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    agenda: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # concern -> meeting
    audit_log: list[dict[str, Any]] = field(default_factory=list)

    concern_from_row = staticmethod(real_store.concern_from_row)

    async def claim_concern(self, conn: object, c: ConcernRaised, action: str,
                            status: str = "open") -> tuple[dict[str, Any], bool]:
        created = c.concern_id not in self.concerns
        if created:
            self.concerns[c.concern_id] = {
                "concern_id": c.concern_id, "fingerprint": c.fingerprint,
                "provider": c.provider.model_dump(mode="json"), "rule": c.rule,
                "theme": c.theme, "severity": c.severity.value, "reason": c.reason,
                "figures": c.figures, "action": action, "status": status,
                "raised_at": c.raised_at, "updated_at": c.raised_at, "evidence_count": 0}
        return dict(self.concerns[c.concern_id]), created

    async def add_evidence(self, conn: object, concern_id: uuid.UUID,
                           items: list[Evidence]) -> list[Evidence]:
        held = self.evidence.setdefault(concern_id, [])
        known = {e.feedback_id for e in held}
        added = []
        for item in items:
            if item.feedback_id not in known:
                known.add(item.feedback_id)
                added.append(item)
        held.extend(added)
        self.concerns[concern_id]["evidence_count"] = len(held)
        return added

    async def save_concern(self, conn: object, c: ConcernRaised, action: str) -> None:
        self.concerns[c.concern_id] |= {"severity": c.severity.value, "reason": c.reason,
                                        "action": action}

    async def latest_evidence(self, conn: object, concern_ids: list[uuid.UUID],
                              limit: int) -> dict[uuid.UUID, list[Evidence]]:
        return {cid: self.evidence.get(cid, [])[-limit:] for cid in concern_ids}

    async def set_concern_status(self, conn: object, concern_id: uuid.UUID, status: str,
                                 at: datetime) -> None:
        self.concerns[concern_id]["status"] = status

    async def cqrm_item(self, conn: object, concern_id: uuid.UUID) -> dict[str, Any] | None:
        return self.cqrm.get(concern_id)

    async def put_cqrm_item(self, conn: object, c: ConcernRaised, item: str,
                            cqrm_at: datetime) -> None:
        self.cqrm[c.concern_id] = {"item": item, "cqrm_at": cqrm_at, "status": "open"}

    async def set_cqrm_status(self, conn: object, concern_id: uuid.UUID, status: str) -> bool:
        item = self.cqrm.get(concern_id)
        if item is None or item["status"] != "open":
            return False
        item["status"] = status
        return True

    async def put_watch_item(self, conn: object, c: ConcernRaised, item: str) -> None:
        self.watch[c.concern_id] = item

    async def meeting_for_concern(self, conn: object,
                                  concern_id: uuid.UUID) -> dict[str, Any] | None:
        meeting_id = self.agenda.get(concern_id)
        return self.meetings.get(meeting_id) if meeting_id else None

    async def lock_provider_and_meeting(self, conn: object,
                                        meeting_id: uuid.UUID) -> dict[str, Any] | None:
        return self.meetings.get(meeting_id)

    async def set_rsvp(self, conn: object, meeting_id: uuid.UUID, email: str,
                       reply: dict[str, Any]) -> None:
        self.meetings[meeting_id]["rsvp"][email.lower()] = reply

    async def meeting_concern_ids(self, conn: object, meeting_id: uuid.UUID) -> list[uuid.UUID]:
        return [c for c, m in self.agenda.items() if m == meeting_id]

    async def audit(self, conn: object, **entry: Any) -> None:
        self.audit_log.append(entry)


class FakeSchedule:
    def __init__(self) -> None:
        self.cancelled: list[uuid.UUID] = []

    async def cancel_for_concern(self, conn: object, concern_id: uuid.UUID, now: datetime,
                                 why: str) -> int:
        self.cancelled.append(concern_id)
        return 2


class FakeOutbox:
    def __init__(self) -> None:
        self.cause = SimpleNamespace(id=uuid.uuid4())
        self.added: list[Any] = []

    async def add(self, event: Any, **_: Any) -> Any:
        envelope = SimpleNamespace(id=uuid.uuid4(), event=event)
        self.added.append(envelope)
        return envelope


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    store = FakeStore()
    monkeypatch.setattr(escalation_app, "store", store)
    return store


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> FakeSchedule:
    schedule = FakeSchedule()
    monkeypatch.setattr(escalation_app, "schedule", schedule)
    return schedule


def escalation(now: datetime = NOW) -> Escalation:
    return Escalation(Settings(), load_policy(), clock=lambda: now)


async def test_a_moderate_concern_goes_on_the_provider_s_next_cqrm(fake: FakeStore) -> None:
    raised = concern(Severity.MODERATE)
    outbox = FakeOutbox()
    await escalation().on_concern_raised(object(), raised, outbox)  # type: ignore[arg-type]
    item = fake.cqrm[raised.concern_id]
    assert item["status"] == "open" and item["cqrm_at"] > NOW
    assert item["item"].startswith("Guy's and St Thomas' NHS Foundation Trust: Discharge"
                                   " (moderate): 3 GP alerts in 30 days [1 piece(s)")
    assert not fake.watch and not outbox.added
    [entry] = fake.audit_log
    assert entry["action"] == "concern raised" and entry["event_id"] == outbox.cause.id
    assert entry["detail"]["action"] == "cqrm_agenda"
    assert entry["detail"]["cqrm_at"] == item["cqrm_at"].isoformat()


async def test_a_low_concern_goes_on_the_watch_list(fake: FakeStore) -> None:
    raised = concern(Severity.LOW)
    await escalation().on_concern_raised(object(), raised, FakeOutbox())  # type: ignore[arg-type]
    assert fake.watch[raised.concern_id].endswith("[1 piece(s) of evidence]")
    assert not fake.cqrm
    assert fake.audit_log[0]["detail"]["watch_list"] is True


async def test_an_update_adds_only_new_evidence_and_keeps_the_cqrm_date(
        fake: FakeStore) -> None:
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
        fake: FakeStore) -> None:
    raised = concern(Severity.MODERATE)
    await escalation().on_concern_raised(object(), raised, FakeOutbox())  # type: ignore[arg-type]
    fake.concerns[raised.concern_id]["status"] = "resolved"
    fake.cqrm.clear()
    later = concern(Severity.LOW, concern_id=raised.concern_id)
    await escalation().on_concern_raised(object(), later, FakeOutbox())  # type: ignore[arg-type]
    assert not fake.cqrm and not fake.watch
    assert fake.audit_log[-1]["detail"]["note"] == "concern already resolved: noted, no action"


async def test_a_resolution_withdraws_the_cqrm_item_and_cancels_the_concern_s_jobs(
        fake: FakeStore, jobs: FakeSchedule) -> None:
    raised = concern(Severity.MODERATE)
    await escalation().on_concern_raised(object(), raised, FakeOutbox())  # type: ignore[arg-type]
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
    assert jobs.cancelled == [raised.concern_id]
    entry = fake.audit_log[-1]
    assert entry["action"] == "concern resolved" and entry["detail"]["was"] == "open"
    assert entry["detail"]["jobs_cancelled"] == 2 and "meeting_cancelled" not in entry["detail"]
    assert not outbox.added


async def test_a_reply_is_kept_per_attendee_and_audited_on_each_concern_of_the_meeting(
        fake: FakeStore) -> None:
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


async def test_a_reply_to_an_unknown_meeting_changes_nothing(fake: FakeStore) -> None:
    reply = MeetingReplied(meeting_id=uuid.uuid4(), attendee="ian@icb.example",
                           partstat="declined", sequence=0, received_at=NOW)
    await escalation().on_meeting_reply(object(), reply, FakeOutbox())  # type: ignore[arg-type]
    assert not fake.audit_log and not fake.meetings
