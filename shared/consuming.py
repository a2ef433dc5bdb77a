"""The consumer: how each delivery is decoded, handled once, settled and counted.

A carewatch event is read from its envelope (a body that cannot be read, of another type, or
from a sender that does not own the type, is dead-lettered at once: ``PoisonMessage``), then
handled in its group commit's transaction with the event id written to the inbox (a repeated
event is counted a duplicate and not handled again: shared/groupcommit.py). Every delivery,
event or not, is settled the one way (``Consumer.settle``): routine work waits for room
(backpressure), the outcome is counted and timed, then the delivery is acked, or its failure
recorded for the dead-letter tools and the delivery nacked (shared/acks.py).

The handler table (shared/subscribing.py) routes each queue's deliveries here; the lifecycle
(shared/lifecycle.py) restarts, releases and stops the consumer with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import asyncpg
from faststream.exceptions import RejectMessage
from faststream.rabbit import RabbitMessage
from pydantic import ValidationError

from shared.acks import AckBatcher
from shared.envelope import Envelope
from shared.events import Event
from shared.groupcommit import Batch, GroupCommit, UrgentFirst
from shared.logs import log_context
from shared.metrics import Metrics
from shared.outbox import Outbox, OutboxRelay
from shared.retry import retry_transient
from shared.settings import Settings
from shared.topology import Subscription, Topology, sender_refusal

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
EventHandler = Callable[[asyncpg.Connection, E, Outbox], Awaitable[None]]
# A handler that takes its group commit's batch (to defer writes, see shared/groupcommit.py).
BatchEventHandler = Callable[[Batch, E, Outbox], Awaitable[None]]


class PoisonMessage(Exception):
    """A message that can never be handled: dead-letter it at once, with the reason."""


class Consumer:
    """The delivery path of one service process: its group commits, acks and counts."""

    def __init__(self, name: str, schema: str, settings: Settings, topology: Topology,
                 metrics: Metrics, *, pool: Callable[[], asyncpg.Pool],
                 relay: Callable[[], OutboxRelay | None]) -> None:
        self.name = name
        self.schema = schema
        self.settings = settings
        self.topology = topology
        self.metrics = metrics
        self._pool = pool
        self._relay = relay
        # Handled deliveries are acked together, a run at a time (see shared/acks.py).
        self.acks = AckBatcher()
        # While an urgent delivery is in hand, a routine group commit waits between items.
        self.priority = UrgentFirst()
        # Concurrent messages share transactions (see shared/groupcommit.py).
        inbox = f'"{schema}".inbox'
        self.commits = GroupCommit(pool, settings.commit_batch_size, inbox_table=inbox,
                                   priority=self.priority)
        # The urgent lane's own: its transactions never wait for a routine batch to commit.
        self.urgent_commits = GroupCommit(pool, settings.commit_batch_size, inbox_table=inbox,
                                          priority=self.priority, urgent=True)
        # Set once every consumer has started (see room_for_work).
        self._all_consuming = asyncio.Event()

    def outbox(self, conn: asyncpg.Connection, submission_id: uuid.UUID | None = None,
               cause: Envelope | None = None) -> Outbox:
        """The events ``conn``'s transaction will publish, from this service."""
        return Outbox(conn, self.schema, self.topology.events_exchange,
                      f"carewatch/{self.name}", submission_id, cause)

    # -- with the process ------------------------------------------------------------------
    def restart(self) -> None:
        """A runtime started again (perhaps on another event loop) begins afresh: it waits
        for its consumers again, and its acks hold nothing of the last run's channels."""
        self._all_consuming.clear()
        self.acks = AckBatcher()

    def all_started(self) -> None:
        """Every consumer of the process has started: routine work may begin."""
        self._all_consuming.set()

    async def stop(self) -> None:
        """The group commits end (a batch still waiting is cancelled and rolls back)."""
        await self.commits.stop()
        await self.urgent_commits.stop()

    # -- each delivery ---------------------------------------------------------------------
    async def room_for_work(self) -> None:
        """Routine work waits until every consumer of the process has started, and while
        this service's outbox is deeper than its backlog limit (backpressure).

        FastStream starts the consumers one by one, in no set order. Without the first wait,
        a routine queue with a backlog, started first, floods the event loop, and the
        urgent lane's consumer starts about a second later."""
        if not self._all_consuming.is_set():
            await self._all_consuming.wait()
        relay = self._relay()
        if relay is not None:
            await relay.wait_for_room()

    async def consume_event(self, message: RabbitMessage, sub: Subscription,
                            event_cls: type[E], handler: BatchEventHandler[E],
                            commits: GroupCommit) -> None:
        try:
            envelope = Envelope.from_bytes(message.body)
            if envelope.type != event_cls.event_type:
                raise PoisonMessage(f"expected {event_cls.event_type}, got {envelope.type}")
            # The broker has checked user_id against the publisher's login: the event is
            # taken only from its owner (a service cannot speak for another).
            refusal = sender_refusal(envelope.type, message.raw_message.user_id,
                                     self.settings.broker_users)
            if refusal is not None:
                raise PoisonMessage(refusal)
            event = event_cls.model_validate(envelope.data)
        except (ValidationError, PoisonMessage) as exc:
            await self.record_failure(message, sub, f"poison: {exc}")
            log.error("dead-lettering unreadable message %s on %s: %s",
                      message.message_id, sub.queue, exc)
            self.metrics.messages.labels(self.name, sub.queue, "rejected").inc()
            await self.acks.reject(message.raw_message)
            raise RejectMessage() from exc
        async def work(batch: Batch, first: bool) -> str:
            # The inbox row (event id) is written by the group commit, for the whole
            # batch in one statement, in this same transaction.
            if first:
                await handler(batch, event,
                              self.outbox(batch.conn, envelope.submissionid, envelope))
            return "handled" if first else "duplicate"

        await self.settle(
            message, sub,
            lambda: retry_transient(lambda: commits.run(work, inbox=(envelope.id, envelope.type))),
            f"handler for {envelope.type} failed on event {envelope.id}"
            f" (submission {envelope.submissionid})",
            event_id=envelope.id, event_type=envelope.type, submission_id=envelope.submissionid)

    async def settle(self, message: RabbitMessage, sub: Subscription,
                     handle: Callable[[], Awaitable[str]], failure: str,
                     **context: Any) -> None:
        """The one way a delivery is handled and settled, whatever it carries: routine work
        waits for room (``room_for_work``); an urgent delivery is in hand (``priority.urgent``:
        routine batches give way to it) until settled; ``handle`` runs (within
        ``context`` for the logs) and says the outcome counted; then the delivery is acked,
        or on failure recorded (``failure`` logged) and nacked (requeued, and dead-lettered
        past the delivery limit)."""
        if sub.lane:  # the urgent lane is small: it never waits
            with self.priority.urgent():
                await self._settle(message, sub, handle, failure, context)
            return
        await self.room_for_work()
        await self._settle(message, sub, handle, failure, context)

    async def _settle(self, message: RabbitMessage, sub: Subscription,
                      handle: Callable[[], Awaitable[str]], failure: str,
                      context: dict[str, Any]) -> None:
        with self.measure(sub) as outcome, log_context(**context):
            try:
                outcome["outcome"] = await handle()
            except Exception as exc:
                await self.record_failure(message, sub, repr(exc))
                log.exception("%s", failure)
                await self.acks.nack(message.raw_message)
                raise
        await self.acks.ack(message.raw_message)

    @contextlib.contextmanager
    def measure(self, sub: Subscription) -> Iterator[dict[str, str]]:
        """Count the message by outcome and time its handling (set ``outcome`` to refine)."""
        outcome = {"outcome": "handled"}
        started = time.perf_counter()
        try:
            yield outcome
        except Exception:
            outcome["outcome"] = "failed"
            raise
        finally:
            self.metrics.handler_seconds.labels(self.name, sub.queue).observe(
                time.perf_counter() - started)
            self.metrics.messages.labels(self.name, sub.queue, outcome["outcome"]).inc()

    async def record_failure(self, message: RabbitMessage, sub: Subscription, error: str) -> None:
        """Keep why a delivery failed, for the dead-letter tools (best effort)."""
        attempt = int((message.headers or {}).get("x-delivery-count", 0)) + 1
        try:
            await self._pool().execute(
                f'INSERT INTO "{self.schema}".delivery_failures (message_id, queue, attempt, error)'
                " VALUES ($1, $2, $3, $4)", message.message_id, sub.queue, attempt, error[:4000])
        except Exception:
            log.warning("could not record delivery failure of %s", message.message_id,
                        exc_info=True)
