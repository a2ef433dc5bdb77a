"""Publish a stream to intake as a provider feed would: persistent, confirmed, pipelined.

Survives a broker restart: what was not confirmed is published again, with the same
message id, so intake treats it as the same submission."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import aio_pika
import aiormq
from pamqp import commands as spec

from shared.outbox import PERSISTENT, write_frames
from tools.stream import Item

log = logging.getLogger(__name__)


def message_id(run: str, index: int) -> str:
    return f"{run}-{index:09d}"


async def publish_items(items: Sequence[Item], *, url: str, namespace: str, run: str,
                        user_id: str = "guest", window: int = 500,
                        rate: float | None = None,
                        progress: Callable[[int], None] | None = None,
                        give_up_after: float = 120.0) -> float:
    """Publish every item; returns the seconds it took. ``rate`` caps messages per second."""
    started = time.perf_counter()
    done = 0
    last_progress = time.monotonic()
    while done < len(items):
        if time.monotonic() - last_progress > give_up_after:
            raise TimeoutError(f"no progress for {give_up_after:.0f}s at item {done}")
        try:
            connection = await aio_pika.connect(url, timeout=10)
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            log.warning("broker unreachable (%r); retrying", exc)
            await asyncio.sleep(1)
            continue
        try:
            async with connection:
                channel = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
                exchange = f"{namespace}.submissions"
                await channel.get_exchange(exchange, ensure=True)
                raw = await channel.get_underlay_channel()
                while done < len(items):
                    chunk = range(done, min(done + window, len(items)))
                    # A window's frames written at once, confirms in flight (write_frames):
                    # a message at a time, the publisher cost the machine it measures about
                    # as much CPU as a service (BENCHMARKS.md).
                    confirms = await write_frames(raw, [
                        (exchange, f"submission.{items[i].kind}.v1", items[i].raw(), True,
                         spec.Basic.Properties(
                             content_type="application/json", user_id=user_id,
                             message_id=message_id(run, i), delivery_mode=PERSISTENT))
                        for i in chunk])
                    for confirm in await asyncio.gather(*confirms, return_exceptions=True):
                        if isinstance(confirm, BaseException):
                            raise confirm
                    done = chunk.stop
                    last_progress = time.monotonic()
                    if progress:
                        progress(done)
                    if rate:
                        ahead = done / rate - (time.perf_counter() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
        except (TimeoutError, aiormq.exceptions.AMQPError,
                aiormq.exceptions.ChannelInvalidStateError, OSError) as exc:
            # A broker restart surfaces as a closed channel or connection: resume.
            log.warning("publishing interrupted at %d (%r); resuming", done, exc)
            await asyncio.sleep(1)
    return time.perf_counter() - started
