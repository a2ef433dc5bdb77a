"""Group commit against the real database: one inbox statement per batch, each event new once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from shared.db import migrate
from shared.groupcommit import Batch, GroupCommit, UrgentFirst
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def inbox(db: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[str]:
    name = f"gc_{uuid.uuid4().hex[:8]}"
    async with db.acquire() as conn:
        await migrate(conn, name, tmp_path)
    yield f'"{name}".inbox'
    await db.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.mark.parametrize("max_batch", [100, 1])
async def test_an_event_is_new_once_within_a_batch_and_across_batches(
        db: asyncpg.Pool, inbox: str, max_batch: int) -> None:
    commits = GroupCommit(lambda: db, max_batch, inbox_table=inbox)
    seen_before, twice, once = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await db.execute(f"INSERT INTO {inbox} (event_id, event_type) VALUES ($1, 'x.v1')",
                     seen_before)
    calls: list[tuple[uuid.UUID, bool]] = []

    def work_for(event_id: uuid.UUID):  # type: ignore[no-untyped-def]
        async def work(batch: Batch, first: bool) -> bool:
            calls.append((event_id, first))
            return first
        return work

    ids = [seen_before, twice, once, twice]
    results = await asyncio.gather(*(commits.run(work_for(i), inbox=(i, "x.v1")) for i in ids))
    await commits.stop()
    assert results[0] is False, "handled before: a duplicate"
    assert results[2] is True
    assert sorted([results[1], results[3]]) == [False, True], "the same event twice: new once"
    assert sorted(calls) == sorted(zip(ids, results, strict=True))
    assert await db.fetchval(f"SELECT count(*) FROM {inbox}") == 3


async def test_a_failed_batch_is_retried_item_by_item_and_records_nothing_of_the_failure(
        db: asyncpg.Pool, inbox: str) -> None:
    commits = GroupCommit(lambda: db, 100, inbox_table=inbox)
    good, bad = uuid.uuid4(), uuid.uuid4()

    async def fine(batch: Batch, first: bool) -> str:
        return "ok"

    async def broken(batch: Batch, first: bool) -> str:
        raise ValueError("handler failed")

    results = await asyncio.gather(commits.run(fine, inbox=(good, "x.v1")),
                                   commits.run(broken, inbox=(bad, "x.v1")),
                                   return_exceptions=True)
    await commits.stop()
    assert results[0] == "ok" and isinstance(results[1], ValueError)
    stored = {r[0] for r in await db.fetch(f"SELECT event_id FROM {inbox}")}
    assert stored == {good}, "the failed event can be delivered again and handled"


async def test_deferred_rows_go_in_one_write_before_the_commit_and_reads_see_them(
        db: asyncpg.Pool, inbox: str) -> None:
    table = inbox.replace(".inbox", ".deferred_rows")
    await db.execute(f"CREATE TABLE {table} (n int PRIMARY KEY CHECK (n >= 0))")
    writes: list[list[int]] = []

    async def write(conn: asyncpg.Connection, rows: Sequence[int]) -> None:
        writes.append(list(rows))
        await conn.executemany(f"INSERT INTO {table} (n) VALUES ($1)", [(n,) for n in rows])

    commits = GroupCommit(lambda: db, 100, inbox_table=inbox)

    def item(n: int, read: bool = False):  # type: ignore[no-untyped-def]
        async def work(batch: Batch, first: bool) -> int | None:
            await batch.defer(write, n)
            if read:  # a read through the batch writes what was deferred first
                return int(await batch.fetchval(f"SELECT count(*) FROM {table}"))
            return None
        return work

    seen = await asyncio.gather(*(commits.run(item(n, read=n == 3)) for n in range(6)))
    assert seen[3] == 4, "the reader saw the rows deferred before it, its own included"
    assert writes == [[0, 1, 2, 3], [4, 5]], "one write up to the read, one before the commit"
    assert await db.fetchval(f"SELECT count(*) FROM {table}") == 6

    # A deferred row that fails its write fails only its own item: the batch is rolled back
    # and each item re-runs alone.
    results = await asyncio.gather(*(commits.run(item(n)) for n in (10, -1, 11)),
                                   return_exceptions=True)
    await commits.stop()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], asyncpg.CheckViolationError)
    assert sorted(r[0] for r in await db.fetch(f"SELECT n FROM {table}")) == [
        0, 1, 2, 3, 4, 5, 10, 11]

    # Outside a batch, a deferred write is made at once.
    async with db.acquire() as conn:
        await Batch(conn).defer(write, 20)
    assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE n = 20") == 1


async def test_a_routine_batch_gives_way_between_items_to_urgent_work_in_hand(
        db: asyncpg.Pool, inbox: str) -> None:
    """An urgent event that arrives while a routine batch is under way commits before the
    routine batch's next item runs (one event loop: without the precedence, every round
    trip of the urgent transaction lets the routine batch's items run first)."""
    priority = UrgentFirst(max_wait=60)
    routine = GroupCommit(lambda: db, 100, inbox_table=inbox, priority=priority)
    urgent = GroupCommit(lambda: db, 100, inbox_table=inbox, priority=priority, urgent=True)
    order: list[str] = []
    urgent_done: list[asyncio.Task[str]] = []

    async def urgent_work(batch: Batch, first: bool) -> str:
        await batch.conn.execute("SELECT 1")  # a round trip of its own
        order.append("urgent")
        return "urgent"

    async def handle_urgent() -> str:
        with priority.urgent():
            result = await urgent.run(urgent_work, inbox=(uuid.uuid4(), "x.v1.serious"))
            order.append("urgent committed")
            return result

    def routine_work(n: int):  # type: ignore[no-untyped-def]
        async def work(batch: Batch, first: bool) -> int:
            order.append(f"routine {n}")
            if n == 2:  # the urgent event arrives during the routine batch
                urgent_done.append(asyncio.create_task(handle_urgent()))
            return n
        return work

    results = await asyncio.gather(*(routine.run(routine_work(n), inbox=(uuid.uuid4(), "x.v1"))
                                     for n in range(20)))
    assert results == list(range(20))
    assert await urgent_done[0] == "urgent"
    await routine.stop()
    await urgent.stop()
    assert order.index("urgent committed") < order.index("routine 3"), order
    assert order[:3] == ["routine 0", "routine 1", "routine 2"]


