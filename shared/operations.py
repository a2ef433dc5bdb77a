"""What an operator asks of a running service: is it ready, its gauges, its dead letters.

Read by the HTTP surface's standard routes (``/ready``, ``/metrics``, ``/v1/dead-letters``:
shared/http.py) and by the workspace's operations pages. Handed the parts it reads (a pool
getter, the broker, whether the service is consuming, its relay) by shared/runtime.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import asyncpg
from faststream.rabbit import RabbitBroker

from shared import dead_letters
from shared.metrics import Metrics
from shared.outbox import OutboxRelay
from shared.settings import Settings
from shared.topology import Subscription

log = logging.getLogger(__name__)

# A service-specific gauge's refresh, on a connection of the scrape.
GaugeRefresh = Callable[[asyncpg.Connection], Awaitable[None]]


class Operations:
    """Readiness, gauges and dead-letter queues of one service process."""

    def __init__(self, name: str, schema: str, settings: Settings, metrics: Metrics,
                 subscriptions: list[Subscription], *, pool: Callable[[], asyncpg.Pool],
                 broker: RabbitBroker, consuming: Callable[[], bool],
                 relay: Callable[[], OutboxRelay | None]) -> None:
        self.name = name
        self.schema = schema
        self.settings = settings
        self.metrics = metrics
        self.subscriptions = subscriptions  # the handler table's list, as it grows
        self._pool = pool
        self._broker = broker
        self._consuming = consuming
        self._relay = relay
        # Service-specific gauges, refreshed from the database when /metrics is scraped.
        self.gauge_refreshers: list[GaugeRefresh] = []

    async def readiness(self) -> dict[str, bool]:
        relay = self._relay()
        checks = {"consuming": self._consuming(), "database": False, "broker": False,
                  # The outbox relay publishes (or parks) what is committed: a relay stuck on
                  # the same rows is not ready, whatever the connections say.
                  "relay": relay is not None and not relay.stalled()}
        try:
            checks["database"] = await self._pool().fetchval("SELECT true", timeout=2) is True
        except Exception:
            log.debug("readiness: database check failed", exc_info=True)
        try:
            checks["broker"] = await self._broker.ping(timeout=2)
        except Exception:
            log.debug("readiness: broker check failed", exc_info=True)
        return checks

    async def refresh_gauges(self) -> None:
        """Outbox backlog and age, dead-letter depth and the service's own gauges."""
        try:
            async with self._pool().acquire() as conn:
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
                "queues": await dead_letters.with_errors(self._pool(), self.schema, queues)}
