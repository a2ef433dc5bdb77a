"""intake's receipts look-up is planned for its own arguments on every batch.

PostgreSQL keeps one generic plan for a prepared statement once five runs suggest it costs no
more than a plan for the arguments. Costed while the receipts were few, that plan read every
receipt on every batch until the table was next analysed (tools.bench's year: 16 ms a batch at
45,000 receipts). ``pg_prepared_statements`` counts the plans of each statement of the
connection, so the test asks PostgreSQL which plan the look-up ran with.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.intake import store

LOOKUP = "%FROM intake.registry_version v%"


async def plans(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE $1",
        LOOKUP)
    assert row is not None, "the look-up ran as a prepared statement"
    return row["generic_plans"], row["custom_plans"]


async def test_the_receipts_look_up_is_never_run_with_a_plan_kept_from_earlier_runs(
        db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        for _ in range(12):  # past the five runs after which a generic plan may be kept
            async with conn.transaction():
                earlier, version = await store.receipts_and_registry_version(
                    conn, {uuid.uuid4() for _ in range(20)})
                assert earlier == {} and version >= 0
        generic, custom = await plans(conn)
        assert (generic, custom) == (0, 12)
        # the rest of the transaction, and the session, plan as before
        async with conn.transaction():
            await store.receipts_and_registry_version(conn, {uuid.uuid4()})
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
        assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
