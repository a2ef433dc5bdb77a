"""The durable scheduler: every service's time-driven work, kept in PostgreSQL.

Each service schema has a ``jobs`` table (shared migration ``004_jobs.sql``). A job is a row:
the ``name`` of the handler that runs it, when it is due, a JSON ``payload``, what it is
about (``subject``, so the jobs of a closed case can be cancelled together) and an optional
``dedupe_key`` (a second job for the same purpose is not added).

- A **one-off** job (`schedule`) runs once: its handler returns an outcome ("done", or why it
  did nothing) and the row is marked done.
- A **recurring** job (`ensure`, keyed by its name) returns `Again`: when it is next due and
  what it did; the row stays, due again then.

`Scheduler.run_due(now)` claims the rows due by ``now`` one at a time with
``FOR UPDATE SKIP LOCKED``, so replicas ticking at the same moment share the work and never
run a job twice. A handler runs in the transaction that marks its row (a savepoint: a failed
job undoes only itself), so a crash mid-job leaves it to the next tick. Transient failures (a
deadlock, the database restarting) re-run the claim at once (`shared.retry.retry_transient`);
a job that fails is due again after the scheduler's `Backoff` and, after ``max_attempts``, a
one-off job is kept with outcome ``failed`` for an operator to see (a recurring job keeps
being retried: the next month's close must not be lost to this month's error). Nothing is
held in memory: a restart loses nothing.

Time comes from the injected clock; tests call ``run_due`` with the instant they want.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from shared.clock import Clock
from shared.retry import Backoff, is_transient, retry_transient

__all__ = ["Again", "Job", "Scheduler", "cancel", "cancel_subject", "ensure", "every",
           "pending", "schedule"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Again:
    """A recurring job's result: run again at ``at``; ``result`` is kept as ``last_result``.
    ``quiet`` logs the run at debug level (a job polling every second would fill the log)."""

    at: datetime
    result: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False


# A handler: (the claim's connection, the job's row, now) -> an outcome, or `Again`.
Job = Callable[[asyncpg.Connection, asyncpg.Record, datetime], Awaitable["str | Again"]]

# A failing job: 30 s, 1 min, 2 min, ... at most an hour between attempts.
JOB_RETRY = Backoff(first=30.0, cap=3600.0)
# The background loop itself failing (the database down): 1 s doubling to a minute.
LOOP_RETRY = Backoff(first=1.0, cap=60.0)


def _table(schema: str) -> str:
    return f'"{schema}".jobs'


def _count(status: str) -> int:
    return int(status.split()[-1])


async def schedule(conn: asyncpg.Connection, schema: str, *, name: str, due_at: datetime,
                   payload: Mapping[str, Any] | None = None, subject: str | None = None,
                   dedupe_key: str | None = None) -> bool:
    """Add a one-off job (in the caller's transaction). With a ``dedupe_key``, a second job
    for the same purpose is not added (even once the first has run); returns False then."""
    return bool(await conn.fetchval(
        f"INSERT INTO {_table(schema)} (name, due_at, payload, subject, dedupe_key)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedupe_key) DO NOTHING RETURNING true",
        name, due_at, dict(payload or {}), subject, dedupe_key))


async def ensure(conn: asyncpg.Connection, schema: str, name: str, first_due: datetime, *,
                 not_after: datetime | None = None) -> bool:
    """Put the recurring job ``name`` in place, first due at ``first_due``; a job already in
    place keeps its due time (with ``not_after``: unless it is later than that, so a shorter
    interval, or a clock set back, takes effect at once; a job waiting out a failure's backoff
    keeps it). True when it was added now."""
    added = bool(await conn.fetchval(
        f"INSERT INTO {_table(schema)} (name, due_at, dedupe_key, recurring)"
        " VALUES ($1, $2, $1, true) ON CONFLICT (dedupe_key) DO NOTHING RETURNING true",
        name, first_due))
    if not added and not_after is not None:
        await conn.execute(
            f"UPDATE {_table(schema)} SET due_at = $2 WHERE dedupe_key = $1 AND recurring"
            " AND done_at IS NULL AND attempts = 0 AND due_at > $2", name, not_after)
    return added


async def cancel(conn: asyncpg.Connection, schema: str, dedupe_keys: list[str], now: datetime,
                 why: str) -> int:
    """Mark these pending jobs done without running them; returns how many."""
    return _count(await conn.execute(
        f"UPDATE {_table(schema)} SET done_at = $2, outcome = $3"
        " WHERE dedupe_key = ANY($1::text[]) AND done_at IS NULL", dedupe_keys, now,
        f"cancelled: {why}"))


async def cancel_subject(conn: asyncpg.Connection, schema: str, subject: str, now: datetime,
                         why: str) -> int:
    """Mark the pending jobs about ``subject`` done without running them."""
    return _count(await conn.execute(
        f"UPDATE {_table(schema)} SET done_at = $2, outcome = $3"
        " WHERE subject = $1 AND done_at IS NULL", subject, now, f"cancelled: {why}"))


async def pending(conn: asyncpg.Connection, schema: str, subject: str | None = None,
                  limit: int = 200) -> list[asyncpg.Record]:
    """The jobs still to run (about ``subject`` if given), soonest first."""
    return list(await conn.fetch(
        f"SELECT * FROM {_table(schema)} WHERE done_at IS NULL"
        " AND ($1::text IS NULL OR subject = $1) ORDER BY due_at, id LIMIT $2", subject, limit))


class Scheduler:
    """Runs a schema's due jobs by name: when told (``run_due``) or every ``interval``
    seconds for the life of the process (``run``)."""

    def __init__(self, schema: str, pool: Callable[[], asyncpg.Pool], jobs: Mapping[str, Job],
                 clock: Clock, *, interval: float = 15.0, max_attempts: int = 5,
                 retry: Backoff = JOB_RETRY, loop_retry: Backoff = LOOP_RETRY,
                 before_run: Callable[[asyncpg.Connection, datetime], Awaitable[None]]
                 | None = None) -> None:
        self.schema = schema
        self._pool = pool
        self.jobs = jobs
        self.clock = clock
        self.interval = interval
        self.max_attempts = max_attempts
        self.retry = retry
        self.loop_retry = loop_retry
        # Called before each run (e.g. to `ensure` the recurring jobs), on its own connection.
        self.before_run = before_run

    async def run_due(self, now: datetime | None = None) -> list[str]:
        """Run every job due by ``now`` (the clock's time if not given), one transaction per
        job; returns the names of the jobs this replica ran (another may run some of them).
        A job is run at most once per call, even if it makes itself due again at once."""
        at = now or self.clock()
        if self.before_run is not None:
            before = self.before_run
            async with self._pool().acquire() as conn:
                await retry_transient(lambda: before(conn, at), for_seconds=60)
        ran: list[str] = []
        seen: list[int] = []
        while (job := await retry_transient(lambda: self._run_next(at, seen),
                                            for_seconds=60)) is not None:
            ran.append(job)
        return ran

    async def _run_next(self, now: datetime, seen: list[int]) -> str | None:
        async with self._pool().acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT * FROM {_table(self.schema)} WHERE done_at IS NULL AND due_at <= $1"
                " AND id <> ALL($2::bigint[]) ORDER BY due_at, id LIMIT 1"
                " FOR UPDATE SKIP LOCKED", now, seen)
            if row is None:
                return None
            name: str = row["name"]
            handler = self.jobs.get(name)
            try:
                if handler is None:
                    raise LookupError(f"no job named {name!r}")
                async with conn.transaction():  # a savepoint: a failed job undoes only itself
                    result = await handler(conn, row, now)
                    await self._done(conn, row, now, result)
            except Exception as exc:
                if is_transient(exc):
                    raise  # the whole transaction again (a deadlock, the database restarting)
                await self._failed(conn, row, now, exc)
            seen.append(row["id"])
            return name

    async def _done(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime,
                    result: str | Again) -> None:
        if isinstance(result, Again):
            await conn.execute(
                f"UPDATE {_table(self.schema)} SET due_at = $2, last_run_at = $3,"
                " last_result = $4, outcome = 'done', attempts = 0, last_error = NULL"
                " WHERE id = $1", row["id"], result.at, now, result.result)
            log.log(logging.DEBUG if result.quiet else logging.INFO,
                    "ran %s at %s: %s; next at %s", row["name"], now.isoformat(),
                    result.result, result.at.isoformat())
        else:
            await conn.execute(
                f"UPDATE {_table(self.schema)} SET done_at = $2, outcome = $3, last_run_at = $2,"
                " attempts = attempts + 1 WHERE id = $1", row["id"], now, result)
            log.info("job %s %s: %s", row["name"], row["id"], result)

    async def _failed(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime,
                      exc: Exception) -> None:
        attempt = row["attempts"] + 1
        error = f"{type(exc).__name__}: {exc}"[:4000]
        if attempt >= self.max_attempts and not row["recurring"]:
            await conn.execute(
                f"UPDATE {_table(self.schema)} SET done_at = $2, outcome = 'failed',"
                " attempts = $3, last_error = $4, last_run_at = $2 WHERE id = $1",
                row["id"], now, attempt, error)
            log.error("job %s %s failed for good after %d attempts: %s",
                      row["name"], row["id"], attempt, error)
        else:
            await conn.execute(
                f"UPDATE {_table(self.schema)} SET due_at = $2, attempts = $3, last_error = $4,"
                " last_run_at = $5 WHERE id = $1",
                row["id"], now + self.retry.after(attempt), attempt, error, now)
            log.warning("job %s %s failed (attempt %d), retrying later: %s",
                        row["name"], row["id"], attempt, error, exc_info=exc)

    async def run(self) -> None:
        """The background loop: run the due jobs every ``interval`` seconds; a failing run
        (the database down) is retried with ``loop_retry``'s backoff."""
        await every(self.interval, self.run_due, retry=self.loop_retry,
                    name=f"{self.schema} schedule run")


async def every(interval: float, work: Callable[[], Awaitable[object]], *, retry: Backoff,
                name: str, on_failure: Callable[[], Awaitable[None]] | None = None,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Call ``work`` every ``interval`` seconds for the life of the process (the one polling
    loop of background work: time-driven here, woken by NOTIFY in shared/wakeup.py, whose
    ``work`` waits for its wake-up itself); after a failure (the database down), call
    ``on_failure`` and wait ``retry``'s backoff instead. Cancellation stops the loop.
    (``sleep``: for tests.)"""
    failures = 0
    while True:
        try:
            await work()
            failures = 0
            delay = interval
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            delay = retry.seconds(failures)
            log.exception("%s failed; retrying in %.1fs", name, delay)
            if on_failure is not None:
                await on_failure()
        await sleep(delay)
