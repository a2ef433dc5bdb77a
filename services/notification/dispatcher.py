"""Sends recorded notifications: at once when woken, retried with backoff, never lost.

A notification row is locked (``FOR UPDATE SKIP LOCKED``) while it is being sent, so
replicas never send the same one concurrently. If the process dies after the SMTP server
accepted the message but before the row is marked sent, the message is sent again on
restart, with the same Message-ID: that window is the only source of a second copy.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import asyncpg

from services.notification import store
from services.notification.channels import DeliveryError, EmailChannel
from shared.events import NotificationFailed
from shared.runtime import ServiceRuntime
from shared.wakeup import drain_on_notify

log = logging.getLogger(__name__)

Renderer = Callable[[asyncpg.Record], EmailMessage]


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's formula)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


class Dispatcher:
    def __init__(self, runtime: ServiceRuntime, channel: EmailChannel, render: Renderer,
                 batch_size: int = 20) -> None:
        self.runtime = runtime
        self.channel = channel
        self.render = render
        self.batch_size = batch_size

    async def dispatch_due(self) -> int:
        """Send one batch of due notifications; returns how many were attempted."""
        settings = self.runtime.settings
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            rows = await store.claim_due(conn, self.batch_size)
            if not rows:
                return 0
            results = await asyncio.gather(*(self._send(row) for row in rows))
            for row, error in zip(rows, results, strict=True):
                attempt = row["attempts"] + 1
                if error is None:
                    await store.mark(conn, row["notification_id"], status="sent",
                                     attempt=attempt, outcome="sent", detail=None)
                    log.info("sent %s %s to %s", row["event_type"], row["notification_id"],
                             row["recipient"])
                elif error.permanent or attempt >= settings.notification_max_attempts:
                    await store.mark(conn, row["notification_id"], status="failed",
                                     attempt=attempt, outcome="failed", detail=str(error))
                    await self.runtime.outbox(conn).add(NotificationFailed(
                        notification_id=row["notification_id"],
                        source_event_id=row["source_event_id"], channel=row["channel"],
                        recipient=row["recipient"], attempts=attempt, last_error=str(error)))
                    log.error("notification %s to %s failed for good after %d attempts: %s",
                              row["notification_id"], row["recipient"], attempt, error)
                else:
                    delay = backoff_delay(attempt, settings.notification_backoff_base,
                                          settings.notification_backoff_cap)
                    await store.mark(conn, row["notification_id"], status="pending",
                                     attempt=attempt, outcome="retry", detail=str(error),
                                     next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay))
                    log.warning("notification %s to %s failed (attempt %d), retry in %.1fs: %s",
                                row["notification_id"], row["recipient"], attempt, delay, error)
        return len(rows)

    async def _send(self, row: asyncpg.Record) -> DeliveryError | None:
        try:
            await self.channel.send(self.render(row))
        except DeliveryError as exc:
            return exc
        except Exception as exc:  # a rendering bug must not block the other rows
            log.exception("could not build notification %s", row["notification_id"])
            return DeliveryError(f"{type(exc).__name__}: {exc}", permanent=True)
        return None

    async def run(self) -> None:
        """Wake on NOTIFY, or every second for retries that have come due."""
        await drain_on_notify(self.runtime.pool, store.DISPATCH_CHANNEL, self.dispatch_due,
                              batch_size=self.batch_size, poll_interval=1.0,
                              name="notification dispatcher")
