"""Transactional outbox: write events with the state change, publish them afterwards.

``Outbox.add`` runs inside the caller's transaction; the ``OutboxRelay`` of each process
publishes committed rows with publisher confirms and deletes them. Several replicas relay
safely side by side (``FOR UPDATE SKIP LOCKED``). A crash between publish and delete means
the event is published again: consumers are idempotent on the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import asyncpg
from aiormq.abc import ChannelFrame
from asyncpg.transaction import Transaction
from pamqp import commands as spec
from pamqp.header import ContentHeader

from shared.envelope import CONTENT_TYPE, Envelope
from shared.events import Event
from shared.retry import Backoff
from shared.wakeup import drain_on_notify

if TYPE_CHECKING:  # prometheus_client stays out of every `carewatch` command that writes an outbox row
    from shared.metrics import Metrics

log = logging.getLogger(__name__)


# While every relay slot waits for confirms, how often to look for urgent events (seconds).
URGENT_POLL = 0.02
# A row the broker has refused this many times is parked: it is no longer retried until an
# operator looks at it (`carewatch outbox status`, `carewatch outbox retry`).
PARK_AFTER = 8
# A row the broker refused: 1 s, 2 s, 4 s ... 256 s before its next attempt.
REFUSED_RETRY = Backoff(first=1.0, cap=256.0)
# A channel closed by a neighbour's refusal: 0.25 s, 0.5 s, 1 s to reopen.
REOPEN_RETRY = Backoff(first=0.25, cap=1.0)
# How long a batch may spend publishing its failed rows one by one (seconds).
ALONE_BUDGET = 5.0
# Readiness fails when due rows have waited this long without the relay publishing, parking
# or deferring any of them (seconds).
STALL_AFTER = 60.0
# The relay vacuums its outbox after deleting this many rows (see OutboxRelay._vacuum).
VACUUM_AFTER = 5000


def refused_by_broker(error: BaseException) -> bool:
    """The broker refused this publish (no exchange, no permission, returned), as opposed to
    a broker that could not be reached: only a refusal counts towards parking a row."""
    return isinstance(error, (aiormq.exceptions.ChannelClosed, aiormq.exceptions.PublishError,
                              aio_pika.exceptions.DeliveryError))


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes a schema's relay at commit."""
    return f"carewatch_outbox_{schema}"


class Outbox:
    """The events one transaction will publish."""

    def __init__(self, conn: asyncpg.Connection, schema: str, exchange: str, source: str,
                 submission_id: uuid.UUID | None = None, cause: Envelope | None = None) -> None:
        self._conn = conn
        self._schema = schema
        self._exchange = exchange
        self._source = source
        self.submission_id = submission_id
        # The event being handled, if any: what the new events are caused by.
        self.cause = cause
        self.added: list[Envelope] = []

    async def add(self, event: Event, *, submission_id: uuid.UUID | None = None,
                  reply_to: str | None = None, correlation_id: str | None = None) -> Envelope:
        """Publish ``event`` on the events exchange once the transaction commits.

        With ``reply_to``, send it instead to that queue only, through the default exchange
        and without the mandatory flag: a publisher's reply queue may be gone by then, and a
        returned reply must not hold up the relay."""
        row = self.row(event, submission_id=submission_id, reply_to=reply_to,
                       correlation_id=correlation_id)
        # The row and, for the transaction's first event, the NOTIFY in one round trip.
        await self._conn.execute(
            f'WITH ins AS (INSERT INTO "{self._schema}".outbox (event_id, exchange, routing_key,'
            " body, mandatory, correlation_id, priority)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7))"
            " SELECT pg_notify($8, '') WHERE $9",
            *row[1:], notify_channel(self._schema), not self.added)
        self.added.append(row.envelope)
        return row.envelope

    def row(self, event: Event, *, submission_id: uuid.UUID | None = None,
            reply_to: str | None = None, correlation_id: str | None = None) -> OutboxRow:
        """The outbox row that ``add`` would write, for a caller that writes its rows within
        a statement of its own (then ``written``)."""
        envelope = event.envelope(self._source, submission_id or self.submission_id)
        exchange, routing_key = (self._exchange, event.routing_key()) if reply_to is None \
            else ("", reply_to)
        return OutboxRow(envelope, envelope.id, exchange, routing_key, envelope.to_bytes(),
                         reply_to is None, correlation_id, priority(event))

    def written(self, envelopes: Sequence[Envelope]) -> None:
        """Rows from ``row`` that the caller's statement wrote, with ``pg_notify`` of
        ``notify_channel`` when it wrote any."""
        self.added.extend(envelopes)

    async def add_many(self, events: Sequence[tuple[Event, uuid.UUID | None]]) -> list[Envelope]:
        """Publish several events (each with its submission id) in one statement (with the
        NOTIFY, for the transaction's first events)."""
        if not events:
            return []
        envelopes = [event.envelope(self._source, sid or self.submission_id)
                     for event, sid in events]
        await self._conn.execute(
            f'WITH ins AS (INSERT INTO "{self._schema}".outbox (event_id, exchange,'
            " routing_key, body, priority) SELECT e, $1, r, b, p FROM unnest($2::uuid[],"
            " $3::text[], $4::bytea[], $5::smallint[]) AS t(e, r, b, p))"
            " SELECT pg_notify($6, '') WHERE $7",
            self._exchange, [e.id for e in envelopes],
            [event.routing_key() for event, _ in events], [e.to_bytes() for e in envelopes],
            [priority(event) for event, _ in events], notify_channel(self._schema),
            not self.added)
        self.added.extend(envelopes)
        return envelopes


