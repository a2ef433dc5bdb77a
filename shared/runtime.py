"""The shell every carewatch service runs in: a thin facade over the parts of a process.

A service module builds a ``ServiceRuntime``, registers its handlers with ``on_event`` (one
visible table per service), and exposes ``runtime.app`` (a FastStream application). The
domain logic stays in plain functions. The runtime composes, each in a module of its own
(none imports this one):

- the handler table and the broker (``handlers``: shared/subscribing.py);
- the consumer, the only place that knows about acks (``consumer``: shared/consuming.py);
- the pool, outbox relay, background loops, open/start/stop/close (``lifecycle``:
  shared/lifecycle.py);
- readiness, gauges and dead letters (``operations``: shared/operations.py), served with the
  metrics (shared/metrics.py) by the HTTP surface (``http``: shared/http.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from faststream import FastStream
from faststream.rabbit import Channel, RabbitMessage
from faststream.specification import AsyncAPI

from shared.consuming import BatchEventHandler, Consumer, E, EventHandler
from shared.envelope import Envelope
from shared.http import HttpSurface
from shared.lifecycle import BackgroundLoop, Lifecycle
from shared.metrics import Metrics
from shared.operations import GaugeRefresh, Operations
from shared.outbox import Outbox
from shared.settings import Settings
from shared.subscribing import HandlerTable, M, make_broker
from shared.topology import Subscription, Topology

__all__ = ["BatchEventHandler", "EventHandler", "ServiceRuntime", "refuse_weak_credentials", "run",
           "subscriptions_of"]

log = logging.getLogger(__name__)


class ServiceRuntime:
    """Broker, pool, relay and background tasks of one service process."""

    def __init__(self, name: str, schema: str, settings: Settings, migrations: Path) -> None:
        self.name = name
        self.schema = schema
        self.settings = settings
        self.migrations = migrations
        self.topology = Topology(settings.namespace, settings.delivery_limit)
        self.broker = make_broker(name, settings)
        self.metrics = Metrics(name)
        self.consumer = Consumer(name, schema, settings, self.topology, self.metrics,
                                 pool=lambda: self.pool, relay=lambda: self.lifecycle.relay)
        self.handlers = HandlerTable(name, settings, self.topology, self.broker, self.consumer)
        # The queues this service consumes, as the handler table registers them.
        self.subscriptions: list[Subscription] = self.handlers.subscriptions
        self.operations = Operations(
            name, schema, settings, self.metrics, self.subscriptions, pool=lambda: self.pool,
            broker=self.broker, consuming=lambda: self.lifecycle.ready,
            relay=lambda: self.lifecycle.relay)
        # Service-specific gauges, refreshed from the database when /metrics is scraped.
        self.gauge_refreshers: list[GaugeRefresh] = self.operations.gauge_refreshers
        self.http = HttpSurface(
            name, pool=lambda: self.pool, readiness=self.operations.readiness,
            dead_letters=self.operations.dead_letters,
            refresh_gauges=self.operations.refresh_gauges, registry=self.metrics.registry)
        self.lifecycle = Lifecycle(name, schema, settings, migrations, topology=self.topology,
                                   subscriptions=self.subscriptions, consumer=self.consumer,
                                   metrics=self.metrics, http=self.http)

    # -- wiring (a service's handler table, its loops and its outbox) ------------------------
    @property
    def pool(self) -> asyncpg.Pool:
        return self.lifecycle.pool

    @property
    def _pool(self) -> asyncpg.Pool | None:
        """The pool if open (tests and tools hand a runtime a pool of their own here)."""
        return self.lifecycle.current_pool

    @_pool.setter
    def _pool(self, pool: asyncpg.Pool | None) -> None:
        self.lifecycle.current_pool = pool

    def on_event(self, event_cls: type[E], handler: EventHandler[E], *,
                 description: str | None = None, suffix: str = "#") -> None:
        """Consume ``event_cls`` with a handler of the connection (``HandlerTable.on_event``)."""
        self.handlers.on_event(event_cls, handler, description=description, suffix=suffix)

    def on_batch_event(self, event_cls: type[E], handler: BatchEventHandler[E], *,
                       description: str | None = None, suffix: str = "#",
                       channel: Channel | None = None) -> None:
        """Consume ``event_cls`` with a handler of its group commit's batch, once per event id
        (``HandlerTable.on_batch_event``)."""
        self.handlers.on_batch_event(event_cls, handler, description=description, suffix=suffix,
                                     channel=channel)

    def on_messages(self, sub: Subscription, decode: Callable[[RabbitMessage], M],
                    handle: Callable[[M], Awaitable[str]], *, title: str, description: str,
                    context: Callable[[M], dict[str, Any]] = lambda _: {},
                    channel: Channel | None = None) -> None:
        """Consume ``sub``'s queue of messages that are not carewatch events
        (``HandlerTable.on_messages``)."""
        self.handlers.on_messages(sub, decode, handle, title=title, description=description,
                                  context=context, channel=channel)

    def background(self, loop: BackgroundLoop) -> None:
        """A coroutine run for the life of the process (schedules, dispatchers)."""
        self.lifecycle.background(loop)

    def outbox(self, conn: asyncpg.Connection, submission_id: uuid.UUID | None = None,
               cause: Envelope | None = None) -> Outbox:
        return self.consumer.outbox(conn, submission_id, cause)

    # -- running ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start everything (tests and the in-process runner use this)."""
        await self.lifecycle.open()
        await self.broker.start()
        await self.lifecycle.started()

    async def stop(self) -> None:
        await self.lifecycle.stopping()
        await self.broker.stop()
        await self.lifecycle.closed()

    @property
    def app(self) -> FastStream:
        return FastStream(
            self.broker,
            on_startup=[self.lifecycle.open],
            after_startup=[self.lifecycle.started],
            on_shutdown=[self.lifecycle.stopping],
            after_shutdown=[self.lifecycle.closed],
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
