"""A concern that gathers 500 items of evidence, through the REAL broker and database:
escalation adds each update's items (``concern.updated.v2``: the new ones only) to its own
table without reading or rewriting what the concern holds, and the meeting's agenda, its
announcement and the invitation e-mail list the latest ``evidence_listed`` items and "and K
more (total T)", however many there are.

"Work does not grow" is shown by counts and sizes, never by time: the concern's row keeps its
size, the rows of earlier items are never rewritten (their ctid and xmin stay), the table is
never updated or deleted from, and the tuples escalation reads from it per update stay the
same whether the concern holds 10 items or 500 (PostgreSQL's own counters, of a database of
this module's own).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial

import aio_pika
import asyncpg
import pytest

from services.escalation.app import EscalationRuntime
from services.notification.channels import EmailChannel, Outgoing
from services.notification.messages import event_subject
from shared.events import (
    ConcernUpdated,
    ConcernUpdatedV1,
    Evidence,
    MeetingRescheduled,
    Severity,
)
from shared.settings import Settings
from tests.conftest import ServerUrls
from tests.helpers import eventually
from tests.integration.test_escalation import (
    FakeClock,
    Publisher,
    Tap,
    announce,
    concern,
    handled,
    london,
    meeting_row,
    own_stack,
    pool_of,
    publishing,
    running,
    tapping,
)

pytestmark = pytest.mark.integration
ITEMS = 500


@pytest.fixture(scope="module")
async def evd_settings(settings: Settings, server_urls: ServerUrls) -> AsyncIterator[Settings]:
    async for own in own_stack(settings, server_urls, "evd"):
        yield own


@pytest.fixture(scope="module")
async def db(evd_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    async for pool in pool_of(evd_settings):
        yield pool


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(london(2033, 6, 6, 8, 0))  # a Monday


@pytest.fixture(scope="module")
async def escalation(evd_settings: Settings, clock: FakeClock
                     ) -> AsyncIterator[EscalationRuntime]:
    async for runtime in running(evd_settings, clock):
        yield runtime


@pytest.fixture(scope="module")
async def tap(evd_settings: Settings, amqp: aio_pika.abc.AbstractConnection
              ) -> AsyncIterator[Tap]:
    async for tap in tapping(evd_settings, amqp):
        yield tap


@pytest.fixture(scope="module")
async def publisher(evd_settings: Settings, amqp: aio_pika.abc.AbstractConnection
                    ) -> AsyncIterator[Publisher]:
    async for publisher in publishing(evd_settings, amqp):
        yield publisher


def item(n: int) -> Evidence:
    return Evidence(feedback_id=uuid.UUID(int=n), kind="complaint",
                    occurred_on=london(2033, 1, 1).date() + timedelta(days=n % 150),
                    matched=f"item {n}")


async def counters(db: asyncpg.Pool) -> asyncpg.Record:
    """PostgreSQL's counters of escalation.concern_evidence (flushed by the backends that
    did the work within a few seconds of it)."""
    row = await db.fetchrow(
        "SELECT n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd,"
        " coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS tuples_read"
        " FROM pg_stat_user_tables WHERE schemaname = 'escalation'"
        " AND relname = 'concern_evidence'")
    assert row is not None
    return row


async def counted(db: asyncpg.Pool, inserted: int) -> asyncpg.Record:
    return await eventually(
        lambda: _when_inserted(db, inserted), timeout=30,
        what=f"{inserted} inserts counted in pg_stat_user_tables")


async def _when_inserted(db: asyncpg.Pool, inserted: int) -> asyncpg.Record | None:
    row = await counters(db)
    return row if row["n_tup_ins"] >= inserted else None


async def test_a_concern_gathering_500_items_keeps_escalation_s_work_and_agenda_bounded(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool) -> None:
    listed = escalation.escalation.evidence_listed
    c = concern("RAN", Severity.SERIOUS, raised_at=clock.now).model_copy(
        update={"evidence": [item(1)]})
    await publisher.send(c)
    booked = await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)
    assert sum(i.startswith("Evidence:") for i in booked.data["agenda"]) == 1

    def update(n: int) -> ConcernUpdated:
        return ConcernUpdated(**(c.model_dump() | {"evidence": [item(n)]}),
                              evidence_count=n, previous_severity=Severity.SERIOUS)

    async def holds(n: int) -> bool:
        return await db.fetchval("SELECT evidence_count FROM escalation.concerns"
                                 " WHERE concern_id = $1", c.concern_id) == n

    samples: dict[int, dict[str, int]] = {}
    held = 1
    first_rows: list[asyncpg.Record] = []
    for upto in (10, 100, ITEMS):
        before = await counted(db, held)
        for n in range(held + 1, upto + 1):
            await publisher.send(update(n))
        await eventually(partial(holds, upto), timeout=120, what=f"{upto} items held")
        after = await counted(db, upto)
        row = await meeting_row(db, c.concern_id)
        assert row is not None
        samples[upto] = {
            "row_bytes": await db.fetchval(
                "SELECT pg_column_size(c.*) FROM escalation.concerns c WHERE concern_id = $1",
                c.concern_id),
            "agenda_lines": len(row["agenda"]),
            "tuples_read_per_update": (after["tuples_read"] - before["tuples_read"])
            // (upto - held),
        }
        assert after["n_tup_upd"] == after["n_tup_del"] == 0  # items are never rewritten
        if not first_rows:
            first_rows = await db.fetch(
                "SELECT feedback_id, ctid::text, xmin::text FROM escalation.concern_evidence"
                " WHERE concern_id = $1 ORDER BY pos", c.concern_id)
        held = upto

    # The stored copy: every item once, in a table of its own; the concern's row the same
    # size at 10, 100 and 500 items; the first items' rows untouched since written.
    assert await db.fetchval(
        "SELECT count(DISTINCT feedback_id) FROM escalation.concern_evidence"
        " WHERE concern_id = $1", c.concern_id) == ITEMS
    assert {e["feedback_id"] for e in await db.fetch(
        "SELECT feedback_id FROM escalation.concern_evidence WHERE concern_id = $1",
        c.concern_id)} == {item(n).feedback_id for n in range(1, ITEMS + 1)}
    assert samples[10]["row_bytes"] == samples[100]["row_bytes"] == samples[ITEMS]["row_bytes"]
    assert [tuple(r) for r in await db.fetch(
        "SELECT feedback_id, ctid::text, xmin::text FROM escalation.concern_evidence"
        " WHERE concern_id = $1 AND feedback_id = ANY($2::uuid[]) ORDER BY pos",
        c.concern_id, [r["feedback_id"] for r in first_rows])] == [tuple(r) for r in first_rows]
    # Work per update: the tuples read from the evidence table do not grow with the concern
    # (the latest ``listed`` for the agenda, whether it holds 10 items or 500).
    # (An update reads them twice: for the concern, and for the meeting's agenda.)
    per_update = [s["tuples_read_per_update"] for s in samples.values()]
    assert max(per_update) <= 2 * listed + 2, samples
    assert samples[ITEMS]["tuples_read_per_update"] <= samples[100]["tuples_read_per_update"] \
        + 1, samples

    # The agenda: the latest ``listed`` items and the count of the rest, as many lines at 500
    # items as at 100.
    row = await meeting_row(db, c.concern_id)
    assert row is not None
    evidence_lines = [i for i in row["agenda"] if i.startswith("Evidence:")]
    assert len(evidence_lines) == listed + 1
    assert evidence_lines[-1] == f"Evidence: and {ITEMS - listed} more (total {ITEMS})"
    latest = [r["feedback_id"] for r in await db.fetch(
        "SELECT feedback_id FROM escalation.concern_evidence WHERE concern_id = $1"
        " ORDER BY pos DESC LIMIT $2", c.concern_id, listed)]
    assert all(any(str(f) in line for line in evidence_lines) for f in latest)
    assert samples[100]["agenda_lines"] == samples[ITEMS]["agenda_lines"] == len(row["agenda"])

    # The same update again, and the concern's whole list as a version 1 update (from an
    # outbox of before the upgrade): nothing new, nothing added, nothing rewritten.
    again = await publisher.send(update(ITEMS))
    v1 = await publisher.send(ConcernUpdatedV1(
        **(c.model_dump() | {"evidence": [item(n) for n in range(1, ITEMS + 1)]}),
        previous_severity=Severity.SERIOUS))
    before_announce = len(tap.of("meeting.rescheduled.v1", concern_id=c.concern_id))
    await announce(escalation, clock, db, again, v1)
    assert await holds(ITEMS)
    assert (await counters(db))["n_tup_upd"] == 0
    changes = [r["detail"]["change"] for r in await db.fetch(
        "SELECT detail FROM escalation.audit_log WHERE event_id = ANY($1::uuid[])",
        [again.id, v1.id])]
    assert sorted(changes) == ["no change", "no change"]

    # The announcement and the invitation e-mail notification sends for it: bounded.
    await tap.nth("meeting.rescheduled.v1", before_announce + 1, concern_id=c.concern_id)
    moved = MeetingRescheduled.model_validate(
        tap.of("meeting.rescheduled.v1", concern_id=c.concern_id)[-1].data)
    assert moved.agenda == row["agenda"]
    mail = EmailChannel(Settings()).render(Outgoing(
        notification_id=uuid.uuid4(), kind="event", event_type=moved.event_type, route="r",
        recipient="quality.ran@provider.example", subject=event_subject(moved),
        payload=moved.model_dump(mode="json"), message_id="<evd@carewatch>"))
    text = mail.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert f"and {ITEMS - listed} more (total {ITEMS})" in body
    assert body.count("Evidence: complaint") == listed
    assert len(body.splitlines()) < 80
    assert await handled(db, again)