class OutboxRow(NamedTuple):
    envelope: Envelope
    event_id: uuid.UUID
    exchange: str
    routing_key: str
    body: bytes
    mandatory: bool
    correlation_id: str | None
    priority: int


def priority(event: Event) -> int:
    """The relay publishes higher priorities first (urgent lane: 1; the rest: 0)."""
    return 1 if event.urgent else 0


class Publish(Protocol):
    def __call__(self, exchange: str, routing_key: str, body: bytes, event_id: str, *,
                 mandatory: bool = True, correlation_id: str | None = None,
                 urgent: bool = False) -> Awaitable[object]: ...


def _failed(error: BaseException) -> asyncio.Future[object]:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


# One event to publish: exchange, routing key, body, event id, mandatory, correlation id,
# urgent.
Outgoing = tuple[str, str, bytes, str, bool, "str | None", bool]


@dataclass
class _Claim:
    """One batch of outbox rows, locked in an open transaction while its publishes are out."""

    conn: asyncpg.Connection
    transaction: Transaction
    rows: list[asyncpg.Record]
    sent: Sequence[Awaitable[object]] = ()
    # About how many due rows wait behind the batch, measured by its claim.
    backlog: int = 0


class OutboxRelay:
    """Publishes a schema's committed outbox rows, woken by NOTIFY, polling as a backstop.

    The relay loop keeps up to ``in_flight`` batches out at once: while one batch waits for
    the broker's confirms, the next is claimed and sent. Each batch's rows stay locked in
    their own transaction (``FOR UPDATE SKIP LOCKED``) until its confirms are in and the rows
    are deleted, so another batch, or another replica, never takes them twice; a crash
    before the delete means they are published again (a relay killed mid-batch: its
    connection drops, its transaction rolls back, and the rows are due again at once).

    A batch costs four statements: BEGIN, the claim (which also measures the backlog),
    the DELETE and COMMIT. While the loop is busy, a settled batch's connection is kept for
    the next claim rather than handed back to the pool, which would reset it (a fifth round
    trip); once nothing is due, or at stop, they go back."""

    def __init__(self, pool: asyncpg.Pool, schema: str, publish: Publish, *,
                 batch_size: int = 500, poll_interval: float = 1.0,
                 backlog_limit: int = 5000, in_flight: int = 2,
                 vacuum_after: int = VACUUM_AFTER) -> None:
        self._pool = pool
        self._schema = schema
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._backlog_limit = backlog_limit
        # Set while the outbox has room: consumers wait on it before taking on more work.
        self._room = asyncio.Event()
        self._room.set()
        self._slots = asyncio.Semaphore(in_flight)
        self._in_flight = in_flight
        # Connections of settled batches kept for the next claims while the loop is busy:
        # handing one back to the pool resets it, a round trip per batch (see _finish).
        self._spare: list[asyncpg.Connection] = []
        self._urgent_busy = False
        self._settling: set[asyncio.Task[int]] = set()
        self._settle_error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._vacuum_after = vacuum_after
        self._deleted = 0  # rows deleted since the last vacuum
        self._vacuuming: asyncio.Task[None] | None = None
        self.vacuums = 0
        self.published = 0
        # When the relay last moved the outbox on (published, parked or deferred a row, or
        # found nothing due): readiness reports a relay that no longer does.
        self.last_progress = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def wait_for_room(self) -> None:
        """Return once the outbox holds fewer than ``backlog_limit`` publishable events.

        Backpressure: a consumer that stores events faster than the relay publishes them
        would only grow the outbox (every event then waits longer, and the relay's scans
        slow down); waiting leaves the messages in the broker's durable queue instead."""
        if not self._room.is_set():  # the usual case costs no coroutine
            await self._room.wait()

    def release_waiters(self) -> None:
        """Let every waiting consumer on (at shutdown: what they store is published at the
        next start)."""
        self._room.set()

    @property
    def vacuuming(self) -> bool:
        """A vacuum of the outbox is under way (``_vacuum``)."""
        return self._vacuuming is not None

    def stalled(self, now: float | None = None) -> bool:
        """True when the relay has not moved the outbox on for ``STALL_AFTER`` seconds (or
        its loop has died)."""
        if self._task is not None and self._task.done():
            return True
        return (time.monotonic() if now is None else now) - self.last_progress > STALL_AFTER

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop; batches already sent get ``timeout`` seconds for their confirms
        (their rows are then deleted), after which they are cancelled: their transactions
        roll back and their connections (and row locks) are released."""
        self.release_waiters()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._vacuuming:
            self._vacuuming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._vacuuming
            self._vacuuming = None
        settling = list(self._settling)
        if settling:
            _, pending = await asyncio.wait(settling, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._release_spares()

    async def publish_pending(self) -> int:
        """Publish one batch of committed events and wait for the broker's confirms; returns
        how many rows were handled (shutdown and tests; the loop pipelines batches).

        Rows the broker refuses stay in the outbox with the error and are retried with
        backoff, so one bad row never holds up the others."""
        claim = await self._claim()
        return 0 if claim is None else await self._settle(claim)

    async def _send_next(self) -> int:
        """The loop's step: claim and send a batch, and settle it in the background. While
        every slot waits for its confirms, urgent events still go, in a slot of their own."""
        if self._settle_error is not None:
            error, self._settle_error = self._settle_error, None
            raise error  # the loop backs off: the broker or the database is likely down
        while self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), URGENT_POLL)
                break
            except TimeoutError:
                if await self._send_urgent():
                    # Come back at once (as after a full batch): the routine rows still wait.
                    return self._batch_size
        else:
            await self._slots.acquire()
        try:
            claim = await self._claim()
        except BaseException:
            self._slots.release()
            raise
        if claim is None:
            self._slots.release()
            self.last_progress = time.monotonic()
            return 0
        self._settle_later(claim, self._slots.release, measure_backlog=True)
        return len(claim.rows)

    async def _send_urgent(self) -> int:
        """Claim and send the urgent events that wait, if the urgent slot is free."""
        if self._urgent_busy:
            return 0
        self._urgent_busy = True
        try:
            claim = await self._claim(urgent_only=True)
        except BaseException:
            self._urgent_busy = False
            raise
        if claim is None:
            self._urgent_busy = False
            return 0
        self._settle_later(claim, self._urgent_done, measure_backlog=False)
        return len(claim.rows)

    def _urgent_done(self) -> None:
        self._urgent_busy = False

    def _settle_later(self, claim: _Claim, release: Callable[[], None], *,
                      measure_backlog: bool) -> None:
        task = asyncio.create_task(self._settle(claim, measure_backlog=measure_backlog),
                                   name=f"outbox-settle-{self._schema}")
        self._settling.add(task)

        def settled(task: asyncio.Task[int]) -> None:
            self._settling.discard(task)
            release()
            if not task.cancelled() and task.exception() is not None:
                self._settle_error = task.exception()

        task.add_done_callback(settled)

    async def _claim(self, *, urgent_only: bool = False) -> _Claim | None:
        """Lock the next batch of due rows and send each to the broker (confirms pending)."""
        conn = self._spare.pop() if self._spare else await self._pool.acquire()
        transaction = conn.transaction()
        # A routine claim also measures the due rows behind it (backpressure), in the same
        # statement: the span of their sequence numbers, two index look-ups however deep the
        # outbox (rows published ahead of their turn, urgent ones, leave gaps: an
        # overestimate by that few). It counts the batch's own rows.
        span = "" if urgent_only else (
            f', (SELECT max(seq) - min(seq) + 1 FROM "{self._schema}".outbox'
            " WHERE next_attempt_at <= now()) AS span")
        try:
            await transaction.start()
            rows = await conn.fetch(
                f'SELECT seq, event_id, exchange, routing_key, body, mandatory, correlation_id,'
                f' attempts, priority{span} FROM "{self._schema}".outbox'
                f" WHERE next_attempt_at <= now() {'AND priority > 0' if urgent_only else ''}"
                " ORDER BY priority DESC, seq LIMIT $1 FOR UPDATE SKIP LOCKED", self._batch_size)
        except BaseException:
            await self._finish(conn, transaction, commit=False)
            await self._release_spares()  # the database may have restarted under them all
            raise
        if not rows:
            await self._finish(conn, transaction, commit=False)
            await self._release_spares()  # nothing due: the relay is idle
            return None
        backlog = max(0, int(rows[0]["span"] or 0) - len(rows)) if span else 0
        # Many confirms in flight at once: one awaited confirm at a time would cap the relay
        # well below the system's throughput (BENCHMARKS.md). The publishes go in row
        # order, so the broker receives the events in that order (urgent-lane events first;
        # only feedback.accepted has them, and its order across pieces of feedback does not
        # matter). Urgent rows go on the urgent channel in any slot (a routine slot takes
        # them first when it is free).
        batch = getattr(self._publish, "publish_batch", None)
        sent: Sequence[Awaitable[object]]
        if batch is not None:
            # The whole batch's frames in one socket write per channel, confirms in flight.
            try:
                sent = await batch([(r["exchange"], r["routing_key"], r["body"],
                                     str(r["event_id"]), r["mandatory"], r["correlation_id"],
                                     r["priority"] > 0) for r in rows])
            except asyncio.CancelledError:
                await self._finish(conn, transaction, commit=False)
                raise
            except Exception as exc:  # settled as each row's failure (retried one by one)
                sent = [_failed(exc) for _ in rows]
        else:
            sent = [asyncio.ensure_future(self._publish(
                        r["exchange"], r["routing_key"], r["body"], str(r["event_id"]),
                        mandatory=r["mandatory"], correlation_id=r["correlation_id"],
                        urgent=r["priority"] > 0))
                    for r in rows]
        return _Claim(conn, transaction, rows, sent, backlog)

    async def _settle(self, claim: _Claim, *, measure_backlog: bool = True) -> int:
        """Wait for the batch's confirms, delete what the broker took, park what it refused."""
        conn, rows = claim.conn, claim.rows
        committed = False
        try:
            results = await asyncio.gather(*claim.sent, return_exceptions=True)
            done = [r["seq"] for r, res in zip(rows, results, strict=True)
                    if not isinstance(res, BaseException)]
            failed: list[tuple[asyncpg.Record, BaseException]] = []
            # A refused publish closes the channel under its neighbours: try each failed row
            # again on its own, to tell the bad row from the collateral damage. For a while
            # only: the batch's rows stay locked meanwhile, so the rest of a batch of many
            # refusals is left for the next batch (neither counted nor deferred).
            deadline = time.monotonic() + ALONE_BUDGET
            for row, res in zip(rows, results, strict=True):
                if not isinstance(res, BaseException):
                    continue
                if time.monotonic() > deadline:
                    continue
                try:
                    await self._publish_alone(row)
                    done.append(row["seq"])
                except Exception as exc:
                    failed.append((row, exc))
            unreachable = [e for _, e in failed if not refused_by_broker(e)]
            if failed and not done and unreachable:
                # Nothing got through, and not because the broker refused: it is likely down.
                # The attempts are not counted (the rows did nothing wrong); the caller backs
                # off. A batch the broker refused row by row is counted below, so a row it
                # will never take is parked even when the whole batch fails.
                raise unreachable[0]
            await conn.execute(
                f'DELETE FROM "{self._schema}".outbox WHERE seq = ANY($1::bigint[])', done)
            for row, error in failed:
                attempts = row["attempts"] + 1
                parked = attempts >= PARK_AFTER
                delay = REFUSED_RETRY.seconds(attempts)
                await conn.execute(
                    f'UPDATE "{self._schema}".outbox SET attempts = attempts + 1,'
                    " last_error = $2, next_attempt_at = CASE WHEN $4 THEN 'infinity'"
                    " ELSE now() + make_interval(secs => $3) END WHERE seq = $1",
                    row["seq"], repr(error)[:2000], delay, parked)
                if parked:
                    log.error("outbox %s: event %s refused by the broker %d times, parked"
                              " (carewatch outbox status / retry): %r", self._schema,
                              row["event_id"], attempts, error)
                else:
                    log.error("outbox %s: event %s refused by the broker (attempt %d, retry"
                              " in %.0fs): %r", self._schema, row["event_id"], attempts,
                              delay, error)
            full = measure_backlog and len(rows) == self._batch_size
            backlog = claim.backlog if full else 0
            await self._finish(conn, claim.transaction, commit=True, keep=True)
            committed = True
        finally:
            if not committed:
                await self._finish(conn, claim.transaction, commit=False)
        self.published += len(done)
        self.last_progress = time.monotonic()
        self._deleted += len(done)
        if self._deleted >= self._vacuum_after and self._vacuuming is None:
            self._deleted = 0
            self._vacuuming = asyncio.create_task(self._vacuum(),
                                                  name=f"outbox-vacuum-{self._schema}")
        if not measure_backlog:
            return len(rows)  # an urgent batch says nothing of the outbox's depth
        if backlog >= self._backlog_limit:
            if self._room.is_set():
                log.info("outbox %s holds %d+ events: consumers pause until it drains",
                         self._schema, backlog)
            self._room.clear()
        else:
            self._room.set()
        return len(rows)

    async def _finish(self, conn: asyncpg.Connection, transaction: Transaction, *,
                      commit: bool, keep: bool = False) -> None:
        """End the batch's transaction. With ``keep``, once committed, the connection is
        kept for the loop's next claim (up to one per slot and the urgent one) rather than
        handed back to the pool, which resets it: a round trip (``_release_spares`` hands
        them back once the relay is idle or stops)."""
        kept = False
        try:
            if commit:
                await transaction.commit()
                kept = keep and self._task is not None and not self._task.done() \
                    and len(self._spare) <= self._in_flight
            else:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
        finally:
            if kept:
                self._spare.append(conn)
            else:
                await self._pool.release(conn)

    async def _release_spares(self) -> None:
        spare, self._spare = self._spare, []
        for conn in spare:
            await self._pool.release(conn)

    async def _publish_alone(self, row: asyncpg.Record, tries: int = 4) -> None:
        """Publish one row on its own: on a channel of its own where the publisher has them
        (a refusal then closes that channel only, and says which row was refused), else
        giving a channel closed by a neighbour's refusal time to reopen."""
        publish = getattr(self._publish, "publish_alone", None) or self._publish
        for attempt in range(tries):
            try:
                await publish(row["exchange"], row["routing_key"], row["body"],
                                    str(row["event_id"]), mandatory=row["mandatory"],
                                    correlation_id=row["correlation_id"],
                                    urgent=row["priority"] > 0)
                return
            except aiormq.exceptions.ChannelInvalidStateError:
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(REOPEN_RETRY.seconds(attempt + 1))

    async def _vacuum(self) -> None:
        """VACUUM the outbox, in the background (it takes no lock that blocks the relay or
        the writers).

        Every event is a row inserted and deleted: without a vacuum, the dead rows pile up
        at the head of the claim's index (``outbox_claim_order``) and of the primary key,
        and every claim, and the backlog's ``min(seq)``, walks all of them, a cost that
        grows with every event ever relayed. Autovacuum comes by at best once a minute
        (``autovacuum_naptime``), and not at all where it is off; the relay knows when it
        has deleted enough to be worth one. No truncation: that would take an exclusive
        lock, and the freed pages are reused by the next rows anyway."""
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(f'VACUUM (TRUNCATE false) "{self._schema}".outbox')
            self.vacuums += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # the next batch of deletions tries again
            log.warning("outbox %s: vacuum failed", self._schema, exc_info=True)
        finally:
            self._vacuuming = None

    async def _run(self) -> None:
        await drain_on_notify(self._pool, notify_channel(self._schema), self._send_next,
                              batch_size=self._batch_size, poll_interval=self._poll_interval,
                              name=f"outbox relay for {self._schema}")


PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


def _forget_message_id(ids: dict[str, int], message_id: str, tag: int,
                       _: asyncio.Future[object]) -> None:
    if ids.get(message_id) == tag:
        del ids[message_id]


async def write_frames(raw: aiormq.abc.AbstractChannel,
                       messages: Sequence[tuple[str, str, bytes, bool, spec.Basic.Properties]],
                       ) -> list[asyncio.Future[object]]:
    """Publish messages (exchange, routing key, body, mandatory, properties) on a channel in
    confirm mode with their frames built together and written to the socket at once; returns
    each message's confirmation, in order (the broker's ack; a nack, a return or a closed
    channel as its exception).

    aio-pika and aiormq publish one message per call: a lock, a write, a drain and a task per
    message, which cost more than the AMQP work itself for a batch of hundreds. This
    registers each confirmation as ``aiormq.Channel.basic_publish`` does (delivery tag,
    message id for returns) under the channel's lock, so acks (single or multiple), nacks,
    returns and a channel's close settle them the same."""
    channel: Any = raw  # aiormq.Channel: its publish state is not in the abstract class
    if not channel.publisher_confirms:
        raise RuntimeError("the channel has no publisher confirms")
    if any(properties.message_id is None for *_, properties in messages):
        # A returned message is matched to its confirmation by its id: without one, the
        # broker's ack that follows the return would read as delivered.
        raise ValueError("every message needs a message_id")
    async with channel.lock:
        first_tag = channel.delivery_tag
        frames: list[Any] = []
        futures: list[asyncio.Future[object]] = []
        written = False
        try:
            for exchange, routing_key, body, mandatory, properties in messages:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                confirmation = channel.create_future()
                channel.confirmations[tag] = confirmation
                message_id = str(properties.message_id)  # checked above
                channel.message_id_delivery_tag[message_id] = tag
                confirmation.add_done_callback(partial(
                    _forget_message_id, channel.message_id_delivery_tag, message_id, tag))
                futures.append(confirmation)
                frames.append(spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                 mandatory=mandatory))
                frames.append(ContentHeader(properties=properties, body_size=len(body)))
                frames.extend(channel._split_body(body))
            drain = channel.create_future()
            payload = ChannelFrame.marshall(frames=frames, channel_number=channel.number,
                                            drain_future=drain)
            if channel.write_queue.full():
                await channel.write_queue.put(payload)
            else:
                channel.write_queue.put_nowait(payload)
            written = True
        except BaseException:
            if not written:
                # The broker never saw these delivery tags: the channel reuses them.
                channel.delivery_tag = first_tag
                for tag in range(first_tag + 1, first_tag + len(futures) + 1):
                    channel.confirmations.pop(tag, None)
                for future in futures:
                    future.cancel()
            raise
        await drain
    return futures


