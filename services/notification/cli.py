"""notification's operator commands: notifications and their delivery state."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import typer

from services.cli.common import JsonOption, print_rows, with_db
from services.notification import store

notifications_app = typer.Typer(help="Notifications and deliveries.", no_args_is_help=True)
COMMAND_GROUPS = {"notifications": notifications_app}


@notifications_app.command("list")
def notifications_list(as_json: JsonOption = False,
                       status: Annotated[str | None, typer.Option(
                           help="pending, sent or failed")] = None) -> None:
    """Notifications, newest first, with their delivery state."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_notifications(conn, status)]

    print_rows(with_db(work), as_json,
               ["recipient", "subject", "status", "attempts", "last_error", "created_at"])
