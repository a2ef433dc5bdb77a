"""escalation's operator commands: meetings."""

from __future__ import annotations

import typer

from services.cli.common import JsonOption, print_rows, with_db
from services.escalation import store

meetings_app = typer.Typer(help="Remedial-action meetings.", no_args_is_help=True)
COMMAND_GROUPS = {"meetings": meetings_app}


@meetings_app.command("list")
def meetings_list(as_json: JsonOption = False) -> None:
    """Meetings booked by escalation, soonest first."""
    print_rows(with_db(store.list_meetings), as_json,
               ["meeting_id", "ods_code", "severity", "starts_at", "breach", "status"])