class AmqpPublisher:
    """The relay's ``Publish`` over a connection of its own, with plain aio-pika: persistent,
    mandatory, confirmed, ``message_id`` = event id; returned messages raise.

    The relay publishes every event a service emits, so its per-message cost matters:
    FastStream's publish path (message construction, middleware, exchange lookups) costs
    more than the AMQP work itself. A connection of its own also keeps the consumers' acks
    from queueing behind a burst of publishes. The connection is robust: after a broker
    restart it reconnects, and the relay's backoff covers the gap.

    Urgent events (``urgent=True``) go on a second channel: the broker handles a channel's
    frames in order, so on the first they would wait behind the routine events in flight
    (BENCHMARKS.md, "The relay's urgent channel", has the figures)."""

    def __init__(self, url: str, *, app_id: str, metrics: Metrics | None = None,
                 service: str = "") -> None:
        self._url = url
        self._app_id = app_id
        # Every event carries the broker user it is published as: the broker refuses a
        # user_id other than the connection's, and consumers check it is the event's owner.
        self._user_id = urlsplit(url).username or "guest"
        self._metrics = metrics
        self._service = service
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        # A plain connection for publishing one event at a time (see publish_alone).
        self._alone: aio_pika.abc.AbstractConnection | None = None
        # Two channels: the broker handles a channel's frames in order, so urgent events
        # on a channel of their own never queue behind a thousand routine ones in flight.
        self._channels: dict[bool, aio_pika.abc.AbstractChannel] = {}
        self._exchanges: dict[tuple[bool, str], aio_pika.abc.AbstractExchange] = {}

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": f"{self._app_id} outbox relay"})
        for urgent in (False, True):
            self._channels[urgent] = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        if self._alone is not None and not self._alone.is_closed:
            await self._alone.close()
        self._connection = self._alone = None
        self._channels.clear()
        self._exchanges.clear()

    async def publish_alone(self, exchange: str, routing_key: str, body: bytes, event_id: str,
                            *, mandatory: bool = True, correlation_id: str | None = None,
                            urgent: bool = False) -> object:
        """Publish one event on a throw-away channel (of a plain connection of its own), so
        a refusal closes only that channel and is this event's: the relay retries a failed
        batch's rows this way to tell the refused row from its neighbours."""
        if self._alone is None or self._alone.is_closed:
            self._alone = await aio_pika.connect(
                self._url, client_properties={"connection_name": f"{self._app_id} retries"})
        channel = await self._alone.channel(publisher_confirms=True, on_return_raises=True)
        try:
            ex = channel.default_exchange if exchange == "" else \
                await channel.get_exchange(exchange, ensure=False)
            return await ex.publish(self._message(body, event_id, correlation_id),
                                    routing_key, mandatory=mandatory)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def publish_batch(self, batch: Sequence[Outgoing]) -> list[asyncio.Future[object]]:
        """Publish a batch of events with the frames of each channel's share built together
        and written to the socket at once; returns each event's confirmation, in order (the
        broker's ack; a nack, a return or a closed channel as its exception; ``write_frames``)."""
        futures: list[asyncio.Future[object] | None] = [None] * len(batch)
        for urgent in (True, False):
            share = [(n, m) for n, m in enumerate(batch) if m[6] is urgent]
            if not share:
                continue
            channel = self._channels.get(urgent)
            try:
                if channel is None:
                    raise RuntimeError("the outbox publisher is not connected")
                written = await self._write_batch(await channel.get_underlay_channel(), share)
            except Exception as exc:  # this channel's share fails; the other's is out
                written = [_failed(exc) for _ in share]
            for (n, _), future in zip(share, written, strict=True):
                futures[n] = future
                if self._metrics is not None:
                    future.add_done_callback(partial(self._count, batch[n][1]))
        return [f for f in futures if f is not None]

    async def _write_batch(self, raw: aiormq.abc.AbstractChannel,
                           share: list[tuple[int, Outgoing]]) -> list[asyncio.Future[object]]:
        user_id = unquote(self._user_id)
        return await write_frames(raw, [
            (exchange, routing_key, body, mandatory, spec.Basic.Properties(
                app_id=self._app_id, content_type=CONTENT_TYPE, correlation_id=correlation_id,
                delivery_mode=PERSISTENT, headers={}, message_id=event_id, priority=0,
                user_id=user_id))
            for _, (exchange, routing_key, body, event_id, mandatory, correlation_id, _)
            in share])

    def _count(self, routing_key: str, confirmation: asyncio.Future[object]) -> None:
        if self._metrics is not None and not confirmation.cancelled() \
                and confirmation.exception() is None:
            self._metrics.published.labels(self._service, routing_key).inc()

    def _message(self, body: bytes, event_id: str, correlation_id: str | None) -> aio_pika.Message:
        return aio_pika.Message(body, message_id=event_id, content_type=CONTENT_TYPE,
                                correlation_id=correlation_id, app_id=self._app_id,
                                user_id=unquote(self._user_id),
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

    async def __call__(self, exchange: str, routing_key: str, body: bytes, event_id: str, *,
                       mandatory: bool = True, correlation_id: str | None = None,
                       urgent: bool = False) -> object:
        channel = self._channels.get(urgent)
        if channel is None:
            raise RuntimeError("the outbox publisher is not connected")
        ex = self._exchanges.get((urgent, exchange))
        if ex is None:
            ex = channel.default_exchange if exchange == "" else \
                await channel.get_exchange(exchange, ensure=False)
            self._exchanges[(urgent, exchange)] = ex
        confirmation = await ex.publish(self._message(body, event_id, correlation_id),
                                        routing_key, mandatory=mandatory)
        if self._metrics is not None:
            self._metrics.published.labels(self._service, routing_key).inc()
        return confirmation
