"""intake's receipts look-up reads the receipts by their index, however few there were when it
first ran.

As a prepared statement, PostgreSQL kept one generic plan for the look-up after five runs,
costed while the receipts were a few pages: it then read every receipt on every batch until the
table was next analysed (tools.bench's year: 16 ms a batch at 45,000 receipts). The look-up is
now a function planned for its arguments on every call (intake migration 007).
"""

from __future__ import annotations

import uuid

import asyncpg

from services.intake import store
from shared.settings import Settings
from tests.integration.test_intake_support import isolated_intake


async def scans(conn: asyncpg.Connection) -> tuple[int, int]:
    """Sequential and index scans of intake.receipts counted by this backend so far and
    not yet reported (a difference within one transaction is that transaction's)."""
    row = await conn.fetchrow(
        "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables"
        " WHERE schemaname = 'intake' AND relname = 'receipts'")
    return (row["seq_scan"], row["idx_scan"]) if row else (0, 0)


async def test_the_receipts_look_up_uses_the_index_after_the_table_has_grown(
        settings: Settings) -> None:
    async with isolated_intake(settings, "plans") as stack:
        conn = await asyncpg.connect(stack.database_url)
        try:
            # a few receipts, analysed (as autovacuum does soon after the first ones)
            await conn.execute(
                "INSERT INTO intake.receipts (submission_id, outcome)"
                " SELECT gen_random_uuid(), 'accepted' FROM generate_series(1, 20)")
            await conn.execute("ANALYZE intake.receipts")
            for _ in range(12):  # past the five runs after which a generic plan may be kept
                async with conn.transaction():
                    earlier, version = await store.receipts_and_registry_version(
                        conn, {uuid.uuid4() for _ in range(20)})
                    assert earlier == {} and version >= 0
            # the table grows, not analysed since
            await conn.execute(
                "INSERT INTO intake.receipts (submission_id, outcome)"
                " SELECT gen_random_uuid(), 'accepted' FROM generate_series(1, 20000)")
            known = await conn.fetchval("SELECT submission_id FROM intake.receipts LIMIT 1")
            async with conn.transaction():  # scans counted within one transaction
                before = await scans(conn)
                earlier, _ = await store.receipts_and_registry_version(
                    conn, {known, *(uuid.uuid4() for _ in range(19))})
                after = await scans(conn)
            assert set(earlier) == {known} and earlier[known]["outcome"] == "accepted"
            assert (after[0] - before[0], after[1] > before[1]) == (0, True), \
                "read by the index, not by a scan of every receipt"
        finally:
            await conn.close()


async def feedback_scans(conn: asyncpg.Connection) -> int:
    """Sequential scans of intake.feedback by this backend's transaction so far."""
    return int(await conn.fetchval(
        "SELECT coalesce(max(seq_scan), 0) FROM pg_stat_xact_user_tables"
        " WHERE schemaname = 'intake' AND relname = 'feedback'"))


async def test_a_batch_and_its_duplicate_count_read_feedback_by_its_index_after_it_has_grown(
        settings: Settings) -> None:
    """The batch's statement and the count of copies of records stored before (intake
    migration 008: a prepared UPDATE kept a plan that scanned every piece of feedback)."""
    from tests.integration.test_intake_duplicates import copy

    async with isolated_intake(settings, "plansdup") as stack:
        conn = await asyncpg.connect(stack.database_url)
        try:
            ods = await conn.fetchval("SELECT ods_code FROM intake.providers LIMIT 1")
            await store.admit_batch(conn, [copy(ods, f"S{k}") for k in range(20)], [], [], [])
            await conn.execute("ANALYZE intake.feedback")
            for n in range(12):  # past the five runs, each batch with a copy to count
                await store.admit_batch(conn, [*(copy(ods, f"B{n}-{k}") for k in range(20)),
                                               copy(ods, f"S{n}")], [], [], [])
            await conn.execute(  # the table grows, not analysed since
                "INSERT INTO intake.feedback (feedback_id, submission_id, ods_code,"
                " provider_record_id, kind, version, occurred_on, content)"
                " SELECT gen_random_uuid(), gen_random_uuid(), $1, 'G' || g, 'complaint', 1,"
                " '2026-01-01', '{}' FROM generate_series(1, 20000) g", ods)
            async with conn.transaction():  # scans counted within one transaction
                before = await feedback_scans(conn)
                await store.admit_batch(conn, [*(copy(ods, f"N{k}") for k in range(20)),
                                               copy(ods, "G5"), copy(ods, "G6")], [], [], [])
                assert await feedback_scans(conn) == before, "no scan of every piece of feedback"
            assert await conn.fetchval("SELECT sum(duplicates) FROM intake.feedback"
                                       " WHERE provider_record_id IN ('G5', 'G6', 'S3')") == 3
        finally:
            await conn.close()
