"""quality-monitor's operator commands: concerns."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
import typer

from services.cli.common import JsonOption, fail, print_record, print_rows, with_db
from services.quality_monitor import store

concerns_app = typer.Typer(help="Concerns raised by quality-monitor.", no_args_is_help=True)
COMMAND_GROUPS = {"concerns": concerns_app}


@concerns_app.command("list")
def concerns_list(as_json: JsonOption = False,
                  status: Annotated[str, typer.Option(help="open, resolved or all")] = "open"
                  ) -> None:
    """Concerns, newest first."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_concerns(conn, None if status == "all" else status)]

    print_rows(with_db(work), as_json,
               ["concern_id", "ods_code", "rule", "theme", "severity", "status", "raised_at"])


@concerns_app.command("show")
def concerns_show(concern_id: uuid.UUID) -> None:
    """One concern with its rule, figures and evidence."""
    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        row = await conn.fetchrow("SELECT * FROM monitor.concerns WHERE concern_id = $1",
                                  concern_id)
        return dict(row) if row else None

    row = with_db(work)
    if row is None:
        raise fail(f"no concern {concern_id}", 1)
    print_record(row)
