"""intake's batch statement counts duplicates itself (``store.admit_batch``), so that a batch
whose only write is that statement needs no transaction around it (issue 21).

A copy of a record already stored, or a later copy of a record stored in the same batch,
adds one to the stored record's ``duplicates``; a copy the broker redelivered adds nothing.
These run on PostgreSQL, whose unique keys decide which copy is stored and whose statement
snapshot decides what the count's UPDATE sees.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date

import asyncpg

from services.intake import store
from shared.settings import Settings
from tests.helpers import eventually
from tests.integration.test_intake_support import isolated_intake


def copy(ods: str, record: str) -> store.FeedbackRow:
    return store.FeedbackRow(
        feedback_id=uuid.uuid4(), submission_id=uuid.uuid4(), ods_code=ods,
        provider_record_id=record, kind="complaint", version=1, occurred_on=date(2026, 1, 5),
        theme="communication", content={"description": "waited a long time"}, redactions={},
        feed_user="guest")


async def counts(conn: asyncpg.Connection, ods: str) -> dict[str, int]:
    rows = await conn.fetch("SELECT provider_record_id, duplicates FROM intake.feedback"
                            " WHERE ods_code = $1", ods)
    return {r["provider_record_id"]: r["duplicates"] for r in rows}


async def test_one_statement_stores_the_first_copy_and_counts_the_others(
        settings: Settings) -> None:
    async with isolated_intake(settings, "dups") as stack:
        conn = await asyncpg.connect(stack.database_url)
        try:
            ods = await conn.fetchval("SELECT ods_code FROM intake.providers LIMIT 1")
            # Batch 1: record A three times (one of them redelivered), B once.
            a1, a2, a3, b1 = copy(ods, "A"), copy(ods, "A"), copy(ods, "A"), copy(ods, "B")
            stored, _ = await store.admit_batch(conn, [a3, b1, a1, a2], [], [], [],
                                                redelivered={a2.submission_id})
            assert len(stored) == 2 and b1.submission_id in stored
            assert not await conn.fetchval("SELECT pg_current_xact_id_if_assigned()"), \
                "no transaction left open"
            assert await counts(conn, ods) == {"A": 1, "B": 0}
            # Batch 2: A again twice (stored before), B redelivered, C new once and again.
            c1, c2 = copy(ods, "C"), copy(ods, "C")
            b2, a4, a5 = copy(ods, "B"), copy(ods, "A"), copy(ods, "A")
            stored, _ = await store.admit_batch(conn, [a4, b2, c1, a5, c2], [], [], [],
                                                redelivered={b2.submission_id})
            assert stored & {c1.submission_id, c2.submission_id} and len(stored) == 1
            assert await counts(conn, ods) == {"A": 3, "B": 0, "C": 1}
        finally:
            await conn.close()


async def test_a_copy_of_a_record_stored_meanwhile_by_another_replica_is_counted(
        settings: Settings) -> None:
    """Two intake replicas: one stores a record while the other's statement holds a copy
    of it. The second statement waits for the first to commit, then finds its copy a
    duplicate, which its UPDATE (its snapshot older than that commit) cannot count: a second
    statement does."""
    async with isolated_intake(settings, "dupsrace") as stack:
        first = await asyncpg.connect(stack.database_url)
        second = await asyncpg.connect(stack.database_url)
        try:
            ods = await first.fetchval("SELECT ods_code FROM intake.providers LIMIT 1")
            pid = second.get_server_pid()
            async with first.transaction():
                await store.admit_batch(first, [copy(ods, "R")], [], [], [])
                racing = asyncio.create_task(
                    store.admit_batch(second, [copy(ods, "R")], [], [], []))
                await eventually(lambda: first.fetchval(  # the second waits on the first's row
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid),
                    interval=0.01, what="the second statement waiting on the first's row")
            stored, _ = await racing
            assert stored == set()
            assert await counts(first, ods) == {"R": 1}
        finally:
            await first.close()
            await second.close()
