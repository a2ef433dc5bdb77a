"""The workspace's read-model handlers (services/workspace/app.py ``ReadModel``) reached
through a fake store and outbox: which writes each event makes, with what data, and the
time and text of each timeline entry (``store.describe`` and ``store.joined_agenda`` are the
real, pure ones).

What these cannot reach lives in the store's SQL (services/workspace/store.py), and only
a PostgreSQL test can check it: a concern row moves only forward (``version_at``) and is never
reopened by a late update; closed stays closed; a meeting keeps its latest ``sequence`` and a
held meeting stays held; the latest reply per attendee wins; a completed action stays
completed; evidence is kept once per feedback id; a provider's name changes only for newer
facts. tests/integration/test_workspace_read_model.py checks each of them (events out of
order, against PostgreSQL), and test_concern_evidence.py the evidence kept once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.workspace import app as workspace_app
from services.workspace import store as real_store
from services.workspace.app import ReadModel, handlers
from services.workspace.store import Entry
from shared.events import (
    ActionDueSoon,
    ActionOverdue,
    Attendee,
    ConcernClosed,
    ConcernEscalated,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    ConcernUpdatedV1,
    EscalationStep,
    MeetingCancelled,
    MeetingReplied,
    MeetingRescheduled,
    MeetingScheduled,
    ProviderRef,
    RemedialAction,
    Severity,
    VisitScheduled,
)
from tests.unit.builders import meeting, provider
from tests.unit.fakes import FakeClock, FakeOutbox

SENT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)  # when the handled event was published
CLOCK = datetime(2026, 11, 20, 9, 45, tzinfo=UTC)
FIRST, SECOND = uuid.uuid4(), uuid.uuid4()


@dataclass
class FakeStore:
    """The read model's writes, recorded; ``meeting_concerns`` links each concern to a
    meeting once, as its table's primary key does."""

    writes: list[tuple[str, Any]] = field(default_factory=list)
    links: set[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=set)
    timelines: dict[uuid.UUID, list[tuple[datetime, Entry, str]]] = field(default_factory=dict)

    describe = staticmethod(real_store.describe)
    joined_agenda = staticmethod(real_store.joined_agenda)

    async def timeline(self, conn: object, concern_id: uuid.UUID, ods_code: str, at: datetime,
                       entry: Entry, actor: str = "carewatch") -> None:
        self.timelines.setdefault(concern_id, []).append((at, entry, actor))

    async def concern(self, conn: object, c: ConcernRaised) -> None:
        self.writes.append(("concern", c))

    async def concern_ended(self, conn: object, concern_id: uuid.UUID, ref: ProviderRef,
                            status: str, at: datetime, reason: str,
                            known: ConcernResolved | None = None) -> None:
        self.writes.append(("concern_ended", (concern_id, ref.ods_code, status, at, reason,
                                              known)))

    async def level(self, conn: object, concern_id: uuid.UUID, value: str) -> None:
        self.writes.append(("level", (concern_id, value)))

    async def meeting(self, conn: object, m: MeetingScheduled, status: str,
                      reason: str | None = None) -> None:
        self.writes.append(("meeting", (m.meeting_id, m.sequence, status, reason)))

    async def meeting_concerns(self, conn: object, m: MeetingScheduled,
                               at: datetime) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        on_agenda = list(dict.fromkeys([m.concern_id, *m.concern_ids]))
        joined = [c for c in on_agenda if (m.meeting_id, c) not in self.links]
        self.links |= {(m.meeting_id, c) for c in joined}
        return joined, [c for c in on_agenda if c not in joined]

    async def reply(self, conn: object, r: MeetingReplied) -> None:
        self.writes.append(("reply", r))

    async def action(self, conn: object, concern_id: uuid.UUID, ods_code: str,
                     a: dict[str, Any], at: datetime) -> None:
        self.writes.append(("action", (concern_id, ods_code, a, at)))

    async def visit(self, conn: object, v: VisitScheduled) -> None:
        self.writes.append(("visit", v))

    def lines(self, concern_id: uuid.UUID) -> list[tuple[datetime, str]]:
        return [(at, entry.what) for at, entry, _ in self.timelines.get(concern_id, [])]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    store = FakeStore()
    monkeypatch.setattr(workspace_app, "store", store)
    return store


