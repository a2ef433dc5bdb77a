"""What every ``carewatch`` command module shares: running a coroutine with clear errors,
connections that say which setting to check, and output for people (tables, records, times
in Europe/London) or JSON.

Imports stay light: asyncpg and aio_pika are imported by the commands that connect.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import typer

if TYPE_CHECKING:
    import aio_pika
    import asyncpg

    from shared.settings import Settings

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
LONDON = ZoneInfo("Europe/London")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


# -- connections ---------------------------------------------------------------------------
class Unreachable(Exception):
    """A broker or database that cannot be reached, with the setting that names it."""

    def __init__(self, what: str, setting: str, url: str, cause: BaseException) -> None:
        reason = str(cause) or ("no answer in time" if isinstance(cause, TimeoutError)
                                else type(cause).__name__)
        if type(cause).__name__ == "InvalidCatalogNameError":
            super().__init__(f"{what} at {redacted(url)}: {reason} (`carewatch migrate`"
                             f" creates it); or check {setting}.")
        else:
            super().__init__(f"cannot reach {what} at {redacted(url)}: {reason}. Is it running?"
                             f" Check {setting}.")


def redacted(url: str) -> str:
    """A URL without its password: ``host:port/path``."""
    parts = urlsplit(url)
    host = f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    return f"{host}{parts.path if parts.path not in ('', '/') else ''}"


def _connect_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, asyncio.TimeoutError]
    if "asyncpg" in sys.modules:
        import asyncpg

        errors += [asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError,
                   asyncpg.InvalidPasswordError, asyncpg.CannotConnectNowError,
                   asyncpg.TooManyConnectionsError]
    if "aio_pika" in sys.modules:
        import aio_pika

        errors.append(aio_pika.exceptions.AMQPConnectionError)
    return tuple(errors)


@asynccontextmanager
async def reaching(what: str, setting: str, url: str) -> AsyncIterator[None]:
    """Connection failures inside become one :class:`Unreachable` naming ``setting``."""
    try:
        yield
    except _connect_errors() as exc:
        raise Unreachable(what, setting, url, exc) from exc


async def connect_db(settings: Settings, dsn: str | None = None,
                     timeout: float = 10) -> asyncpg.Connection:
    import asyncpg

    async with reaching("PostgreSQL", "CAREWATCH_DATABASE_URL", dsn or settings.database_url):
        return await asyncpg.connect(dsn or settings.database_url, timeout=timeout)


async def connect_amqp(settings: Settings, timeout: float = 10
                       ) -> aio_pika.abc.AbstractConnection:
    import aio_pika

    async with reaching("RabbitMQ", "CAREWATCH_AMQP_URL", settings.amqp_url):
        return await aio_pika.connect(settings.amqp_url, timeout=timeout)


def run_async(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; connection and database errors become one clear line."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except Unreachable as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        if isinstance(exc, OSError) or _is_service_error(exc):
            raise fail(f"{type(exc).__name__}: {exc}") from None
        raise


def _is_service_error(exc: Exception) -> bool:
    module = type(exc).__module__ or ""
    return module.split(".")[0] in ("asyncpg", "aio_pika", "aiormq", "pamqp")


async def with_connection(settings: Settings,
                          work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` with a connection to the settings' database (inside a coroutine)."""
    from shared.db import create_pool

    async with reaching("PostgreSQL", "CAREWATCH_DATABASE_URL", settings.database_url):
        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            return await work(conn)
    finally:
        await pool.close()


async def acting(conn: asyncpg.Connection, roles: Sequence[str]) -> str:
    """Who runs this command, for the audit trail: the account of CAREWATCH_TOKEN, which must
    hold one of ``roles`` (exit 3 otherwise), or, with no token, the local operator (see
    shared.identity.console_actor). Never a name typed on the command line."""
    from shared.identity import AccessDenied, console_actor
    from shared.settings import get_settings

    try:
        return await console_actor(conn, get_settings().token, roles)
    except AccessDenied as exc:
        raise fail(exc.detail, 3) from exc


def with_db(work: Callable[[asyncpg.Connection], Awaitable[T]],
            settings: Settings | None = None) -> T:
    """Run ``work`` with a connection to the configured database."""
    from shared.settings import get_settings

    return run_async(with_connection(settings or get_settings(), work))


# -- options -------------------------------------------------------------------------------
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def month(value: str | None) -> str | None:
    """A ``YYYY-MM`` option, refused unless it is a real month."""
    if value is None:
        return None
    m = _MONTH.fullmatch(value)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise typer.BadParameter(f"{value!r} is not a month: expected YYYY-MM (e.g. 2026-03)")
    return value


def choice(value: Any) -> Any:
    """An Enum option's value (None stays None)."""
    return value.value if isinstance(value, Enum) else value


# -- output for people ---------------------------------------------------------------------
def when(value: Any) -> Any:
    """Times as people here read them: Europe/London, to the minute, with the zone."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.strftime("%Y-%m-%d %H:%M")
        return value.astimezone(LONDON).strftime("%Y-%m-%d %H:%M %Z")
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T" and \
            (value.endswith("Z") or value[-6] in "+-"):
        try:
            return when(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return value


def cell(value: Any, width: int) -> str:
    value = when(value)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(when(v)) for v in value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={when(v)}" for k, v in value.items())
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def joined(items: Sequence[str], shown: int = 2, sep: str = "; ") -> str:
    """The first ``shown`` items, and how many more there are."""
    more = len(items) - shown
    return sep.join(items[:shown]) + (f" (+{more} more)" if more > 0 else "")


def print_rows(rows: Sequence[dict[str, Any]], as_json: bool, columns: Sequence[str],
               width: int = 60, total: int | None = None) -> None:
    """A table (or JSON). ``total``: how many rows there are in all, when ``rows`` is the
    first page of them ("50 of 62" is said under the table)."""
    if as_json:
        typer.echo(json.dumps(list(rows), default=str, indent=2))
        return
    if not rows:
        typer.echo("(none)")
        return
    cells = [[cell(r.get(c), width) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
               .rstrip())
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if total is not None and total > len(rows):
        typer.echo(f"{len(rows)} of {total} shown (--limit {total} for all)")


def print_record(record: dict[str, Any], as_json: bool = False) -> None:
    """One record: ``key: value`` lines for people (nested values indented), or JSON."""
    if as_json:
        typer.echo(json.dumps(record, default=str, indent=2))
        return
    for line in record_lines(record):
        typer.echo(line)


def record_lines(value: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        keywidth = max((len(str(k)) for k in value), default=0)
        for k, v in value.items():
            label = f"{pad}{str(k).replace('_', ' ')}:"
            if isinstance(v, dict | list) and v and not _flat(v):
                lines.append(label)
                lines += record_lines(v, indent + 1)
            else:
                lines.append(f"{label.ljust(len(pad) + keywidth + 2)}{_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and not _flat(item):
                sub = record_lines(item, indent + 1)
                lines.append(f"{pad}- {sub[0].lstrip()}" if sub else f"{pad}-")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines


def _flat(value: dict[str, Any] | list[Any]) -> bool:
    """Shown on one line: a short dict of scalars, or a short list of words (a list of
    sentences or people gets a line each)."""
    items = list(value.values() if isinstance(value, dict) else value)
    if any(isinstance(v, dict | list) for v in items) or len(_scalar(value)) > 60:
        return False
    return isinstance(value, dict) or not any(" " in str(v) for v in items)


def _scalar(value: Any) -> str:
    value = when(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) or "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, str) and value.startswith(("{", "[")):
        try:
            return _scalar(json.loads(value))
        except ValueError:
            return value
    return str(value)
