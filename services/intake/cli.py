"""intake's operator commands: providers, feeds, quarantine."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from services.cli.common import JsonOption, fail, print_record, print_rows, with_db
from services.intake import store

providers_app = typer.Typer(help="The provider registry.", no_args_is_help=True)
feeds_app = typer.Typer(help="Provider feeds and what they may submit.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Rejected submissions.", no_args_is_help=True)
COMMAND_GROUPS = {"providers": providers_app, "feeds": feeds_app, "quarantine": quarantine_app}


@providers_app.command("import")
def providers_import(file: Path) -> None:
    """Load or update providers from a CSV (ods_code,name,provider_type,quality_contact_email,region)."""
    try:
        rows = store.read_providers_csv(file)
    except (OSError, ValueError, KeyError) as exc:
        raise fail(str(exc)) from exc

    async def work(conn: asyncpg.Connection) -> int:
        return await store.upsert_providers(conn, rows)

    typer.echo(f"providers: {with_db(work)} loaded from {file}")


@providers_app.command("list")
def providers_list(as_json: JsonOption = False) -> None:
    """List the registered providers."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_providers(conn)]

    print_rows(with_db(work), as_json, ["ods_code", "name", "provider_type", "quality_contact_email"])


@feeds_app.command("create")
def feeds_create(
    feed_user: Annotated[str, typer.Argument(help="The feed's RabbitMQ user name.")],
    ods: Annotated[list[str], typer.Option("--ods", help="An ODS code it may submit for.")],
    description: str = "",
) -> None:
    """Register a feed (its RabbitMQ user) for the given ODS codes."""
    async def work(conn: asyncpg.Connection) -> None:
        await store.register_feed(conn, feed_user, [c.upper() for c in ods], description)

    try:
        with_db(work)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"feed {feed_user!r} may submit for {', '.join(ods)}")


@quarantine_app.command("list")
def quarantine_list(as_json: JsonOption = False, limit: int = 50) -> None:
    """Rejected submissions still open, newest first, with their reasons."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_quarantine(conn, limit=limit)]

    rows = with_db(work)
    if not as_json:
        for r in rows:
            r["reasons"] = "; ".join(f"{x['loc'] or '<message>'}: {x['msg']}" for x in r["reasons"])
    print_rows(rows, as_json, ["submission_id", "received_at", "feed_user", "reasons"], width=90)


@quarantine_app.command("show")
def quarantine_show(submission_id: uuid.UUID) -> None:
    """One rejected submission: its reasons and the body as received."""
    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        row = await store.get_quarantined(conn, submission_id)
        return dict(row) if row else None

    row = with_db(work)
    if row is None:
        raise fail(f"no quarantined submission {submission_id}", 1)
    row["body"] = row["body"].decode("utf-8", errors="replace")
    print_record(row)