READ = ReadModel(FakeClock(CLOCK))


async def handle(event: Any, outbox: FakeOutbox | None = None) -> None:
    """The event through the handler the service subscribes it to."""
    [handler] = [h for cls, h in handlers(READ) if type(event) is cls]
    await handler(object(), event, outbox or FakeOutbox(at=SENT))  # type: ignore[arg-type]


def booked(**overrides: Any) -> MeetingScheduled:
    return meeting(concern_id=FIRST, concern_ids=[FIRST], **overrides)


def rescheduled(sequence: int, concern_ids: list[uuid.UUID], **extra: Any) -> MeetingRescheduled:
    return MeetingRescheduled(**(booked().model_dump() | {
        "sequence": sequence, "concern_ids": concern_ids,
        "previous_starts_at": booked().starts_at, "change": "agenda updated"} | extra))


async def test_a_meeting_booked_is_stored_and_on_each_concern_s_timeline_when_sent(
        fake: FakeStore) -> None:
    await handle(booked(breach=True))
    assert fake.writes == [("meeting", (booked().meeting_id, 0, "scheduled", None))]
    assert fake.lines(FIRST) == [(SENT, "Meeting booked (after the deadline)")]


async def test_a_concern_joining_a_meeting_reads_as_joining_the_others_as_the_change(
        fake: FakeStore) -> None:
    await handle(booked())
    await handle(rescheduled(1, [FIRST, SECOND]))
    assert fake.lines(FIRST) == [(SENT, "Meeting booked"), (SENT, "Meeting rescheduled")]
    assert fake.lines(SECOND) == [
        (SENT, "Meeting booked: the concern joined the agenda of the provider's meeting")]
    # Redelivered past the inbox, it links no concern twice.
    await handle(rescheduled(1, [FIRST, SECOND]))
    assert fake.lines(SECOND)[-1][1] == "Meeting rescheduled"


async def test_a_meeting_cancelled_is_stored_so_with_its_reason(fake: FakeStore) -> None:
    await handle(booked())
    cancelled = MeetingCancelled(**(booked().model_dump() | {"sequence": 1}),
                                 reason="concern resolved")
    await handle(cancelled)
    assert fake.writes[-1] == ("meeting", (cancelled.meeting_id, 1, "cancelled",
                                           "concern resolved"))
    assert fake.timelines[FIRST][-1][1] == Entry("Meeting cancelled", "concern resolved")
    # A concern first seen on the cancelled meeting's agenda reads it as cancelled too.
    other = MeetingCancelled(**(booked().model_dump() | {"meeting_id": uuid.uuid4(),
                                                         "concern_ids": [FIRST, SECOND]}),
                             reason="provider closed")
    await handle(other)
    assert fake.lines(SECOND) == [(SENT, "Meeting cancelled")]


async def test_without_an_envelope_a_meeting_dates_by_its_deadline(fake: FakeStore) -> None:
    await handle(booked(), FakeOutbox(caused=False))
    assert fake.lines(FIRST) == [(booked().deadline, "Meeting booked")]


async def test_a_resolution_ends_the_concern_with_what_it_knows(fake: FakeStore) -> None:
    resolved = ConcernResolved(
        concern_id=FIRST, fingerprint="RJ1:cluster:falls", provider=provider(), rule="cluster",
        theme="Falls", severity=Severity.HIGH, resolution="signal returned to common cause",
        resolved_at=SENT - timedelta(days=1))
    await handle(resolved)
    assert fake.writes == [("concern_ended", (FIRST, "RJ1", "resolved", resolved.resolved_at,
                                              resolved.resolution, resolved))]
    assert fake.timelines[FIRST] == [(resolved.resolved_at,
                                      Entry("Concern resolved", resolved.resolution),
                                      "carewatch")]


