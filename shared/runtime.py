"""The shell every carewatch service runs in: broker, pool, outbox relay, idempotent consumers.

A service module builds a ``ServiceRuntime``, registers its handlers with ``on_event`` (one
visible table per service), and exposes ``runtime.app`` (a FastStream application). The
domain logic stays in plain functions; this is the only place that knows about acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import asyncpg
from faststream import AckPolicy, FastStream
from faststream.exceptions import RejectMessage
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage
from faststream.specification import AsyncAPI
from pydantic import ValidationError

from shared import dead_letters, identity
from shared.acks import AckBatcher
from shared.db import create_pool, pending_migrations
from shared.envelope import Envelope
from shared.events import Event
from shared.groupcommit import Batch, GroupCommit
from shared.http import DEFAULT_PORTS, HttpSurface, Metrics
from shared.logs import log_context
from shared.outbox import AmqpPublisher, Outbox, OutboxRelay
from shared.retry import retry_transient
from shared.settings import Settings
from shared.topology import Subscription, Topology, sender_refusal

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
M = TypeVar("M")  # a message as a handler takes it
EventHandler = Callable[[asyncpg.Connection, E, Outbox], Awaitable[None]]
# A handler that takes its group commit's batch (to defer writes, see shared/groupcommit.py).
BatchEventHandler = Callable[[Batch, E, Outbox], Awaitable[None]]


async def raw_body(message: RabbitMessage) -> bytes:
    """Hand handlers the body as received: carewatch parses and validates it itself, so that
    a malformed body is quarantined or dead-lettered with a reason, never dropped earlier."""
    return message.body


def _described(text: str, sub: Subscription) -> str:
    """The handler's description, and for a queue with several bindings, all of them (the
    AsyncAPI address shows the first only)."""
    if not sub.extra_routing_keys:
        return inspect.cleandoc(text)  # as Python 3.13+ compiles docstrings, on every version
    return (f"{inspect.cleandoc(text)}\n\nThe {sub.lane or 'routine'} lane: queue `{sub.queue}`, bound to"
            f" {', '.join(f'`{k}`' for k in sub.routing_keys)}.")


class PoisonMessage(Exception):
    """A message that can never be handled: dead-letter it at once, with the reason."""


class ServiceRuntime:
    """Broker, pool, relay and background tasks of one service process."""

    def __init__(self, name: str, schema: str, settings: Settings, migrations: Path) -> None:
        self.name = name
        self.schema = schema
        self.settings = settings
        self.migrations = migrations
        self.topology = Topology(settings.namespace, settings.delivery_limit)
        self.subscriptions: list[Subscription] = []
        self.broker = RabbitBroker(
            settings.amqp_url,
            default_channel=Channel(
                prefetch_count=settings.prefetch_count,
                publisher_confirms=True,
                on_return_raises=True,
            ),
            graceful_timeout=settings.graceful_timeout,
            # A handler error requeues; the quorum queue's delivery limit then dead-letters.
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=raw_body,
            app_id=f"carewatch-{name}",
            logger=logging.getLogger(f"carewatch.{name}.broker"),
            # Per-message lines cost much of a hop's throughput (BENCHMARKS.md): keep them at
            # DEBUG.
            log_level=logging.DEBUG,
        )
        self._pool: asyncpg.Pool | None = None
        self.publisher: AmqpPublisher | None = None
        self.relay: OutboxRelay | None = None
        self.metrics = Metrics(name)
        # Handled deliveries are acked together, a run at a time (see shared/acks.py).
        self.acks = AckBatcher()
        # Concurrent messages share transactions (see shared/groupcommit.py).
        inbox = f'"{schema}".inbox'
        self.commits = GroupCommit(lambda: self.pool, settings.commit_batch_size,
                                   inbox_table=inbox)
        # The urgent lane's own: its transactions never wait for a routine batch to commit.
        self.urgent_commits = GroupCommit(lambda: self.pool, settings.commit_batch_size,
                                          inbox_table=inbox)
        self.http = HttpSurface(self)
        # Service-specific gauges, refreshed from the database when /metrics is scraped.
        self.gauge_refreshers: list[Callable[[asyncpg.Connection], Awaitable[None]]] = []
        self._background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False
        # Set once every consumer has started (see room_for_work).
        self._all_consuming = asyncio.Event()

    # -- wiring -------------------------------------------------------------------------
    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.name}: database pool is not open (service not started)")
        return self._pool

    def add_subscription(self, sub: Subscription) -> Subscription:
        self.subscriptions.append(sub)
        return sub

    def on_event(self, event_cls: type[E], handler: EventHandler[E], *,
                 description: str | None = None, suffix: str = "#") -> None:
        """Consume ``event_cls`` with a handler of the connection (see ``on_batch_event``)."""
        async def on_batch(batch: Batch, event: E, outbox: Outbox) -> None:
            await handler(batch.conn, event, outbox)

        self.on_batch_event(event_cls, on_batch, description=description or handler.__doc__,
                            suffix=suffix)

    def on_batch_event(self, event_cls: type[E], handler: BatchEventHandler[E], *,
                       description: str | None = None, suffix: str = "#") -> None:
        """Consume ``event_cls`` from this service's own quorum queue, once per event id.

        ``suffix`` narrows the binding to ``<type>.<suffix>`` (events whose routing key
        carries a suffix, such as ``feedback.accepted.v1.<kind>``). Consumed whole, an event
        with an urgent lane (``urgent_suffixes``) gets two queues, each with its own
        consumer and its own group commit, so an urgent event never waits behind a batch of
        routine ones. The handler takes its group commit's ``Batch``."""
        if suffix == "#" and event_cls.urgent_suffixes:
            urgent, routine = self.topology.event_lanes(
                self.name, event_cls.event_type, event_cls.routing_suffixes,
                event_cls.urgent_suffixes)
            self._subscribe(event_cls, handler, urgent, description, self.urgent_commits,
                            Channel(prefetch_count=self.settings.prefetch_count))
            self._subscribe(event_cls, handler, routine, description, self.commits)
        else:
            self._subscribe(event_cls, handler, self.topology.event_subscription(
                self.name, event_cls.event_type, suffix), description, self.commits)

    def _subscribe(self, event_cls: type[E], handler: BatchEventHandler[E], sub: Subscription,
                   description: str | None, commits: GroupCommit,
                   channel: Channel | None = None) -> None:
        self.add_subscription(sub)

        async def consume() -> None:
            # The message comes from the context rather than as an injected parameter:
            # FastStream resolves an injected message in a worker thread, a hop per message.
            message: RabbitMessage = self.broker.context.get_local("message")
            await self.consume_event(message, sub, event_cls, handler, commits)

        lane = f".{sub.lane}" if sub.lane else ""
        consume.__name__ = f"on_{(event_cls.event_type + lane).replace('.', '_')}"
        self.broker.subscriber(
            self.topology.rabbit_queue(sub),
            self.topology.rabbit_exchange(sub.exchange),
            channel=channel,
            title=f"{self.name}:{event_cls.event_type}{lane}",
            description=_described(description or handler.__doc__ or "", sub),
            # Events never get a framework reply, whatever reply_to they carry.
            no_reply=True,
        )(consume)

    def on_messages(self, sub: Subscription, decode: Callable[[RabbitMessage], M],
                    handle: Callable[[M], Awaitable[str]], *, title: str, description: str,
                    context: Callable[[M], dict[str, Any]] = lambda _: {},
                    channel: Channel | None = None) -> None:
        """Consume ``sub``'s queue of messages that are not carewatch events (a provider
        feed's submissions): each message is decoded, handled (``handle`` returns the outcome
        counted) and settled like an event (``settle``), within its ``context`` in the logs.
        A framework reply is never sent."""
        self.add_subscription(sub)

        async def consume() -> None:
            # The message comes from the context (see _subscribe).
            message: RabbitMessage = self.broker.context.get_local("message")
            decoded = decode(message)
            await self.settle(message, sub, lambda: handle(decoded),
                              f"{self.name} failed on message {message.message_id}",
                              **context(decoded))

        consume.__name__ = f"on_{sub.queue.replace('.', '_').replace('-', '_')}"
        self.broker.subscriber(
            self.topology.rabbit_queue(sub),
            self.topology.rabbit_exchange(sub.exchange),
            channel=channel, title=title, description=description,
            # Replies (if any) go through the outbox; no empty framework reply.
            no_reply=True,
        )(consume)

    def background(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A coroutine run for the life of the process (schedules, dispatchers)."""
        self._background.append(loop)

    def outbox(self, conn: asyncpg.Connection, submission_id: uuid.UUID | None = None,
               cause: Envelope | None = None) -> Outbox:
        return Outbox(conn, self.schema, self.topology.events_exchange,
                      f"carewatch/{self.name}", submission_id, cause)

    # -- consuming ----------------------------------------------------------------------
    async def room_for_work(self) -> None:
        """Routine work waits until every consumer of the process has started, and while
        this service's outbox is deeper than its backlog limit (backpressure).

        FastStream starts the consumers one by one, in no set order. Without the first wait,
        a routine queue with a backlog, started first, floods the event loop, and the
        urgent lane's consumer starts about a second later."""
        if not self._all_consuming.is_set():
            await self._all_consuming.wait()
        if self.relay is not None:
            await self.relay.wait_for_room()

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
        waits for room (``room_for_work``); ``handle`` runs (within ``context`` for the logs)
        and says the outcome counted; then the delivery is acked, or on failure recorded
        (``failure`` logged) and nacked (requeued, and dead-lettered past the delivery
        limit)."""
        if not sub.lane:  # the urgent lane is small: it never waits
            await self.room_for_work()
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
            await self.pool.execute(
                f'INSERT INTO "{self.schema}".delivery_failures (message_id, queue, attempt, error)'
                " VALUES ($1, $2, $3, $4)", message.message_id, sub.queue, attempt, error[:4000])
        except Exception:
            log.warning("could not record delivery failure of %s", message.message_id,
                        exc_info=True)

    # -- operations -----------------------------------------------------------------------
    async def readiness(self) -> dict[str, bool]:
        checks = {"consuming": self.ready, "database": False, "broker": False,
                  # The outbox relay publishes (or parks) what is committed: a relay stuck on
                  # the same rows is not ready, whatever the connections say.
                  "relay": self.relay is not None and not self.relay.stalled()}
        try:
            checks["database"] = await self.pool.fetchval("SELECT true", timeout=2) is True
        except Exception:
            log.debug("readiness: database check failed", exc_info=True)
        try:
            checks["broker"] = await self.broker.ping(timeout=2)
        except Exception:
            log.debug("readiness: broker check failed", exc_info=True)
        return checks

    async def refresh_gauges(self) -> None:
        """Outbox backlog and age, dead-letter depth and the service's own gauges."""
        try:
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(
                    f'SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(created_at)) AS age'
                    f' FROM "{self.schema}".outbox')
                self.metrics.outbox_backlog.labels(self.name).set(row["n"])
                self.metrics.outbox_age.labels(self.name).set(row["age"] or 0)
                for refresh in self.gauge_refreshers:
                    await refresh(conn)
            for sub, depth in (await self.dead_letter_depths()).items():
                self.metrics.dlq_depth.labels(self.name, sub).set(depth)
        except Exception:
            log.warning("could not refresh gauges", exc_info=True)

    async def dead_letter_depths(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        connection = await aio_pika.connect(self.settings.amqp_url, timeout=5)
        async with connection:
            channel = await connection.channel()
            for sub in self.subscriptions:
                queue = await channel.declare_queue(sub.dead_letter_queue, passive=True)
                depths[sub.dead_letter_queue] = queue.declaration_result.message_count or 0
        return depths

    async def dead_letters(self, limit: int = 20) -> dict[str, Any]:
        """This service's dead-letter queues: depth, first messages and why (operator's view;
        shared/dead_letters.py)."""
        queues = await dead_letters.peek(self.settings.amqp_url, self.subscriptions, limit)
        return {"service": self.name,
                "queues": await dead_letters.with_errors(self.pool, self.schema, queues)}

    # -- lifecycle ----------------------------------------------------------------------
    async def declare_topology(self) -> None:
        connection = await aio_pika.connect(self.settings.amqp_url)
        async with connection:
            await self.topology.declare(await connection.channel(), self.subscriptions)

    async def check_migrated(self) -> None:
        """Refuse to start on a schema that ``carewatch migrate`` has not brought up to date.

        Services run with least privilege and do not change schemas themselves."""
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            pending = await pending_migrations(conn, self.schema, self.migrations)
            pending += await pending_migrations(conn, identity.SCHEMA, identity.MIGRATIONS,
                                                messaging=False)
        finally:
            await conn.close()
        if pending:
            raise RuntimeError(f"{self.name}: schemas {self.schema!r}/identity lack migrations"
                               f" {', '.join(pending)}; run `carewatch migrate` first")

    async def open(self) -> None:
        """Before the broker starts: schema up to date, topology declared, pool open."""
        # A runtime started again (perhaps on another event loop) begins afresh: it waits
        # for its consumers again, and its acks hold nothing of the last run's channels.
        self._all_consuming.clear()
        self.acks = AckBatcher()
        await self.check_migrated()
        await self.declare_topology()
        self._pool = await create_pool(self.settings.database_url, min_size=2,
                                       max_size=self.settings.db_pool_size)

    async def started(self) -> None:
        """After the broker starts: relay and background loops running."""
        self._all_consuming.set()
        self.publisher = AmqpPublisher(self.settings.amqp_url, app_id=f"carewatch-{self.name}",
                                       metrics=self.metrics, service=self.name)
        await self.publisher.connect()
        self.relay = OutboxRelay(
            self.pool, self.schema, self.publisher,
            batch_size=self.settings.outbox_batch_size,
            poll_interval=self.settings.outbox_poll_interval,
            backlog_limit=self.settings.outbox_backlog_limit)
        self.relay.start()
        self._tasks = [asyncio.create_task(loop(), name=f"{self.name}-{loop.__name__}")
                       for loop in self._background]
        port = self.settings.http_port
        await self.http.start(self.settings.http_host,
                              DEFAULT_PORTS.get(self.name, 0) if port is None else port)
        self.ready = True
        log.info("%s started: consuming %s", self.name, [s.queue for s in self.subscriptions])

    async def stopping(self) -> None:
        """Before the broker stops: no new work; what is committed so far is published
        while the broker is still connected (later commits go at the next start, or with
        another replica's relay)."""
        self.ready = False
        await self.http.stop()
        if self.relay:
            self.relay.release_waiters()
            try:
                await asyncio.wait_for(self.relay.publish_pending(), 5)
            except Exception:
                log.warning("outbox not flushed at shutdown; it is published at next start",
                            exc_info=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def closed(self) -> None:
        """After the broker has stopped (in-flight handlers done): close."""
        # Within the graceful timeout whatever hangs: a batch still waiting for its confirms
        # is cancelled (its transaction rolls back, its row locks go), and connections still
        # held are terminated rather than waited for.
        budget = max(1.0, self.settings.graceful_timeout / 3)
        await self.commits.stop()
        await self.urgent_commits.stop()
        if self.relay:
            await self.relay.stop(timeout=budget)
        if self.publisher:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.publisher.close(), budget)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), budget)
            except TimeoutError:
                log.warning("%s: database connections still busy at shutdown; closing them",
                            self.name)
                pool.terminate()

    async def start(self) -> None:
        """Start everything (tests and the in-process runner use this)."""
        await self.open()
        await self.broker.start()
        await self.started()

    async def stop(self) -> None:
        await self.stopping()
        await self.broker.stop()
        await self.closed()

    @property
    def app(self) -> FastStream:
        return FastStream(
            self.broker,
            on_startup=[self.open],
            after_startup=[self.started],
            on_shutdown=[self.stopping],
            after_shutdown=[self.closed],
            specification=AsyncAPI(
                title=f"carewatch {self.name}",
                version="1.0.0",
                description=f"The {self.name} service of carewatch.",
            ),
        )


