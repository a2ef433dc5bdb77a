"""The outbox relay against the real broker and database, in a scratch schema of its own (no
service's relay races the test for the rows)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from shared.db import migrate
from shared.events import FeedbackAccepted, ProviderRef
from shared.outbox import AmqpPublisher, OutboxRelay
from shared.settings import Settings
from tests.helpers import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def schema(db: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[str]:
    name = f"relay_{uuid.uuid4().hex[:8]}"
    async with db.acquire() as conn:
        await migrate(conn, name, tmp_path)  # the shared messaging tables only
    yield name
    await db.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[AmqpPublisher]:
    p = AmqpPublisher(settings.amqp_url, app_id="carewatch-test")
    await p.connect()
    yield p
    await p.close()


async def add_rows(db: asyncpg.Pool, schema: str, exchange: str, routing_key: str,
                   n: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    await db.executemany(
        f'INSERT INTO "{schema}".outbox (event_id, exchange, routing_key, body)'
        " VALUES ($1, $2, $3, $4)", [(i, exchange, routing_key, b"{}") for i in ids])
    return ids


async def test_a_row_the_broker_refuses_does_not_hold_up_the_outbox(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher) -> None:
    """An event bound for a deleted exchange waits with its error; the rest flow."""
    events = f"{settings.namespace}.events"
    [bad] = await add_rows(db, schema, f"{settings.namespace}.no-such-exchange", "x.v1", 1)
    await add_rows(db, schema, events, "nobody.listens.v1", 1)
    relay = OutboxRelay(db, schema, publisher)
    assert await relay.publish_pending() == 2
    rows = await db.fetch(f'SELECT event_id, attempts, last_error FROM "{schema}".outbox')
    assert [r["event_id"] for r in rows] == [bad], "the good row was published"
    assert rows[0]["attempts"] == 1 and "no-such-exchange" in rows[0]["last_error"]
    assert await relay.publish_pending() == 0, "the bad row waits for its retry time"
    # The channel the refusal closed has reopened: the next row goes through.
    await add_rows(db, schema, events, "nobody.listens.v1", 1)
    assert await relay.publish_pending() == 1
    assert await db.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == 1


async def test_the_relay_loop_publishes_every_row_once_in_order(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher,
        amqp: aio_pika.abc.AbstractRobustConnection) -> None:
    """With batches pipelined, every event arrives exactly once, in outbox order."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True)
    routing_key = f"relaytest.{schema}.v1"
    await queue.bind(f"{settings.namespace}.events", routing_key=routing_key)
    ids = await add_rows(db, schema, f"{settings.namespace}.events", routing_key, 1234)
    relay = OutboxRelay(db, schema, publisher, batch_size=100, poll_interval=0.2)
    relay.start()
    received: list[str] = []

    async def all_received() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            received.append(message.message_id or "")
        return len(received) >= len(ids)

    try:
        await eventually(all_received, timeout=60, what="every outbox row published")
    finally:
        await relay.stop()
    await asyncio.sleep(0.3)
    await all_received()  # and nothing more: no row went twice
    assert received == [str(i) for i in ids]
    assert await db.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == 0
    assert relay.published == len(ids)
    await channel.close()


