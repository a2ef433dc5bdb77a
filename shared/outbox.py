"""Transactional outbox: write events with the state change, publish them afterwards.

``Outbox.add`` runs inside the caller's transaction; the ``OutboxRelay`` of each process
publishes committed rows with publisher confirms and deletes them. Several replicas relay
safely side by side (``FOR UPDATE SKIP LOCKED``). A crash between publish and delete means
the event is published again: consumers are idempotent on the event id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Sequence
from typing import Protocol

import aiormq
import asyncpg
from faststream.rabbit import RabbitBroker, RabbitExchange

from shared.envelope import CONTENT_TYPE, Envelope
from shared.events import Event
from shared.http import Metrics
from shared.wakeup import drain_on_notify

log = logging.getLogger(__name__)


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
        envelope = event.envelope(self._source, submission_id or self.submission_id)
        exchange, routing_key = (self._exchange, event.routing_key()) if reply_to is None \
            else ("", reply_to)
        await self._conn.execute(
            f'INSERT INTO "{self._schema}".outbox (event_id, exchange, routing_key, body,'
            " mandatory, correlation_id) VALUES ($1, $2, $3, $4, $5, $6)",
            envelope.id, exchange, routing_key, envelope.to_bytes(), reply_to is None,
            correlation_id)
        await self._added([envelope])
        return envelope

    async def add_many(self, events: Sequence[tuple[Event, uuid.UUID | None]]) -> list[Envelope]:
        """Publish several events (each with its submission id) in one round trip."""
        envelopes = [event.envelope(self._source, sid or self.submission_id)
                     for event, sid in events]
        await self._conn.executemany(
            f'INSERT INTO "{self._schema}".outbox (event_id, exchange, routing_key, body)'
            " VALUES ($1, $2, $3, $4)",
            [(e.id, self._exchange, event.routing_key(), e.to_bytes())
             for e, (event, _) in zip(envelopes, events, strict=True)])
        await self._added(envelopes)
        return envelopes

    async def _added(self, envelopes: list[Envelope]) -> None:
        if envelopes and not self.added:
            # Delivered at commit only, so the relay never wakes for a rolled-back event.
            await self._conn.execute("SELECT pg_notify($1, '')", notify_channel(self._schema))
        self.added.extend(envelopes)


class Publish(Protocol):
    def __call__(self, exchange: str, routing_key: str, body: bytes, event_id: str, *,
                 mandatory: bool = True, correlation_id: str | None = None
                 ) -> Awaitable[object]: ...


class OutboxRelay:
    """Publishes a schema's committed outbox rows, woken by NOTIFY, polling as a backstop."""

    def __init__(self, pool: asyncpg.Pool, schema: str, publish: Publish, *,
                 batch_size: int = 500, poll_interval: float = 1.0) -> None:
        self._pool = pool
        self._schema = schema
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def publish_pending(self) -> int:
        """Publish one batch of committed events; returns how many rows were handled.

        Rows the broker refuses stay in the outbox with the error and are retried with
        backoff, so one bad row never holds up the others."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f'SELECT seq, event_id, exchange, routing_key, body, mandatory, correlation_id,'
                f' attempts FROM "{self._schema}".outbox WHERE next_attempt_at <= now()'
                " ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED", self._batch_size)
            if not rows:
                return 0
            # Many confirms in flight at once: one awaited confirm at a time caps at ~700/s.
            results = await asyncio.gather(*(
                self._publish(r["exchange"], r["routing_key"], r["body"], str(r["event_id"]),
                              mandatory=r["mandatory"], correlation_id=r["correlation_id"])
                for r in rows), return_exceptions=True)
            done = [r["seq"] for r, res in zip(rows, results, strict=True)
                    if not isinstance(res, BaseException)]
            failed: list[tuple[asyncpg.Record, BaseException]] = []
            # A refused publish closes the channel under its neighbours: try each failed row
            # again on its own, to tell the bad row from the collateral damage.
            for row, res in zip(rows, results, strict=True):
                if not isinstance(res, BaseException):
                    continue
                try:
                    await self._publish_alone(row)
                    done.append(row["seq"])
                except Exception as exc:
                    failed.append((row, exc))
            if failed and not done:
                # Nothing got through: the broker is likely down; the caller backs off.
                raise failed[0][1]
            await conn.execute(
                f'DELETE FROM "{self._schema}".outbox WHERE seq = ANY($1::bigint[])', done)
            for row, error in failed:
                delay = min(300.0, 2.0 ** min(row["attempts"], 8))
                await conn.execute(
                    f'UPDATE "{self._schema}".outbox SET attempts = attempts + 1,'
                    " last_error = $2, next_attempt_at = now() + make_interval(secs => $3)"
                    " WHERE seq = $1", row["seq"], repr(error)[:2000], delay)
                log.error("outbox %s: event %s refused by the broker (attempt %d, retry in"
                          " %.0fs): %r", self._schema, row["event_id"], row["attempts"] + 1,
                          delay, error)
        self.published += len(done)
        return len(rows)

    async def _publish_alone(self, row: asyncpg.Record, tries: int = 4) -> None:
        """Publish one row, giving a channel closed by a neighbour's refusal time to reopen."""
        for attempt in range(tries):
            try:
                await self._publish(row["exchange"], row["routing_key"], row["body"],
                                    str(row["event_id"]), mandatory=row["mandatory"],
                                    correlation_id=row["correlation_id"])
                return
            except aiormq.exceptions.ChannelInvalidStateError:
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(0.25 * (attempt + 1))

    async def _run(self) -> None:
        await drain_on_notify(self._pool, notify_channel(self._schema), self.publish_pending,
                              batch_size=self._batch_size, poll_interval=self._poll_interval,
                              name=f"outbox relay for {self._schema}")


def publish_via(broker: RabbitBroker, metrics: Metrics | None = None,
                service: str = "") -> Publish:
    """A ``Publish`` that sends through a FastStream RabbitBroker: persistent, mandatory,
    confirmed, ``message_id`` = event id."""
    exchanges: dict[str, RabbitExchange] = {}

    async def publish(exchange: str, routing_key: str, body: bytes, event_id: str, *,
                      mandatory: bool = True, correlation_id: str | None = None) -> object:
        ex = exchanges.get(exchange) or exchanges.setdefault(
            exchange, RabbitExchange(exchange, declare=False))
        confirmation = await broker.publish(
            body, exchange=ex, routing_key=routing_key, persist=True, mandatory=mandatory,
            message_id=event_id, content_type=CONTENT_TYPE, correlation_id=correlation_id)
        if metrics is not None:
            metrics.published.labels(service, routing_key).inc()
        return confirmation

    return publish
