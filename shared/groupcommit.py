"""Group commit: many in-flight messages share one transaction.

Each message's work is a function of a connection that does all of that message's writes
(inbox row, state, outbox). Concurrent handlers hand their work to ``GroupCommit.run``; a
single worker runs whatever is queued (up to ``max_batch``) in one transaction and commits
once, which amortises the commit's WAL flush across the batch. If anything in a batch fails,
the batch is rolled back and each item re-runs in a transaction of its own, so one bad
message never takes the others down with it. A handler returns (and its message is acked)
only after its own work is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

log = logging.getLogger(__name__)
T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[Any]]


class GroupCommit:
    def __init__(self, pool_getter: Callable[[], asyncpg.Pool], max_batch: int = 100) -> None:
        self._pool = pool_getter
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Work, asyncio.Future[Any]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in a transaction shared with other concurrent work; returns once
        committed (or raises what ``work`` raised)."""
        if self.max_batch <= 1:
            async with self._pool().acquire() as conn, conn.transaction():
                return await work(conn)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._loop(), name="group-commit")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((work, future))
        return await future

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("group commit stopped"))

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(w, f) for w, f in batch if not f.cancelled()]
            if live:
                await self._commit(live)

    async def _commit(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        try:
            async with self._pool().acquire() as conn:
                async with conn.transaction():
                    results = [await work(conn) for work, _ in batch]
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("group commit stopped"))
            raise
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.debug("batch of %d failed (%r); re-running its items one by one", len(batch),
                      exc)
            for item in batch:
                await self._commit([item])
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