async def test_a_routine_batch_goes_on_while_urgent_work_waits_for_its_connection(
        settings: Settings, inbox: str) -> None:
    """With every pool connection held by a routine batch, the urgent work waits for the
    batch's commit: the routine batch must not wait for the urgent work meanwhile."""
    async with asyncpg.create_pool(settings.database_url, min_size=1, max_size=1) as one:
        priority = UrgentFirst(max_wait=60)
        routine = GroupCommit(lambda: one, 100, inbox_table=inbox, priority=priority)
        urgent = GroupCommit(lambda: one, 100, inbox_table=inbox, priority=priority,
                             urgent=True)
        order: list[str] = []
        urgent_done: list[asyncio.Task[None]] = []

        async def urgent_work(batch: Batch, first: bool) -> None:
            order.append("urgent")

        async def handle_urgent() -> None:
            with priority.urgent():
                await urgent.run(urgent_work, inbox=(uuid.uuid4(), "x.v1.serious"))

        def routine_work(n: int):  # type: ignore[no-untyped-def]
            async def work(batch: Batch, first: bool) -> None:
                order.append(f"routine {n}")
                if n == 2:
                    urgent_done.append(asyncio.create_task(handle_urgent()))
            return work

        await asyncio.wait_for(asyncio.gather(*(
            routine.run(routine_work(n), inbox=(uuid.uuid4(), "x.v1")) for n in range(10))), 30)
        await asyncio.wait_for(urgent_done[0], 30)
        await routine.stop()
        await urgent.stop()
    assert order == [f"routine {n}" for n in range(10)] + ["urgent"]

