"""Group commit: many in-flight messages share one transaction.

Each message's work is a function of a connection that does all of that message's writes
(inbox row, state, outbox). Concurrent handlers hand their work to ``GroupCommit.run``; a
single worker runs whatever is queued (up to ``max_batch``) in one transaction and commits
once, which amortises the commit's WAL flush across the batch. If anything in a batch fails,
the batch is rolled back and each item re-runs in a transaction of its own, so one bad
message never takes the others down with it. A handler returns (and its message is acked)
only after its own work is committed.

With an inbox table, each item may carry its event id: the batch records every id in one
statement at the start of the transaction, and tells each item's work whether its event is
new (``first``) or was handled before, instead of a round trip per item.

Each item's work receives its ``Batch``: the shared connection, and a hook to *defer* a
write to the end of the batch (``Batch.defer``): the rows the batch's items defer to one table
go in one round trip, just before the commit. Reads made through the batch (``Batch.fetch``,
``fetchrow``, ``fetchval``) write whatever was deferred first, so they see every row deferred
so far: code that reads a table whose writes are deferred takes the ``Batch``, not the
connection, and cannot forget. ``Batch(conn)`` outside a group commit makes every deferred
write at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

log = logging.getLogger(__name__)
T = TypeVar("T")
# An item's work: its batch, and whether its event is new (always True without an id).
Work = Callable[["Batch", bool], Awaitable[Any]]
InboxKey = tuple[uuid.UUID, str]  # (event id, event type)
Item = tuple[Work, "asyncio.Future[Any]", InboxKey | None]
# Writes the rows deferred to one table, in one round trip.
WriteRows = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[None]]


class Batch:
    """One transaction shared by the items of a batch, with the writes its items deferred
    (by the function that writes them), made before any read through it and before the
    commit. ``Batch(conn)``, outside a group commit, defers nothing: writes are made at once."""

    def __init__(self, conn: asyncpg.Connection, *, deferring: bool = False) -> None:
        self.conn = conn
        self._deferring = deferring
        self._rows: dict[WriteRows, list[Any]] = {}

    async def defer(self, write: WriteRows, row: Any) -> None:
        """Have ``write`` write ``row`` with the other rows of this batch, before it commits
        or is next read (at once outside a group commit)."""
        if self._deferring:
            self._rows.setdefault(write, []).append(row)
        else:
            await write(self.conn, [row])

    async def flush(self) -> None:
        """Write what the items have deferred so far."""
        while self._rows:
            write, rows = next(iter(self._rows.items()))
            del self._rows[write]
            await write(self.conn, rows)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        await self.flush()
        return list(await self.conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        await self.flush()
        return await self.conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        await self.flush()
        return await self.conn.fetchval(query, *args)


class GroupCommit:
    def __init__(self, pool_getter: Callable[[], asyncpg.Pool], max_batch: int = 100, *,
                 inbox_table: str | None = None) -> None:
        self._pool = pool_getter
        self.max_batch = max_batch
        self._inbox_table = inbox_table
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def run(self, work: Callable[[Batch, bool], Awaitable[T]], *,
                  inbox: InboxKey | None = None) -> T:
        """Run ``work`` in a transaction shared with other concurrent work; returns once
        committed (or raises what ``work`` raised). With ``inbox`` (needs ``inbox_table``),
        the event id is recorded in the same transaction and ``work`` learns whether the
        event is new."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self.max_batch <= 1:
            await self._commit([(work, future, inbox)])
            return future.result()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._loop(), name="group-commit")
        self._queue.put_nowait((work, future, inbox))
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
            _, future, _ = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("group commit stopped"))

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [item for item in batch if not item[1].cancelled()]
            if live:
                await self._commit(live)

    async def _firsts(self, conn: asyncpg.Connection, batch: list[Item]) -> list[bool]:
        """Record the batch's event ids in the inbox in one statement; for each item, whether
        its event is new (an id delivered twice in one batch is new for its first item only)."""
        keys = [inbox for _, _, inbox in batch if inbox is not None]
        new: set[uuid.UUID] = set()
        if keys:
            if self._inbox_table is None:
                raise RuntimeError("an inbox key was given, but no inbox table")
            rows = await conn.fetch(
                f"INSERT INTO {self._inbox_table} (event_id, event_type)"
                " SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT DO NOTHING"
                " RETURNING event_id", [k[0] for k in keys], [k[1] for k in keys])
            new = {r[0] for r in rows}
        firsts = []
        for _, _, inbox in batch:
            first = inbox is None or inbox[0] in new
            if first and inbox is not None:
                new.discard(inbox[0])
            firsts.append(first)
        return firsts

    async def _commit(self, batch: list[Item]) -> None:
        try:
            async with self._pool().acquire() as conn:
                shared = Batch(conn, deferring=True)
                async with conn.transaction():
                    firsts = await self._firsts(conn, batch)
                    results = []
                    for (work, _, _), first in zip(batch, firsts, strict=True):
                        results.append(await work(shared, first))
                        # An item whose writes are all deferred never waits on the
                        # database: give the loop a turn between items, as a write
                        # would, so that the other lane's batch is not kept waiting.
                        # (Every millisecond instead was not enough: in
                        # test_lanes.py the serious complaint's concern was then
                        # seen after 230-520 routine items, not 4.)
                        await asyncio.sleep(0)
                    await shared.flush()
        except asyncio.CancelledError:
            for _, future, _ in batch:
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
        for (_, future, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