async def test_a_closure_ends_the_concern_in_the_closer_s_name(fake: FakeStore) -> None:
    closed = ConcernClosed(concern_id=FIRST, provider=provider(), closed_by="user:lead",
                           reason="all actions complete", closed_at=SENT)
    await handle(closed)
    assert fake.writes == [("concern_ended", (FIRST, "RJ1", "closed", SENT,
                                              "all actions complete", None))]
    assert fake.timelines[FIRST] == [(SENT, Entry("Concern closed by user:lead",
                                                  "all actions complete"), "user:lead")]


async def test_an_escalation_sets_the_level_dated_by_its_last_step(fake: FakeStore) -> None:
    steps = [EscalationStep(level="remedial_meeting", at=SENT - timedelta(days=30), reason="a"),
             EscalationStep(level="enhanced_surveillance", at=SENT - timedelta(days=1),
                            reason="b")]
    escalated = ConcernEscalated(concern_id=FIRST, provider=provider(),
                                 level="enhanced_surveillance", reason="2 actions overdue",
                                 history=steps,
                                 attendees=[Attendee(role="x", name="X", email="x@icb.example")])
    await handle(escalated)
    assert fake.writes == [("level", (FIRST, "enhanced_surveillance"))]
    assert fake.lines(FIRST) == [(steps[-1].at, "Escalated: enhanced surveillance")]
    # Without history: when it was sent; without an envelope either: the clock.
    await handle(escalated.model_copy(update={"history": []}))
    await handle(escalated.model_copy(update={"history": []}), FakeOutbox(caused=False))
    assert [at for at, _ in fake.lines(FIRST)[1:]] == [SENT, CLOCK]


async def test_an_action_due_or_overdue_is_stored_as_the_event_shows_it(
        fake: FakeStore) -> None:
    action = RemedialAction(action_id=uuid.uuid4(), description="Falls risk assessment",
                            owner="Pat Provider", due_on=date(2026, 11, 23))
    await handle(ActionDueSoon(concern_id=FIRST, provider=provider(), action=action,
                               days_left=1))
    overdue = action.model_copy(update={"status": "overdue"})
    await handle(ActionOverdue(concern_id=FIRST, provider=provider(), action=overdue,
                               days_overdue=2), FakeOutbox(caused=False))
    assert fake.writes == [("action", (FIRST, "RJ1", action.model_dump(), SENT)),
                           ("action", (FIRST, "RJ1", overdue.model_dump(),
                                       datetime(2026, 11, 23, tzinfo=UTC)))]
    assert [what for _, what in fake.lines(FIRST)] == ["Action due in 1 day(s)",
                                                        "Action overdue by 2 day(s)"]


async def test_concerns_replies_and_visits_are_stored_as_they_come(fake: FakeStore) -> None:
    raised = ConcernRaised(concern_id=FIRST, fingerprint="RJ1:cluster:falls",
                           provider=provider(), rule="cluster", theme="Falls",
                           severity=Severity.MODERATE, reason="3 alerts", evidence=[],
                           raised_at=SENT)
    updated = ConcernUpdated(**raised.model_dump(), previous_severity=Severity.LOW,
                             evidence_count=3)
    updated_v1 = ConcernUpdatedV1(**raised.model_dump(), previous_severity=Severity.LOW)
    reply = MeetingReplied(meeting_id=booked().meeting_id, attendee="ian@icb.example",
                           partstat="accepted", sequence=0, received_at=SENT)
    visit = VisitScheduled(visit_id=uuid.uuid4(), provider=provider(),
                           visit_kind="insight_visit", due_on=date(2026, 12, 14),
                           reason="persistent concern", concern_id=FIRST)
    for event in (raised, updated, updated_v1, reply, visit):
        await handle(event)
    assert fake.writes == [("concern", raised), ("concern", updated), ("concern", updated_v1),
                           ("reply", reply), ("visit", visit)]
    assert not fake.timelines  # the concern's own store call writes its timeline line
