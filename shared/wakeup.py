"""One loop for work that is woken by PostgreSQL NOTIFY and drained in batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from shared.retry import Backoff
from shared.scheduler import every

log = logging.getLogger(__name__)

# A failing drain (the database or broker restarting): half a second doubling to ten.
DRAIN_RETRY = Backoff(first=0.5, cap=10.0)


async def drain_on_notify(pool: asyncpg.Pool, channel: str, drain: Callable[[], Awaitable[int]],
                          *, batch_size: int, poll_interval: float, name: str) -> None:
    """Call ``drain`` whenever ``channel`` is notified, at least every ``poll_interval``
    seconds, and again at once while it returns a full batch. Errors are logged and retried
    with backoff (the database or broker may be restarting), on a listening connection taken
    afresh: the loop, its backoff and its cancellation are ``shared.scheduler.every``'s."""
    wake = asyncio.Event()
    listener: asyncpg.Connection | None = None

    def on_notify(*_: object) -> None:
        wake.set()

    async def release() -> None:
        nonlocal listener
        if listener is not None:
            try:
                if not listener.is_closed():
                    await listener.remove_listener(channel, on_notify)
                await pool.release(listener)
            except Exception:
                log.debug("%s: listener release failed", name, exc_info=True)
            listener = None

    async def drain_once() -> None:
        """One drain, then (unless it was a full batch) a wait for the next NOTIFY."""
        nonlocal listener
        if listener is None or listener.is_closed():
            await release()
            listener = await pool.acquire()
            await listener.add_listener(channel, on_notify)
        # Clear before draining: a NOTIFY during the drain wakes the next wait.
        wake.clear()
        if await drain() >= batch_size:
            return
        try:
            await asyncio.wait_for(wake.wait(), poll_interval)
        except TimeoutError:
            pass

    try:
        # The wait is drain_once's own: no interval between drains.
        await every(0.0, drain_once, retry=DRAIN_RETRY, name=name, on_failure=release)
    finally:
        await release()
