"""A service process's life: open, start, stop and close around its broker.

FastStream calls the four hooks in order (``ServiceRuntime.app``; tests and the in-process
runner call ``ServiceRuntime.start`` and ``stop``):

- ``open``, before the broker starts: the schema checked up to date (services do not migrate
  themselves), the topology declared, the pool opened;
- ``started``, after: the outbox's publisher and relay, the background loops and the HTTP
  surface running, the service ready;
- ``stopping``, before the broker stops: not ready, no HTTP, what is committed published
  while the broker is still connected, the background loops cancelled;
- ``closed``, after (in-flight handlers done): group commits, relay, publisher and pool
  closed within the graceful timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from shared import identity
from shared.consuming import Consumer
from shared.db import create_pool, pending_migrations
from shared.http import DEFAULT_PORTS, HttpSurface
from shared.metrics import Metrics
from shared.outbox import AmqpPublisher, OutboxRelay
from shared.settings import Settings
from shared.topology import Subscription, Topology

log = logging.getLogger(__name__)

# A coroutine run for the life of the process (schedules, dispatchers).
BackgroundLoop = Callable[[], Coroutine[Any, Any, None]]


class Lifecycle:
    """The pool, relay and background tasks of one service process, opened and closed."""

    def __init__(self, name: str, schema: str, settings: Settings, migrations: Path, *,
                 topology: Topology, subscriptions: list[Subscription], consumer: Consumer,
                 metrics: Metrics, http: HttpSurface) -> None:
        self.name = name
        self.schema = schema
        self.settings = settings
        self.migrations = migrations
        self.topology = topology
        self.subscriptions = subscriptions  # the handler table's list, as it grows
        self.consumer = consumer
        self.metrics = metrics
        self.http = http
        # Set by ``open``, cleared by ``closed`` (or handed over by a test or tool that opens
        # a pool of its own).
        self.current_pool: asyncpg.Pool | None = None
        self.publisher: AmqpPublisher | None = None
        self.relay: OutboxRelay | None = None
        self._background: list[BackgroundLoop] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    def background(self, loop: BackgroundLoop) -> None:
        """A coroutine run for the life of the process, from ``started`` to ``stopping``."""
        self._background.append(loop)

    @property
    def pool(self) -> asyncpg.Pool:
        if self.current_pool is None:
            raise RuntimeError(f"{self.name}: database pool is not open (service not started)")
        return self.current_pool

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
        self.consumer.restart()
        await self.check_migrated()
        await self.declare_topology()
        self.current_pool = await create_pool(self.settings.database_url, min_size=2,
                                              max_size=self.settings.db_pool_size)

    async def started(self) -> None:
        """After the broker starts: relay and background loops running."""
        self.consumer.all_started()
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
        await self.consumer.stop()
        if self.relay:
            await self.relay.stop(timeout=budget)
        if self.publisher:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.publisher.close(), budget)
        if self.current_pool is not None:
            pool, self.current_pool = self.current_pool, None
            try:
                await asyncio.wait_for(pool.close(), budget)
            except TimeoutError:
                log.warning("%s: database connections still busy at shutdown; closing them",
                            self.name)
                pool.terminate()
