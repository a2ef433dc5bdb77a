"""The durable schedule: time-driven work kept in PostgreSQL, run by a tick on any replica.

A job is a row of ``escalation.schedule`` (due_at, kind, payload). ``Ticker.run_due(now)``
claims the rows due by ``now`` one at a time with ``FOR UPDATE SKIP LOCKED``, so replicas
ticking at the same moment share the work and never run a job twice; a job runs in the
transaction that marks it done, with its events in the outbox, so a crash mid-job leaves it
to the next tick (jobs check the state they act on, so a second run does nothing twice).
Transient failures (a deadlock, the database restarting) re-run the job at once. A job that
fails is retried with backoff and, after ``max_attempts``, kept with outcome ``failed`` for
an operator to see. Nothing is held in memory: a restart loses nothing.

Tests drive time by calling ``run_due`` with the instant they want.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.outbox import Outbox
from shared.retry import is_transient, retry_transient

log = logging.getLogger(__name__)

# A job returns its outcome ("done", or why it did nothing, e.g. "skipped: action completed").
Job = Callable[[asyncpg.Connection, asyncpg.Record, Outbox, datetime], Awaitable[str]]
OutboxFactory = Callable[[asyncpg.Connection], Outbox]


async def schedule(conn: asyncpg.Connection, *, kind: str, due_at: datetime,
                   payload: dict[str, Any], concern_id: uuid.UUID | None = None,
                   dedupe_key: str | None = None) -> bool:
    """Add a job (in the caller's transaction). With a ``dedupe_key``, a second job for the
    same purpose is not added; returns False then."""
    return bool(await conn.fetchval(
        "INSERT INTO escalation.schedule (due_at, kind, payload, concern_id, dedupe_key)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedupe_key) DO NOTHING RETURNING true",
        due_at, kind, payload, concern_id, dedupe_key))


async def cancel_for_concern(conn: asyncpg.Connection, concern_id: uuid.UUID, now: datetime,
                             why: str) -> int:
    """Mark the concern's pending jobs done without running them."""
    result = await conn.execute(
        "UPDATE escalation.schedule SET done_at = $2, outcome = $3"
        " WHERE concern_id = $1 AND done_at IS NULL", concern_id, now, f"cancelled: {why}")
    return int(result.split()[-1])


async def cancel(conn: asyncpg.Connection, dedupe_keys: list[str], now: datetime,
                 why: str) -> int:
    """Mark these pending jobs done without running them."""
    result = await conn.execute(
        "UPDATE escalation.schedule SET done_at = $2, outcome = $3"
        " WHERE dedupe_key = ANY($1::text[]) AND done_at IS NULL", dedupe_keys, now,
        f"cancelled: {why}")
    return int(result.split()[-1])


async def pending(conn: asyncpg.Connection, concern_id: uuid.UUID | None = None,
                  limit: int = 200) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, due_at, kind, payload, concern_id, attempts, last_error"
        " FROM escalation.schedule WHERE done_at IS NULL"
        " AND ($1::uuid IS NULL OR concern_id = $1) ORDER BY due_at LIMIT $2", concern_id, limit)
    return [dict(r) for r in rows]


def retry_delay(attempt: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at an hour."""
    return timedelta(seconds=min(3600, 30 * 2 ** (attempt - 1)))


class Ticker:
    """Runs due jobs by kind, now and then (``run``) or when told (``run_due``)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], jobs: Mapping[str, Job],
                 outbox: OutboxFactory, clock: Callable[[], datetime], *,
                 interval: float = 15.0, max_attempts: int = 5) -> None:
        self._pool = pool
        self.jobs = jobs
        self._outbox = outbox
        self.clock = clock
        self.interval = interval
        self.max_attempts = max_attempts

    async def run_due(self, now: datetime | None = None) -> int:
        """Run every job due by ``now`` (the clock's time if not given), one transaction per
        job; returns how many this replica ran (another replica may run some of them)."""
        at = now or self.clock()
        ran = 0
        while await retry_transient(lambda: self._run_next(at), for_seconds=60):
            ran += 1
        return ran

    async def _run_next(self, now: datetime) -> bool:
        async with self._pool().acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM escalation.schedule WHERE done_at IS NULL AND due_at <= $1"
                " ORDER BY due_at, id LIMIT 1 FOR UPDATE SKIP LOCKED", now)
            if row is None:
                return False
            job = self.jobs.get(row["kind"])
            try:
                if job is None:
                    raise LookupError(f"no job of kind {row['kind']!r}")
                async with conn.transaction():  # a savepoint: a failed job undoes only itself
                    outcome = await job(conn, row, self._outbox(conn), now)
                    await conn.execute(
                        "UPDATE escalation.schedule SET done_at = $2, outcome = $3,"
                        " attempts = attempts + 1 WHERE id = $1", row["id"], now, outcome)
                log.info("schedule job %s %s: %s", row["kind"], row["id"], outcome)
            except Exception as exc:
                if is_transient(exc):
                    raise  # the whole transaction again (a deadlock, the database restarting)
                await self._failed(conn, row, now, exc)
            return True

    async def _failed(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime,
                      exc: Exception) -> None:
        attempt = row["attempts"] + 1
        error = f"{type(exc).__name__}: {exc}"[:4000]
        if attempt >= self.max_attempts:
            await conn.execute(
                "UPDATE escalation.schedule SET done_at = $2, outcome = 'failed', attempts = $3,"
                " last_error = $4 WHERE id = $1", row["id"], now, attempt, error)
            log.error("schedule job %s %s failed for good after %d attempts: %s",
                      row["kind"], row["id"], attempt, error)
        else:
            await conn.execute(
                "UPDATE escalation.schedule SET due_at = $2, attempts = $3, last_error = $4"
                " WHERE id = $1", row["id"], now + retry_delay(attempt), attempt, error)
            log.warning("schedule job %s %s failed (attempt %d), retrying later: %s",
                        row["kind"], row["id"], attempt, error, exc_info=exc)

    async def run(self) -> None:
        """The background loop: tick every ``interval`` seconds for the life of the process."""
        backoff = 1.0
        while True:
            try:
                await self.run_due()
                backoff = 1.0
                await asyncio.sleep(self.interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("schedule tick failed; retrying in %.0fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
