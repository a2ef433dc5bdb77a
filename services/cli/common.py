"""What every ``carewatch`` command module shares: running a coroutine with clear errors,
a database connection, and table or JSON output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

import aio_pika
import asyncpg
import typer

from shared.settings import Settings, get_settings

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def run_async(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; connection and database errors become one clear line."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc


async def with_connection(settings: Settings,
                          work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` with a connection to the settings' database (inside a coroutine)."""
    from shared.db import create_pool

    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            return await work(conn)
    finally:
        await pool.close()


def with_db(work: Callable[[asyncpg.Connection], Awaitable[T]],
            settings: Settings | None = None) -> T:
    """Run ``work`` with a connection to the configured database."""
    return run_async(with_connection(settings or get_settings(), work))


def print_rows(rows: Sequence[dict[str, Any]], as_json: bool, columns: Sequence[str],
               width: int = 60) -> None:
    if as_json:
        typer.echo(json.dumps(list(rows), default=str, indent=2))
        return
    if not rows:
        typer.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))[:width]) for r in rows)) for c in columns}
    typer.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        typer.echo("  ".join(str(r.get(c, ""))[:width].ljust(widths[c]) for c in columns))


def print_record(record: dict[str, Any]) -> None:
    typer.echo(json.dumps(record, default=str, indent=2))
