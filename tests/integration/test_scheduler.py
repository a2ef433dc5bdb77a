"""The shared durable scheduler against the real database: a due job runs once across
replicas, when the injected clock says it is due, and a failing job is retried with the
policy's backoff."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared import scheduler
from shared.db import migrate
from shared.retry import Backoff
from shared.scheduler import Again, Scheduler

pytestmark = pytest.mark.integration

T0 = datetime(2031, 3, 4, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def schema(db: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[str]:
    name = f"sched_{uuid.uuid4().hex[:8]}"
    async with db.acquire() as conn:
        await migrate(conn, name, tmp_path)
    yield name
    await db.execute(f'DROP SCHEMA "{name}" CASCADE')


async def _add(db: asyncpg.Pool, schema: str, due_at: datetime, n: int = 1,
               name: str = "work") -> None:
    async with db.acquire() as conn:
        for i in range(n):
            await scheduler.schedule(conn, schema, name=name, due_at=due_at,
                                     payload={"i": i}, dedupe_key=f"{name}:{i}")


async def test_a_claimed_job_is_skipped_by_a_second_replica_on_another_connection(
        db: asyncpg.Pool, schema: str) -> None:
    await _add(db, schema, T0)
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    async def slow(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> str:
        calls.append(row["payload"]["i"])
        started.set()
        await release.wait()
        return "done"

    first = Scheduler(schema, lambda: db, {"work": slow}, Clock(T0))
    second = Scheduler(schema, lambda: db, {"work": slow}, Clock(T0))
    running = asyncio.ensure_future(first.run_due())
    await started.wait()  # the first replica holds the row, locked in its transaction
    assert await second.run_due() == [], "the second replica skips the locked job"
    release.set()
    assert await running == ["work"]
    assert calls == [0]
    row = await db.fetchrow(f'SELECT done_at, outcome, attempts FROM "{schema}".jobs')
    assert (row["done_at"], row["outcome"], row["attempts"]) == (T0, "done", 1)
    assert await second.run_due() == [], "done: not run again"


async def test_replicas_ticking_together_run_each_due_job_exactly_once(
        db: asyncpg.Pool, schema: str) -> None:
    await _add(db, schema, T0, n=30)
    calls: list[int] = []

    async def work(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> str:
        calls.append(row["payload"]["i"])
        await asyncio.sleep(0)  # let the other replicas claim meanwhile
        return "done"

    replicas = [Scheduler(schema, lambda: db, {"work": work}, Clock(T0)) for _ in range(3)]
    ran = await asyncio.gather(*(r.run_due() for r in replicas))
    assert sorted(calls) == list(range(30)), "each job once, none twice"
    assert sum(len(r) for r in ran) == 30
    assert await db.fetchval(
        f'SELECT count(*) FROM "{schema}".jobs WHERE outcome = \'done\' AND attempts = 1') == 30


async def test_a_job_runs_when_the_injected_clock_reaches_its_due_time(
        db: asyncpg.Pool, schema: str) -> None:
    await _add(db, schema, T0 + timedelta(hours=2))
    clock = Clock(T0)
    ran_at: list[datetime] = []

    async def work(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> str:
        ran_at.append(now)
        return "done"

    tick = Scheduler(schema, lambda: db, {"work": work}, clock)
    assert await tick.run_due() == []
    clock.now = T0 + timedelta(hours=2) - timedelta(microseconds=1)
    assert await tick.run_due() == [], "not due a microsecond early"
    clock.now = T0 + timedelta(hours=2)
    assert await tick.run_due() == ["work"]
    assert ran_at == [clock.now], "the handler is given the clock's time"
    assert await tick.run_due(T0 + timedelta(days=1)) == [], "done once"


async def test_a_failing_job_is_retried_with_the_policys_backoff_then_kept_as_failed(
        db: asyncpg.Pool, schema: str) -> None:
    await _add(db, schema, T0)
    policy = Backoff(first=30.0, cap=3600.0)
    attempts: list[datetime] = []

    async def broken(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> str:
        await conn.execute(f'INSERT INTO "{schema}".jobs (name, due_at) VALUES (\'side\', $1)',
                           now)  # undone with the failure: a job's savepoint is its own
        attempts.append(now)
        raise ValueError("the rota is empty")

    tick = Scheduler(schema, lambda: db, {"work": broken}, Clock(T0), retry=policy,
                     max_attempts=3)
    now = T0
    for attempt in (1, 2):
        assert await tick.run_due(now) == ["work"]
        row = await db.fetchrow(f'SELECT * FROM "{schema}".jobs')
        assert row["due_at"] == now + policy.after(attempt), f"attempt {attempt}'s backoff"
        assert (row["attempts"], row["done_at"]) == (attempt, None)
        assert row["last_error"] == "ValueError: the rota is empty"
        assert await tick.run_due(row["due_at"] - timedelta(seconds=1)) == [], "not before"
        now = row["due_at"]
    assert policy.after(1) == timedelta(seconds=30) and policy.after(2) == timedelta(minutes=1)
    assert await tick.run_due(now) == ["work"]
    row = await db.fetchrow(f'SELECT * FROM "{schema}".jobs')
    assert (row["outcome"], row["attempts"], row["done_at"]) == ("failed", 3, now)
    assert attempts == [T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=90)]
    assert await db.fetchval(f'SELECT count(*) FROM "{schema}".jobs') == 1
    assert await tick.run_due(now + timedelta(days=30)) == [], "failed for good"


async def test_a_job_that_recovers_is_done_and_a_transient_failure_reruns_at_once(
        db: asyncpg.Pool, schema: str) -> None:
    await _add(db, schema, T0)
    tries: list[str] = []

    async def flaky(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> str:
        tries.append("try")
        if len(tries) == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        if len(tries) == 2:
            raise RuntimeError("the calendar is down")
        return "done"

    tick = Scheduler(schema, lambda: db, {"work": flaky}, Clock(T0))
    assert await tick.run_due() == ["work"]
    assert len(tries) == 2, "the deadlock re-ran the job at once; the error did not"
    row = await db.fetchrow(f'SELECT * FROM "{schema}".jobs')
    assert (row["attempts"], row["due_at"]) == (1, T0 + timedelta(seconds=30))
    assert await tick.run_due(T0 + timedelta(seconds=30)) == ["work"]
    row = await db.fetchrow(f'SELECT * FROM "{schema}".jobs')
    assert (row["outcome"], row["attempts"]) == ("done", 2)


async def test_a_recurring_job_is_due_again_and_keeps_being_retried_after_failures(
        db: asyncpg.Pool, schema: str) -> None:
    fail = [True, True, True]

    async def daily(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> Again:
        if fail and fail.pop():
            raise RuntimeError("not today")
        return Again(now + timedelta(days=1), {"ran": now.isoformat()})

    async def ensure(conn: asyncpg.Connection, now: datetime) -> None:
        await scheduler.ensure(conn, schema, "daily", now)

    tick = Scheduler(schema, lambda: db, {"daily": daily}, Clock(T0), max_attempts=2,
                     retry=Backoff(first=60.0, cap=60.0), before_run=ensure)
    now = T0
    for _ in range(3):  # past max_attempts: a recurring job is never given up
        assert await tick.run_due(now) == ["daily"]
        now += timedelta(minutes=1)
    assert await tick.run_due(now) == ["daily"]
    row = await db.fetchrow(f'SELECT * FROM "{schema}".jobs')
    assert (row["due_at"], row["last_result"], row["attempts"], row["done_at"]) == (
        now + timedelta(days=1), {"ran": now.isoformat()}, 0, None)
    assert await tick.run_due(now + timedelta(hours=23)) == []
    assert await tick.run_due(now + timedelta(days=1)) == ["daily"]
    assert await db.fetchval(f'SELECT count(*) FROM "{schema}".jobs') == 1, "ensured once"


async def test_cancelled_jobs_do_not_run_and_pending_lists_the_rest(
        db: asyncpg.Pool, schema: str) -> None:
    async with db.acquire() as conn:
        assert await scheduler.schedule(conn, schema, name="work", due_at=T0, subject="a",
                                        dedupe_key="k1")
        assert not await scheduler.schedule(conn, schema, name="work", due_at=T0,
                                            dedupe_key="k1"), "deduplicated"
        await scheduler.schedule(conn, schema, name="work", due_at=T0, subject="a")
        await scheduler.schedule(conn, schema, name="work", due_at=T0, dedupe_key="k3")
        await scheduler.schedule(conn, schema, name="work", due_at=T0 + timedelta(1))
        assert await scheduler.cancel_subject(conn, schema, "a", T0, "closed") == 2
        assert await scheduler.cancel(conn, schema, ["k3"], T0, "completed") == 1
        left = await scheduler.pending(conn, schema)
    assert [r["due_at"] for r in left] == [T0 + timedelta(1)]
    calls: list[str] = []

    async def work(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> str:
        calls.append("ran")
        return "done"

    assert await Scheduler(schema, lambda: db, {"work": work}, Clock(T0)).run_due() == []
    assert calls == []


async def test_ensure_brings_a_recurring_job_forward_when_its_interval_shortens(
        db: asyncpg.Pool, schema: str) -> None:
    async with db.acquire() as conn:
        assert await scheduler.ensure(conn, schema, "purge", T0 + timedelta(minutes=10))
        assert not await scheduler.ensure(conn, schema, "purge", T0)
        due = await conn.fetchval(f'SELECT due_at FROM "{schema}".jobs')
        assert due == T0 + timedelta(minutes=10), "a job in place keeps its due time"
        await scheduler.ensure(conn, schema, "purge", T0, not_after=T0 + timedelta(seconds=1))
        assert await conn.fetchval(f'SELECT due_at FROM "{schema}".jobs') == \
            T0 + timedelta(seconds=1)
        await scheduler.ensure(conn, schema, "purge", T0, not_after=T0 + timedelta(hours=1))
        assert await conn.fetchval(f'SELECT due_at FROM "{schema}".jobs') == \
            T0 + timedelta(seconds=1), "never pushed later"



async def test_ensure_leaves_a_failing_recurring_job_to_its_backoff(
        db: asyncpg.Pool, schema: str) -> None:
    """`not_after` brings a job forward (a shorter interval, a clock set back), but not one
    waiting out a failure: a job polled every second must not be retried every second."""
    async def poll(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> Again:
        raise RuntimeError("the mail server is refusing")

    async def ensure(conn: asyncpg.Connection, now: datetime) -> None:
        await scheduler.ensure(conn, schema, "poll", now, not_after=now)

    tick = Scheduler(schema, lambda: db, {"poll": poll}, Clock(T0),
                     retry=Backoff(first=60.0, cap=60.0), before_run=ensure)
    assert await tick.run_due(T0) == ["poll"]
    row = await db.fetchrow(f'SELECT * FROM "{schema}".jobs')
    assert (row["due_at"], row["attempts"]) == (T0 + timedelta(seconds=60), 1)
    assert await tick.run_due(T0 + timedelta(seconds=1)) == [], "its backoff is kept"
    assert await db.fetchval(f'SELECT due_at FROM "{schema}".jobs') == \
        T0 + timedelta(seconds=60)
    assert await tick.run_due(T0 + timedelta(seconds=60)) == ["poll"]


SERVICES = Path(__file__).resolve().parents[2] / "services"


async def _upgrade(db: asyncpg.Pool, service: str, old: int, tmp_path: Path,
                   before: str, *args: object) -> str:
    """Migrate a fresh schema to the service's migrations up to ``old``, run ``before``,
    then migrate to the latest; returns the schema's name."""
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    files = sorted((SERVICES / service / "migrations").glob("*.sql"))
    for f in files:
        if int(f.name[:3]) <= old:
            (tmp_path / f.name).write_text(f.read_text())
    async with db.acquire() as conn:
        await migrate(conn, name, tmp_path)
        await conn.execute(f'SET search_path TO "{name}", public')
        await conn.execute(before, *args)
        await conn.execute("RESET search_path")
        for f in files:
            (tmp_path / f.name).write_text(f.read_text())
        applied = await migrate(conn, name, tmp_path)
    assert [a for a in applied if int(a[:3]) > old], "the upgrade's migrations ran"
    return name


