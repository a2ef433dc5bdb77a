"""PostgreSQL: one way to open a pool, and per-service schema migrations."""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

# The messaging tables every service schema has (outbox, inbox, delivery failures),
# applied before the service's own migrations.
SHARED_MIGRATIONS = Path(__file__).parent / "migrations"


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """Open the process's connection pool. JSON columns come back as Python objects."""

    async def init(conn: asyncpg.Connection) -> None:
        import json

        for typ in ("json", "jsonb"):
            await conn.set_type_codec(
                typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init)
    assert pool is not None
    return pool


@asynccontextmanager
async def planned_for_its_arguments(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Inside a transaction: the statements of the block are planned for the arguments of each
    run (``plan_cache_mode`` ``force_custom_plan``), then the session's default again.

    For a look-up into a table that starts empty and grows: after five runs PostgreSQL may keep
    one generic plan per prepared statement, costed when the table was a few pages, and use it
    until the table is next analysed. intake's receipts look-up then read the whole table on
    every batch (16 ms a batch at 45,000 rows, 60% of PostgreSQL's time in a benchmark's
    year). Planning it afresh costs about 0.1 ms. Not on error: the transaction is then over."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    yield
    await conn.execute("SET LOCAL plan_cache_mode TO DEFAULT")


def migration_files(migrations_dir: Path, messaging: bool = True) -> list[Path]:
    """The files of a schema, the messaging tables first (``messaging=False``: a platform
    schema such as ``identity``, which has no outbox)."""
    return [*(sorted(SHARED_MIGRATIONS.glob("*.sql")) if messaging else []),
            *sorted(migrations_dir.glob("*.sql"))]


async def pending_migrations(conn: asyncpg.Connection, schema: str,
                             migrations_dir: Path, messaging: bool = True) -> list[str]:
    """Names of the migrations not yet applied to ``schema`` (all of them if it is new)."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                               f'"{schema}".schema_migrations'):
        return [p.name for p in migration_files(migrations_dir, messaging)]
    done = {r["name"] for r in await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')}
    return [p.name for p in migration_files(migrations_dir, messaging) if p.name not in done]


async def migrate(conn: asyncpg.Connection, schema: str, migrations_dir: Path,
                  messaging: bool = True) -> list[str]:
    """Apply the shared messaging migrations, then the numbered ``*.sql`` files of one
    service's schema, once each, in order (unqualified names land in the schema).

    An advisory lock serialises concurrent migrators (several replicas starting at once).
    Returns the names of the files applied now.
    """
    applied_now: list[str] = []
    lock_key = zlib.crc32(f"carewatch.migrate.{schema}".encode())
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["name"] for r in await conn.fetch(
            f'SELECT name FROM "{schema}".schema_migrations')}
        for path in migration_files(migrations_dir, messaging):
            if path.name in done:
                continue
            await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
            await conn.execute(path.read_text())
            await conn.execute(
                f'INSERT INTO "{schema}".schema_migrations(name) VALUES ($1)', path.name)
            applied_now.append(path.name)
            log.info("migrated %s: %s", schema, path.name)
    return applied_now
