"""The workspace's read model against the real PostgreSQL: the rules its store keeps in SQL,
whatever the order events arrive in, which the fake-store unit tests
(tests/unit/test_workspace_handlers.py) cannot reach. A concern moves only forward and a late
update never reopens it; closed stays closed; a meeting keeps its latest sequence and a held
meeting stays held; the latest reply per attendee wins; a completed action stays completed;
a provider's name changes only for newer facts.

A database of its own (the workspace's migrations), no broker: events go straight to the
handlers (``ReadModel``), each in its transaction, as the runtime calls them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import asyncpg
import pytest

from services.workspace import app as workspace_app
from services.workspace import store
from services.workspace.app import ReadModel, handlers
from shared.events import (
    ActionOverdue,
    ConcernClosed,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    MeetingCancelled,
    MeetingReplied,
    MeetingRescheduled,
    RemedialAction,
    Severity,
)
from tests.conftest import ServerUrls
from tests.helpers import scratch_pool
from tests.unit.builders import meeting, provider
from tests.unit.fakes import FakeOutbox

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
READ = ReadModel(lambda: AT)


@pytest.fixture(scope="module")
async def pool(server_urls: ServerUrls) -> AsyncIterator[asyncpg.Pool]:
    async with scratch_pool(server_urls.postgres_admin, "readmodel", [
            (store.SCHEMA, workspace_app.Path(workspace_app.__file__).parent / "migrations",
             True)]) as pool:
        yield pool


async def handle(pool: asyncpg.Pool, *events: Any) -> None:
    """Each event through the handler the service subscribes it to, in its transaction."""
    for event in events:
        [handler] = [h for cls, h in handlers(READ) if type(event) is cls]
        async with pool.acquire() as conn, conn.transaction():
            await handler(conn, event, FakeOutbox(at=AT))  # type: ignore[arg-type]


async def row(pool: asyncpg.Pool, table: str, key: str, value: Any) -> asyncpg.Record:
    async with pool.acquire() as conn:
        found = await conn.fetchrow(f"SELECT * FROM workspace.{table} WHERE {key} = $1", value)
    assert found is not None
    return found


def raised(concern_id: uuid.UUID, severity: Severity, at: datetime,
           ods_code: str = "RJ1", name: str = "Trust A") -> ConcernRaised:
    return ConcernRaised(concern_id=concern_id, fingerprint=f"{ods_code}|cluster|falls",
                         provider=provider(ods_code, name), rule="cluster", theme="Falls",
                         severity=severity, reason=f"{severity} at {at.isoformat()}",
                         evidence=[], raised_at=at)


def updated(event: ConcernRaised, severity: Severity, at: datetime) -> ConcernUpdated:
    return ConcernUpdated(**(raised(event.concern_id, severity, at,
                                    event.provider.ods_code).model_dump()),
                          previous_severity=event.severity, evidence_count=0)


async def test_a_late_older_update_changes_nothing_and_never_reopens_a_concern(
        pool: asyncpg.Pool) -> None:
    first = raised(uuid.uuid4(), Severity.MODERATE, AT)
    later = updated(first, Severity.HIGH, AT + timedelta(days=2))
    older = updated(first, Severity.LOW, AT + timedelta(days=1))
    await handle(pool, later, first, older)  # the newest first
    concern = await row(pool, "concerns", "concern_id", first.concern_id)
    assert (concern["severity"], concern["status"]) == ("high", "open")
    resolved = ConcernResolved(**first.model_dump(include={
        "concern_id", "fingerprint", "provider", "rule", "theme", "severity"}),
        resolution="common cause", resolved_at=AT + timedelta(days=3))
    await handle(pool, resolved, updated(first, Severity.SERIOUS, AT + timedelta(days=4)))
    concern = await row(pool, "concerns", "concern_id", first.concern_id)
    assert concern["status"] == "resolved" and concern["severity"] == "serious"


async def test_closed_stays_closed_with_the_closer_s_reason(pool: asyncpg.Pool) -> None:
    first = raised(uuid.uuid4(), Severity.HIGH, AT)
    closed = ConcernClosed(concern_id=first.concern_id, provider=first.provider,
                           closed_by="user:lead", reason="all actions complete",
                           closed_at=AT + timedelta(days=5))
    resolved = ConcernResolved(**first.model_dump(include={
        "concern_id", "fingerprint", "provider", "rule", "theme", "severity"}),
        resolution="closed by escalation", resolved_at=AT + timedelta(days=6))
    await handle(pool, closed, first, resolved)  # the closure before the concern itself
    concern = await row(pool, "concerns", "concern_id", first.concern_id)
    assert (concern["status"], concern["ended_reason"]) == ("closed", "all actions complete")
    assert concern["rule"] == "cluster"  # the late concern.raised filled its row in


async def test_a_meeting_keeps_its_latest_sequence_and_a_held_one_stays_held(
        pool: asyncpg.Pool) -> None:
    booked = meeting(meeting_id=uuid.uuid4())
    moved = [MeetingRescheduled(**(booked.model_dump() | {
        "sequence": n, "starts_at": booked.starts_at + timedelta(days=n),
        "ends_at": booked.ends_at + timedelta(days=n)}),
        previous_starts_at=booked.starts_at, change=f"move {n}") for n in (1, 2)]
    await handle(pool, booked, moved[1], moved[0])  # sequence 1 arrives last
    stored = await row(pool, "meetings", "meeting_id", booked.meeting_id)
    assert (stored["sequence"], stored["starts_at"]) == (2, moved[1].starts_at)
    async with pool.acquire() as conn:
        await store.held(conn, booked.meeting_id, "actions agreed")
    cancelled = MeetingCancelled(**(booked.model_dump() | {"sequence": 3}), reason="late")
    await handle(pool, cancelled)
    stored = await row(pool, "meetings", "meeting_id", booked.meeting_id)
    assert (stored["status"], stored["sequence"]) == ("held", 3)


async def test_the_latest_reply_of_each_attendee_wins(pool: asyncpg.Pool) -> None:
    meeting_id = uuid.uuid4()

    def reply(partstat: Literal["accepted", "declined", "tentative"], sequence: int,
              minutes: int) -> MeetingReplied:
        return MeetingReplied(meeting_id=meeting_id, attendee="Pat@Provider.example",
                              partstat=partstat, sequence=sequence,
                              received_at=AT + timedelta(minutes=minutes))
    await handle(pool, reply("accepted", 1, 10), reply("declined", 0, 20),
                 reply("tentative", 1, 5))
    stored = await row(pool, "meeting_replies", "meeting_id", meeting_id)
    assert (stored["attendee"], stored["partstat"]) == ("pat@provider.example", "accepted")


async def test_a_completed_action_stays_completed(pool: asyncpg.Pool) -> None:
    concern_id, action = uuid.uuid4(), RemedialAction(
        action_id=uuid.uuid4(), description="Falls risk assessment", owner="Pat",
        due_on=date(2026, 11, 30))
    async with pool.acquire() as conn:  # escalation's answer to the completing command
        await store.action(conn, concern_id, "RJ1",
                           action.model_dump() | {"status": "completed",
                                                  "evidence_of_completion": "audit"}, AT)
    overdue = action.model_copy(update={"status": "overdue"})
    await handle(pool, ActionOverdue(concern_id=concern_id, provider=provider(),
                                     action=overdue, days_overdue=1))
    stored = await row(pool, "actions", "action_id", action.action_id)
    assert (stored["status"], stored["evidence_of_completion"]) == ("completed", "audit")


async def test_a_provider_s_name_changes_only_for_newer_facts(pool: asyncpg.Pool) -> None:
    ods = f"T{uuid.uuid4().hex[:5].upper()}"
    await handle(pool, raised(uuid.uuid4(), Severity.LOW, AT + timedelta(days=1), ods, "New"),
                 raised(uuid.uuid4(), Severity.LOW, AT, ods, "Old"))
    assert (await row(pool, "providers", "ods_code", ods))["name"] == "New"
