"""Escalation's time-driven work on the shared durable scheduler (`shared.scheduler`).

Reminders, overdue checks, ladder reviews, re-visits and meeting announcements are one-off
jobs in ``escalation.jobs`` (the view ``escalation.schedule`` shows them as before: kind =
the job's name, concern_id = its subject). A job is handed the claim's connection, its row,
an outbox on that connection and the time; it returns its outcome ("done", or why it did
nothing, e.g. "skipped: action completed"). Claiming, retries with backoff and the
background tick are the shared scheduler's.

Tests drive time by calling ``Ticker.run_due`` with the instant they want.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg

from shared import scheduler
from shared.outbox import Outbox

SCHEMA = "escalation"

# A job returns its outcome ("done", or why it did nothing, e.g. "skipped: action completed").
Job = Callable[[asyncpg.Connection, asyncpg.Record, Outbox, datetime], Awaitable[str]]
OutboxFactory = Callable[[asyncpg.Connection], Outbox]


async def schedule(conn: asyncpg.Connection, *, kind: str, due_at: datetime,
                   payload: dict[str, Any], concern_id: uuid.UUID | None = None,
                   dedupe_key: str | None = None) -> bool:
    """Add a job (in the caller's transaction). With a ``dedupe_key``, a second job for the
    same purpose is not added; returns False then."""
    return await scheduler.schedule(
        conn, SCHEMA, name=kind, due_at=due_at, payload=payload,
        subject=str(concern_id) if concern_id is not None else None, dedupe_key=dedupe_key)


async def cancel_for_concern(conn: asyncpg.Connection, concern_id: uuid.UUID, now: datetime,
                             why: str) -> int:
    """Mark the concern's pending jobs done without running them."""
    return await scheduler.cancel_subject(conn, SCHEMA, str(concern_id), now, why)


async def cancel(conn: asyncpg.Connection, dedupe_keys: list[str], now: datetime,
                 why: str) -> int:
    """Mark these pending jobs done without running them."""
    return await scheduler.cancel(conn, SCHEMA, dedupe_keys, now, why)


async def pending(conn: asyncpg.Connection, concern_id: uuid.UUID | None = None,
                  limit: int = 200) -> list[dict[str, Any]]:
    rows = await scheduler.pending(
        conn, SCHEMA, str(concern_id) if concern_id is not None else None, limit)
    return [{"id": r["id"], "due_at": r["due_at"], "kind": r["name"], "payload": r["payload"],
             "concern_id": uuid.UUID(r["subject"]) if r["subject"] else None,
             "attempts": r["attempts"], "last_error": r["last_error"]} for r in rows]


def _with_outbox(job: Job, outbox: OutboxFactory) -> scheduler.Job:
    async def run(conn: asyncpg.Connection, row: asyncpg.Record,
                  now: datetime) -> str | scheduler.Again:
        return await job(conn, row, outbox(conn), now)
    return run


class Ticker(scheduler.Scheduler):
    """The shared scheduler over ``escalation.jobs``, its jobs given an outbox; ``run_due``
    returns how many jobs this replica ran."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], jobs: Mapping[str, Job],
                 outbox: OutboxFactory, clock: Callable[[], datetime], *,
                 interval: float = 15.0, max_attempts: int = 5) -> None:
        super().__init__(SCHEMA, pool, {kind: _with_outbox(job, outbox)
                                        for kind, job in jobs.items()},
                         clock, interval=interval, max_attempts=max_attempts)

    async def run_due(self, now: datetime | None = None) -> int:  # type: ignore[override]
        """Run every job due by ``now`` (the clock's time if not given), one transaction per
        job; returns how many this replica ran (another replica may run some of them)."""
        return len(await super().run_due(now))
