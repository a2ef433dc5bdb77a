"""The connection pool (shared/db.py): a connection handed back keeps its session, with nothing
of its transaction left on it, and no reset statement sent (one round trip a release less)."""

from __future__ import annotations

import asyncio

from shared.db import create_pool
from shared.settings import Settings


async def test_a_connection_handed_back_keeps_nothing_of_its_transaction(
        settings: Settings) -> None:
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(424242)")
                await conn.execute("SET LOCAL application_name = 'in a transaction'")
        task_started = asyncio.Event()

        async def cancelled_mid_transaction() -> None:
            async with pool.acquire() as conn:
                await conn.execute("BEGIN")
                await conn.execute("SELECT pg_advisory_xact_lock(424243)")
                task_started.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(cancelled_mid_transaction())
        await task_started.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same session
            assert not conn.is_in_transaction()
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
                pid) == 0
            assert await conn.fetchval("SHOW application_name") != "in a transaction"
            # No reset statement: a session-level setting would outlive its borrower (the
            # code uses SET LOCAL only; asyncpg's default RESET ALL would undo this).
            await conn.execute("SET application_name = 'session'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "session"
    finally:
        await pool.close()