def run(runtime_factory: Callable[[Settings], ServiceRuntime]) -> None:
    """Entry point of ``python -m services.<name>``."""
    from shared.logs import configure_logging
    from shared.settings import get_settings

    settings = get_settings()
    runtime = runtime_factory(settings)
    configure_logging(settings.log_level, settings.log_format, runtime.name)
    refuse_weak_credentials(settings, runtime.name)
    app = runtime.app
    asyncio.run(app.run())


def refuse_weak_credentials(settings: Settings, who: str) -> None:
    """Stop here on weak credentials (a shipped default, a password equal to its user name,
    none), unless CAREWATCH_DEV_MODE=1."""
    from shared.credentials import weak_credentials

    problems = weak_credentials(settings)
    if not problems:
        return
    if settings.dev_mode:
        log.warning("%s: development mode (CAREWATCH_DEV_MODE=1): accepting weak credentials:"
                    " %s", who, "; ".join(problems))
        return
    raise SystemExit(f"{who}: refusing to start with weak credentials: {'; '.join(problems)}."
                     " Run `carewatch secrets init` (or set strong passwords); on a development"
                     " machine only, CAREWATCH_DEV_MODE=1 allows them.")


def subscriptions_of(build: Callable[[Settings], ServiceRuntime],
                     topology: Topology) -> list[Subscription]:
    """The queues a service subscribes, read from the runtime its ``build`` makes, so the
    handler table stays the one place that says what a service consumes."""
    return build(Settings(namespace=topology.namespace,
                          delivery_limit=topology.delivery_limit)).subscriptions
