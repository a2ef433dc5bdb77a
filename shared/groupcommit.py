"""Group commit: many in-flight messages share one transaction.

``Batcher`` is the one batcher of carewatch: concurrent callers hand it an item each
(``Batcher.run``); whatever has gathered (up to ``max_batch``) goes to its ``commit`` function
as one batch, while the items arriving meanwhile gather into the next one, so batches grow
with the load and a lone item is never kept waiting. If a batch fails, each of its items is
committed alone, so one bad message never takes the others down with it. A caller returns
(and its message is acked) only after its own item is committed.

Two kinds of ``commit`` run on it:

- ``GroupCommit``: each message's work is a function of a connection that does all of that
  message's writes (inbox row, state, outbox); the works of a batch run one after another in
  one transaction that commits once, which amortises the commit's WAL flush across the batch
  (quality-monitor, escalation, notification, workspace).
- a set-based handler that takes the whole batch and writes it with one statement per table
  (intake's ``Admissions.admit_many``, see ``services/intake/app.py``).

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
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, cast

import asyncpg

log = logging.getLogger(__name__)
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its result
# An item's work: its batch, and whether its event is new (always True without an id).
Work = Callable[["Batch", bool], Awaitable[Any]]
InboxKey = tuple[uuid.UUID, str]  # (event id, event type)
# Writes the rows deferred to one table, in one round trip.
WriteRows = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[None]]


class UrgentFirst:
    """The urgent lane's precedence over a process's routine work, on one event loop.

    The lanes have queues, consumers and group commits of their own, but one event loop:
    every await of an urgent delivery's work (each round trip, its commit) would otherwise
    wait its turn behind whatever routine work is ready (a batch's next item, the next
    routine delivery), and under load those turns add up to hundreds of milliseconds per
    service. While an urgent delivery is in hand (``urgent``), a routine group commit stops
    between its items (``give_way``) until none is. Only the batches wait (a committer or
    two), not each of the hundreds of prefetched routine deliveries, which would all be
    woken after every urgent one.

    Routine work goes on while urgent work waits for a pool connection (``connecting``): a
    routine batch stopped between items holds one, and only its commit gives it back. A
    routine turn waits ``max_wait`` seconds at most, so routine work is slowed, never
    stopped, by an urgent lane that does not empty (a bulk load of complaints), or by an
    urgent transaction that waits for a row a stopped routine transaction holds (the lanes'
    work locks different keys: this is a backstop)."""

    def __init__(self, max_wait: float = 0.25) -> None:
        self.max_wait = max_wait
        # urgent deliveries in hand, and those of them waiting for a pool connection
        self._count = {"busy": 0, "connecting": 0}
        # Set when routine work may go on again; a fresh one each time it stops, made on
        # the running loop.
        self._go: asyncio.Event | None = None

    @property
    def busy(self) -> bool:
        """Whether an urgent delivery is in hand."""
        return self._count["busy"] > 0

    def _stopped(self) -> bool:
        return self._count["busy"] > 0 and not self._count["connecting"]

    def _update(self) -> None:
        if self._stopped():
            if self._go is None or self._go.is_set():
                self._go = asyncio.Event()
        elif self._go is not None:
            self._go.set()

    @contextlib.contextmanager
    def _counting(self, what: str) -> Iterator[None]:
        self._count[what] += 1
        self._update()
        try:
            yield
        finally:
            self._count[what] -= 1
            self._update()

    def urgent(self) -> contextlib.AbstractContextManager[None]:
        """An urgent delivery in hand, from its handling to its commit."""
        return self._counting("busy")

    def connecting(self) -> contextlib.AbstractContextManager[None]:
        """Urgent work waiting for a pool connection: routine work goes on meanwhile."""
        return self._counting("connecting")

    async def give_way(self) -> None:
        """Routine work's turn: at once unless urgent work is in hand (and has its
        connection), else once none is (or after ``max_wait``)."""
        go = self._go
        if not self._stopped() or go is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.max_wait):  # no task of its own, as wait_for makes
                await go.wait()


class Batcher(Generic[I, R]):
    """Commits the items handed to ``run`` concurrently in batches of up to ``max_batch``:
    ``commit(items)`` returns one result per item, in order. Up to ``committers`` batches
    commit at once (a second one gathers and runs while the first waits on the database)."""

    def __init__(self, commit: Callable[[list[I]], Awaitable[list[R]]], max_batch: int = 100,
                 *, committers: int = 1, name: str = "group-commit") -> None:
        self._commit_items = commit
        self.max_batch = max_batch
        self._committers = committers
        self._name = name
        self._active = 0
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def run(self, item: I) -> R:
        """Commit ``item`` with the others handed in meanwhile; its result once committed
        (or what its commit raised)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if self.max_batch <= 1:
            await self._commit([(item, future)])
            return future.result()
        self._waiting.append((item, future))
        if self._active < self._committers:
            self._active += 1
            task = asyncio.create_task(self._drain(), name=self._name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def stop(self) -> None:
        """Cancel the batches under way (their transactions roll back); whoever waits on an
        item not committed gets an error."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        waiting, self._waiting = self._waiting, []
        for _, future in waiting:
            _settle(future, RuntimeError("group commit stopped"))

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let the callers already scheduled join this batch
            while self._waiting:
                batch = self._waiting[:self.max_batch]
                del self._waiting[:self.max_batch]
                live = [entry for entry in batch if not entry[1].cancelled()]
                if live:
                    await self._commit(live)
        finally:
            self._active -= 1

    async def _commit(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            results = await self._commit_items([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                _settle(future, RuntimeError("group commit stopped"))
            raise
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            log.debug("batch of %d failed (%r); committing its items one by one", len(batch),
                      exc)
            for entry in batch:
                await self._commit([entry])
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[R], result: R | BaseException) -> None:
    if future.done():  # the waiting caller was cancelled (shutdown)
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


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
    """Runs each message's work in a transaction shared with the other works of its batch
    (on the ``Batcher``), recording their event ids in ``inbox_table`` first."""

    def __init__(self, pool_getter: Callable[[], asyncpg.Pool], max_batch: int = 100, *,
                 inbox_table: str | None = None, priority: UrgentFirst | None = None,
                 urgent: bool = False) -> None:
        self._pool = pool_getter
        self._inbox_table = inbox_table
        # With ``priority``, a routine group commit gives way to urgent work in hand between
        # items; an urgent one lets routine work go on while it waits for a connection.
        self._priority = priority
        self._urgent = urgent
        self._batcher: Batcher[tuple[Work, InboxKey | None], Any] = Batcher(
            self._commit, max_batch)

    @property
    def max_batch(self) -> int:
        return self._batcher.max_batch

    @property
    def batches(self) -> int:
        return self._batcher.batches

    @property
    def items(self) -> int:
        return self._batcher.items

    async def run(self, work: Callable[[Batch, bool], Awaitable[T]], *,
                  inbox: InboxKey | None = None) -> T:
        """Run ``work`` in a transaction shared with other concurrent work; returns once
        committed (or raises what ``work`` raised). With ``inbox`` (needs ``inbox_table``),
        the event id is recorded in the same transaction and ``work`` learns whether the
        event is new."""
        return cast(T, await self._batcher.run((work, inbox)))

    async def stop(self) -> None:
        await self._batcher.stop()

    async def _firsts(self, conn: asyncpg.Connection,
                      batch: list[tuple[Work, InboxKey | None]]) -> list[bool]:
        """Record the batch's event ids in the inbox in one statement; for each item, whether
        its event is new (an id delivered twice in one batch is new for its first item only)."""
        keys = [inbox for _, inbox in batch if inbox is not None]
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
        for _, inbox in batch:
            first = inbox is None or inbox[0] in new
            if first and inbox is not None:
                new.discard(inbox[0])
            firsts.append(first)
        return firsts

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pool connection for a batch; the urgent lane's, when every connection is taken,
        lets routine work go on while it waits for one (UrgentFirst.connecting)."""
        pool = self._pool()
        if self._priority is None or not self._urgent or pool.get_idle_size() \
                or pool.get_size() < pool.get_max_size():
            # A connection to be had without routine work's commits (the usual case).
            async with pool.acquire() as conn:
                yield conn
            return
        with self._priority.connecting():
            conn = await pool.acquire()
        try:
            yield conn
        finally:
            await pool.release(conn)

    async def _commit(self, batch: list[tuple[Work, InboxKey | None]]) -> list[Any]:
        async with self._connection() as conn:
            shared = Batch(conn, deferring=True)
            async with conn.transaction():
                firsts = await self._firsts(conn, batch)
                results = []
                for (work, _), first in zip(batch, firsts, strict=True):
                    results.append(await work(shared, first))
                    # An item whose writes are all deferred never waits on the
                    # database: give the loop a turn between items, as a write
                    # would, so that the other lane's batch is not kept waiting.
                    # (Every millisecond instead was not enough: in
                    # test_lanes.py the serious complaint's concern was then
                    # seen after 230-520 routine items, not 4.) A routine batch
                    # then waits while urgent work is in hand (UrgentFirst).
                    await asyncio.sleep(0)
                    if self._priority is not None and not self._urgent:
                        await self._priority.give_way()
                await shared.flush()
        return results
