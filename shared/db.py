"""PostgreSQL: one way to open a pool, and per-service schema migrations."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

# The messaging tables every service schema has (outbox, inbox, delivery failures),
# applied before the service's own migrations.
SHARED_MIGRATIONS = Path(__file__).parent / "migrations"


async def keep_session(conn: asyncpg.Connection) -> None:
    """A connection handed back to the pool keeps its session as it is: no reset statement.

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on
    every release, a round trip each time (issue 21: about one in five submissions releases
    a connection). Nothing carewatch leaves on a connection outlives its transaction:
    advisory locks are transaction-scoped (``pg_advisory_xact_lock``), settings are
    ``SET LOCAL``, cursors live in transactions, and a listener is removed (``UNLISTEN``) by
    its owner before release (shared/wakeup.py). asyncpg still rolls back a transaction left
    open and drops the connection's listener callbacks before this runs. A session-level
    ``SET`` would now outlive its borrower: use ``SET LOCAL``."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """Open the process's connection pool. JSON columns come back as Python objects."""

    async def init(conn: asyncpg.Connection) -> None:
        import json

        for typ in ("json", "jsonb"):
            await conn.set_type_codec(
                typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init,
                                     reset=keep_session)
    assert pool is not None
    return pool


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
