"""Sends recorded notifications: at once when woken, retried with backoff, never lost.

Each notification is sent inside its own transaction that holds its row locked
(``FOR UPDATE SKIP LOCKED``): replicas never send the same one concurrently, and the row is
marked in the same transaction as soon as its own send returns. If the process dies during
a send, the lock dies with its connection and the row is due again at once, so nothing is
lost. The one source of a second copy is the window between the server accepting the
message and that commit; the copy carries the same Message-ID (webhooks: the same
``X-Carewatch-Delivery``) so the receiving side can drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import asyncpg

from services.notification import store
from services.notification.channels import Channel, DeliveryError, Outgoing
from shared.events import NotificationFailed
from shared.retry import Backoff
from shared.runtime import ServiceRuntime
from shared.wakeup import drain_on_notify

log = logging.getLogger(__name__)


def send_retry(base: float, cap: float) -> Backoff:
    """A failed send's retry: exponential backoff with full jitter (AWS architecture blog's
    formula), so recipients of one outage are not all retried at once."""
    return Backoff(first=base, cap=cap, full_jitter=True)


class Dispatcher:
    def __init__(self, runtime: ServiceRuntime, channels: Mapping[str, Channel],
                 batch_size: int = 20, concurrency: int = 4) -> None:
        self.runtime = runtime
        self.channels = channels
        self.batch_size = batch_size
        self.concurrency = concurrency

    async def dispatch_due(self) -> int:
        """Send due notifications, ``concurrency`` at a time, up to ``batch_size``;
        returns how many were attempted."""
        share = max(1, self.batch_size // self.concurrency)
        done = await asyncio.gather(*(self._worker(share) for _ in range(self.concurrency)))
        return sum(done)

    async def _worker(self, limit: int) -> int:
        attempted = 0
        while attempted < limit and await self.dispatch_one():
            attempted += 1
        return attempted

    async def dispatch_one(self) -> bool:
        """Claim, send and settle one due notification; False when none is due.

        A shutdown waits for a send under way to be settled: cancelled between the mail
        server's acceptance and the commit, the claim's transaction would roll back and
        another replica would send the same message again."""
        work = asyncio.ensure_future(self._dispatch_one())
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await work
            raise

    async def _dispatch_one(self) -> bool:
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            row = await store.claim_next(conn)
            if row is None:
                return False
            error = await self._send(row)
            await self._settle(conn, row, error)
        return True

    async def _send(self, row: asyncpg.Record) -> DeliveryError | None:
        channel = self.channels.get(row["channel"])
        if channel is None:
            return DeliveryError(f"no channel {row['channel']!r} is configured", permanent=True)
        try:
            await channel.deliver(Outgoing.from_row(row))
        except DeliveryError as exc:
            return exc
        except Exception as exc:  # a rendering bug must not block the other rows
            log.exception("could not build notification %s", row["notification_id"])
            return DeliveryError(f"{type(exc).__name__}: {exc}", permanent=True)
        return None

    async def _settle(self, conn: asyncpg.Connection, row: asyncpg.Record,
                      error: DeliveryError | None) -> None:
        settings = self.runtime.settings
        attempt = row["attempts"] + 1
        if error is None:
            await store.mark(conn, row["notification_id"], status="sent", attempt=attempt,
                             outcome="sent", detail=None)
            log.info("sent %s %s to %s by %s", row["event_type"], row["notification_id"],
                     row["recipient"], row["channel"])
        elif error.permanent or attempt >= settings.notification_max_attempts:
            await store.mark(conn, row["notification_id"], status="failed", attempt=attempt,
                             outcome="failed", detail=str(error))
            await self.runtime.outbox(conn).add(NotificationFailed(
                notification_id=row["notification_id"], source_event_id=row["source_event_id"],
                channel=row["channel"], recipient=row["recipient"], attempts=attempt,
                last_error=str(error)))
            log.error("notification %s to %s failed for good after %d attempts: %s",
                      row["notification_id"], row["recipient"], attempt, error)
        else:
            delay = send_retry(settings.notification_backoff_base,
                               settings.notification_backoff_cap).seconds(attempt)
            await store.mark(conn, row["notification_id"], status="pending", attempt=attempt,
                             outcome="retry", detail=str(error),
                             retry_in=delay)
            log.warning("notification %s to %s failed (attempt %d), retry in %.1fs: %s",
                        row["notification_id"], row["recipient"], attempt, delay, error)

    async def run(self) -> None:
        """Wake on NOTIFY, or every second for retries that have come due."""
        await drain_on_notify(self.runtime.pool, store.DISPATCH_CHANNEL, self.dispatch_due,
                              batch_size=self.batch_size, poll_interval=1.0,
                              name="notification dispatcher")