async def test_consumers_wait_while_the_outbox_is_over_its_limit(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher) -> None:
    relay = OutboxRelay(db, schema, publisher, batch_size=10, backlog_limit=15)
    await add_rows(db, schema, f"{settings.namespace}.events", "nobody.listens.v1", 40)
    await relay.wait_for_room()  # nothing measured yet: room
    assert await relay.publish_pending() == 10  # 30 left: over the limit
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(relay.wait_for_room(), 0.2)
    assert await relay.publish_pending() == 10  # 20 left: still over
    waiting = asyncio.create_task(relay.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert await relay.publish_pending() == 10  # 10 left: under the limit again
    await asyncio.wait_for(waiting, 1)
    # Shutdown lets every waiting consumer on.
    await add_rows(db, schema, f"{settings.namespace}.events", "nobody.listens.v1", 40)
    assert await relay.publish_pending() == 10
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(relay.wait_for_room(), 0.1)
    relay.release_waiters()
    await asyncio.wait_for(relay.wait_for_room(), 1)


async def test_urgent_events_are_published_first(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher,
        amqp: aio_pika.abc.AbstractRobustConnection) -> None:
    """A serious complaint accepted behind a thousand FFT responses leaves in the next batch."""
    from shared.outbox import Outbox

    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(f"{settings.namespace}.events", routing_key="feedback.accepted.v1.*")
    routine = [event(kind="fft_response") for _ in range(1000)]
    urgent = event(kind="complaint")
    async with db.acquire() as conn, conn.transaction():
        outbox = Outbox(conn, schema, f"{settings.namespace}.events", "carewatch/test")
        await outbox.add_many([(e, None) for e in routine])
        await outbox.add(urgent)
    relay = OutboxRelay(db, schema, publisher, batch_size=100)
    assert await relay.publish_pending() == 100
    first = await queue.get(no_ack=True, timeout=5)
    assert first.routing_key == "feedback.accepted.v1.complaint"
    assert await db.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == 901
    await channel.close()


def event(kind: str) -> FeedbackAccepted:
    return FeedbackAccepted(
        feedback_id=uuid.uuid4(), submission_id=uuid.uuid4(), kind=kind,
        provider=ProviderRef(ods_code="RJ1", name="Guy's and St Thomas'", provider_type="acute",
                             quality_contact_email="quality.rj1@provider.example"),
        provider_record_id=uuid.uuid4().hex, occurred_on=date(2026, 11, 30), content={})


async def test_urgent_events_go_while_every_slot_waits_for_confirms(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher) -> None:
    """The broker is slow to confirm a routine batch; an urgent event does not wait for it."""
    from shared.outbox import Outbox

    release = asyncio.Event()
    published: dict[str, float] = {}

    async def slow_for_routine(exchange: str, routing_key: str, body: bytes, event_id: str,
                               **kwargs: Any) -> object:
        if not routing_key.endswith(".complaint"):
            await release.wait()  # confirms held back
        result = await publisher(exchange, routing_key, body, event_id, **kwargs)
        published[routing_key] = asyncio.get_running_loop().time()
        return result

    relay = OutboxRelay(db, schema, slow_for_routine, batch_size=10, in_flight=1,
                        poll_interval=0.1)
    events = f"{settings.namespace}.events"
    async with db.acquire() as conn, conn.transaction():
        await Outbox(conn, schema, events, "carewatch/test").add_many(
            [(event(kind="fft_response"), None) for _ in range(30)])
    relay.start()
    try:
        await asyncio.sleep(0.3)  # the one slot now waits for its routine batch
        async with db.acquire() as conn, conn.transaction():
            await Outbox(conn, schema, events, "carewatch/test").add(event(kind="complaint"))
        await eventually(lambda: _published(published, "feedback.accepted.v1.complaint"),
                         timeout=5, what="the urgent event published")
        # Its row goes once its confirm is in (a moment after the publish returns); the 30
        # routine rows stay while their confirms are held back.
        await eventually(lambda: _outbox_holds(db, schema, 30), timeout=5,
                         what="the urgent row deleted, the routine ones kept")
        release.set()
        await eventually(lambda: _outbox_empty(db, schema), timeout=15, what="all published")
    finally:
        release.set()
        await relay.stop()


async def _published(published: dict[str, float], key: str) -> bool:
    return key in published


async def _outbox_empty(db: asyncpg.Pool, schema: str) -> bool:
    return await _outbox_holds(db, schema, 0)


async def _outbox_holds(db: asyncpg.Pool, schema: str, rows: int) -> bool:
    return bool(await db.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == rows)


async def test_urgent_events_go_on_a_channel_of_their_own(
        settings: Settings, publisher: AmqpPublisher) -> None:
    """The broker handles a channel's frames in order: routine publishes in flight (here, one
    the broker refuses, which closes its channel) do not hold up an urgent one."""
    events = f"{settings.namespace}.events"
    refused = asyncio.ensure_future(publisher(
        f"{settings.namespace}.no-such-exchange", "feedback.accepted.v1.fft_response", b"{}",
        str(uuid.uuid4())))
    # Published while the routine channel is being closed by the broker's refusal.
    await asyncio.wait_for(publisher(events, "feedback.accepted.v1.complaint", b"{}",
                                     str(uuid.uuid4()), urgent=True), 5)
    with pytest.raises(aio_pika.exceptions.AMQPError):
        await refused


async def test_urgent_rows_take_the_urgent_channel_whichever_slot_claims_them(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher) -> None:
    from shared.outbox import Outbox

    channels: dict[str, bool] = {}

    async def recording(exchange: str, routing_key: str, body: bytes, event_id: str,
                        **kwargs: Any) -> object:
        channels[routing_key] = kwargs.get("urgent", False)
        return await publisher(exchange, routing_key, body, event_id, **kwargs)

    relay = OutboxRelay(db, schema, recording, batch_size=10)
    events = f"{settings.namespace}.events"
    async with db.acquire() as conn, conn.transaction():
        await Outbox(conn, schema, events, "carewatch/test").add_many(
            [(event(kind="fft_response"), None), (event(kind="complaint"), None)])
    assert await relay.publish_pending() == 2, "one routine claim took both rows"
    assert channels == {"feedback.accepted.v1.fft_response": False,
                        "feedback.accepted.v1.complaint": True}


async def test_a_batch_the_broker_refuses_whole_is_counted_and_parked(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher) -> None:
    """Every row of the batch refused (an exchange nobody may write to): the attempts are
    still counted, so the rows go on to their backoff and, after PARK_AFTER refusals, are
    parked; the relay moves on to the rows behind them."""
    from shared.outbox import PARK_AFTER

    gone = f"{settings.namespace}.no-such-exchange"
    bad = await add_rows(db, schema, gone, "x.v1", 3)
    relay = OutboxRelay(db, schema, publisher)
    for attempt in range(1, PARK_AFTER + 1):
        assert await relay.publish_pending() == 3
        rows = await db.fetch(f'SELECT attempts, next_attempt_at = \'infinity\' AS parked'
                              f' FROM "{schema}".outbox')
        assert [r["attempts"] for r in rows] == [attempt] * 3
        assert all(r["parked"] for r in rows) == (attempt == PARK_AFTER)
        if attempt < PARK_AFTER:  # due again at once, for the test
            await db.execute(f'UPDATE "{schema}".outbox SET next_attempt_at = now()')
    assert not relay.stalled()
    assert await relay.publish_pending() == 0, "parked rows are not retried"
    await add_rows(db, schema, f"{settings.namespace}.events", "nobody.listens.v1", 1)
    assert await relay.publish_pending() == 1
    assert sorted(r["event_id"] for r in await db.fetch(
        f'SELECT event_id FROM "{schema}".outbox')) == sorted(bad)


async def test_a_relay_that_cannot_publish_is_reported_stalled(
        db: asyncpg.Pool, schema: str) -> None:
    """The broker unreachable: nothing is counted against the rows, and readiness says the
    relay makes no progress."""
    import time

    async def unreachable(*_: Any, **__: Any) -> None:
        raise ConnectionError("broker down")

    await add_rows(db, schema, "x", "y.v1", 2)
    relay = OutboxRelay(db, schema, unreachable)
    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    assert [r["attempts"] for r in await db.fetch(f'SELECT attempts FROM "{schema}".outbox')] \
        == [0, 0]
    from shared.outbox import STALL_AFTER
    assert relay.stalled(time.monotonic() + STALL_AFTER + 1)


async def test_a_batch_goes_in_one_write_per_channel_and_each_row_is_settled_alone(
        settings: Settings, publisher: AmqpPublisher, monkeypatch: pytest.MonkeyPatch) -> None:
    """``publish_batch`` writes a channel's share of the batch at once, urgent rows on the
    urgent channel; each row still gets its own confirmation: a row the broker returns
    (mandatory, no queue) fails alone, its neighbours are acked."""
    # aiormq.Channel: its write queue and message ids are not in the abstract class.
    routine: Any = await publisher._channels[False].get_underlay_channel()
    urgent: Any = await publisher._channels[True].get_underlay_channel()
    writes: list[int] = []
    put_nowait = routine.write_queue.put_nowait

    def counting(frame: Any) -> None:
        channel = int.from_bytes(frame.payload[1:3], "big")  # the first frame's channel
        if channel:  # not a heartbeat
            writes.append(channel)
        put_nowait(frame)

    monkeypatch.setattr(routine.write_queue, "put_nowait", counting)
    events = f"{settings.namespace}.events"
    queue = f"{settings.namespace}.no-such-queue-{uuid.uuid4().hex[:8]}"
    batch = [(events, "nobody.listens.v1", b"{}", str(uuid.uuid4()), True, None, False)
             for _ in range(5)]
    batch.insert(2, ("", queue, b"{}", str(uuid.uuid4()), True, None, False))
    batch.insert(0, (events, "feedback.accepted.v1.complaint", b"{}", str(uuid.uuid4()),
                     True, None, True))
    results = await asyncio.wait_for(asyncio.gather(
        *await publisher.publish_batch(batch), return_exceptions=True), 10)
    assert sorted(writes) == sorted([routine.number, urgent.number]), \
        "one write for the routine share, one for the urgent row"
    returned = [n for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert returned == [3], results
    assert isinstance(results[3], aio_pika.exceptions.PublishError)
    assert not routine.message_id_delivery_tag and not urgent.message_id_delivery_tag


class _NeverConfirmed:
    """A publisher whose confirms never come; ``called`` is set once a claim has sent a row
    (its rows are locked by then: the claim publishes inside its transaction)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def __call__(self, *_: Any, **__: Any) -> None:
        self.called.set()
        await asyncio.Event().wait()


async def _locked_rows(db: asyncpg.Pool, schema: str) -> int:
    """Rows some transaction holds (FOR UPDATE): a claim that skips them finds none."""
    async with db.acquire() as conn, conn.transaction():
        free = await conn.fetchval(
            f'SELECT count(*) FROM (SELECT 1 FROM "{schema}".outbox FOR UPDATE SKIP LOCKED) f')
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox')) - int(free)


async def test_rows_of_a_relay_killed_mid_batch_go_with_another_relay(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher,
        amqp: aio_pika.abc.AbstractRobustConnection) -> None:
    """A relay dies between its claim and its delete (its connections cut, as by kill -9):
    while it lives its rows are nobody else's; once it is gone another relay publishes every
    one of them."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True)
    routing_key = f"relaytest.{schema}.v1"
    await queue.bind(f"{settings.namespace}.events", routing_key=routing_key)
    ids = await add_rows(db, schema, f"{settings.namespace}.events", routing_key, 25)
    own_pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    never = _NeverConfirmed()
    doomed = OutboxRelay(own_pool, schema, never, batch_size=100)
    claiming = asyncio.create_task(doomed.publish_pending())
    survivor = OutboxRelay(db, schema, publisher, batch_size=100)
    try:
        # Waited on the claim itself: probing the locks meanwhile (FOR UPDATE) could make the
        # claim skip the rows the probe held for that instant.
        await asyncio.wait_for(never.called.wait(), 60)
        assert await _locked_rows(db, schema) == len(ids), "the whole batch claimed"
        assert await survivor.publish_pending() == 0, "claimed rows are not published twice"
    finally:
        claiming.cancel()
        await asyncio.gather(claiming, return_exceptions=True)
        own_pool.terminate()  # no goodbye
    received: list[str] = []

    async def all_published() -> bool:
        await survivor.publish_pending()
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            received.append(message.message_id or "")
        return len(received) >= len(ids)

    await eventually(all_published, timeout=30, what="the dead relay's rows published")
    assert sorted(received) == sorted(str(i) for i in ids)
    assert await db.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == 0
    await channel.close()


async def test_a_busy_relay_keeps_its_connections_and_an_idle_one_hands_them_back(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher) -> None:
    """Batch after batch, the loop claims on the connections of the batches it settled (no
    pool reset between); once nothing is due, every connection but its listener's goes
    back to the pool, and at stop the pool closes at once."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        await add_rows(pool, schema, f"{settings.namespace}.events", "nobody.listens.v1", 300)
        relay = OutboxRelay(pool, schema, publisher, batch_size=10, poll_interval=0.1)
        resets = 0
        reset = pool._reset  # type: ignore[attr-defined]

        async def counting(conn: asyncpg.Connection) -> None:
            nonlocal resets
            resets += 1
            await conn.reset()

        pool._reset = counting  # type: ignore[attr-defined]
        relay.start()
        await eventually(lambda: _outbox_empty(db, schema), timeout=30, what="all published")
        assert relay.published == 300
        assert resets < 15, f"{resets} pool resets for 30 batches"

        async def idle() -> bool:
            return pool.get_idle_size() == pool.get_size() - 1  # the listener's

        await eventually(idle, timeout=10, what="the relay's connections handed back")
        await relay.stop()
        pool._reset = reset  # type: ignore[attr-defined]
        await asyncio.wait_for(pool.close(), 5)
    finally:
        pool.terminate()


async def test_the_relay_vacuums_its_outbox_as_it_deletes(
        settings: Settings, db: asyncpg.Pool, schema: str, publisher: AmqpPublisher) -> None:
    """Every relayed event leaves a dead row; the relay vacuums them away as it goes, so its
    claims do not walk every event ever relayed (autovacuum may be slow, or off)."""
    relay = OutboxRelay(db, schema, publisher, batch_size=100, vacuum_after=300)
    stats = ("SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = $1"
             " AND relname = 'outbox'")


    async def vacuum_done() -> bool:
        return not relay.vacuuming

    for _ in range(10):
        await add_rows(db, schema, f"{settings.namespace}.events", "nobody.listens.v1", 100)
        assert await relay.publish_pending() == 100
        await eventually(vacuum_done, timeout=30, what="the vacuum under way finished")
    assert relay.vacuums == 3  # after 300, 600 and 900 rows
    # PostgreSQL's own count (the dead rows' count is not checked: the deletes reach the
    # statistics up to a second late).
    assert await db.fetchval(stats, schema) == 3
    await relay.stop()