async def test_escalations_schedule_rows_move_to_the_shared_jobs_table(
        db: asyncpg.Pool, tmp_path: Path) -> None:
    concern = uuid.uuid4()
    name = await _upgrade(
        db, "escalation", 4, tmp_path,
        "INSERT INTO schedule (due_at, kind, payload, concern_id, dedupe_key, done_at, outcome,"
        " attempts, last_error) VALUES ($1, 'action_due_soon', '{\"action_id\": \"a\"}', $2,"
        " 'action_due_soon:a', NULL, NULL, 2, 'boom'), ($1, 'ladder_review', '{}', $2, NULL,"
        " $1, 'done', 1, NULL)", T0, concern)
    try:
        jobs = await db.fetch(f'SELECT * FROM "{name}".jobs ORDER BY id')
        assert [(j["name"], j["subject"], j["dedupe_key"], j["done_at"], j["attempts"],
                 j["last_error"], j["payload"]) for j in jobs] == [
            ("action_due_soon", str(concern), "action_due_soon:a", None, 2, "boom",
             {"action_id": "a"}),
            ("ladder_review", str(concern), None, T0, 1, None, {})]
        view = await db.fetch(f'SELECT kind, concern_id, outcome FROM "{name}".schedule'
                              " ORDER BY id")
        assert [tuple(v) for v in view] == [("action_due_soon", concern, None),
                                            ("ladder_review", concern, "done")]
        async with db.acquire() as conn:
            assert await scheduler.schedule(conn, name, name="revisit_due", due_at=T0)
        assert await db.fetchval(f'SELECT max(id) FROM "{name}".jobs') == 3, "ids go on"
    finally:
        await db.execute(f'DROP SCHEMA "{name}" CASCADE')


async def test_the_monitors_schedule_rows_become_recurring_jobs(
        db: asyncpg.Pool, tmp_path: Path) -> None:
    name = await _upgrade(
        db, "quality_monitor", 6, tmp_path,
        "INSERT INTO schedule (job, due_at, last_run_at, last_result) VALUES"
        " ('month_close', $1, $1, '{\"month\": \"2031-02\"}')", T0)
    try:
        row = await db.fetchrow(f'SELECT * FROM "{name}".jobs')
        assert (row["name"], row["dedupe_key"], row["recurring"], row["due_at"],
                row["last_result"], row["done_at"]) == (
            "month_close", "month_close", True, T0, {"month": "2031-02"}, None)
        await db.execute(f"UPDATE \"{name}\".schedule SET due_at = $1"
                         " WHERE job = 'month_close'", T0 + timedelta(days=1))
        assert await db.fetchval(f'SELECT due_at FROM "{name}".jobs') == T0 + timedelta(days=1)
    finally:
        await db.execute(f'DROP SCHEMA "{name}" CASCADE')
