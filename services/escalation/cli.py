"""escalation's operator commands: meetings, action plans, and the rest of escalation.

Commands that change things write their events to escalation's outbox in the same
transaction; the running escalation service publishes them (woken by NOTIFY).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any, TypeVar

import asyncpg
import typer

from services.cli.common import JsonOption, fail, print_record, print_rows, run_async, with_db
from services.escalation import schedule, store, views
from services.escalation.app import Escalation, jobs, utc_now
from services.escalation.plans import ActionPlans, Conflict, NewAction, NotFound
from services.escalation.policy import load_policy
from shared.outbox import Outbox
from shared.settings import get_settings
from shared.topology import Topology

T = TypeVar("T")

meetings_app = typer.Typer(help="Remedial-action meetings.", no_args_is_help=True)
actions_app = typer.Typer(help="Remedial actions: the action plans agreed with providers.",
                          no_args_is_help=True)
escalation_app = typer.Typer(help="Escalation: concerns, the audit trail, CQRM agendas, visits,"
                             " the schedule.", no_args_is_help=True)
COMMAND_GROUPS = {"meetings": meetings_app, "actions": actions_app,
                  "escalation": escalation_app}

By = Annotated[str, typer.Option("--by", help="Who records this (name or e-mail).")]


def _plans() -> ActionPlans:
    settings = get_settings()
    return Escalation(settings, load_policy(settings.escalation_policy_file), utc_now).plans


def _command(work: Callable[[asyncpg.Connection, Outbox], Awaitable[T]]) -> T:
    """Run a command in one transaction with escalation's outbox."""
    settings = get_settings()
    exchange = Topology(settings.namespace, settings.delivery_limit).events_exchange

    async def run(conn: asyncpg.Connection) -> T:
        async with conn.transaction():
            return await work(conn, Outbox(conn, store.SCHEMA, exchange, "carewatch/escalation"))

    try:
        return with_db(run, settings)
    except (NotFound, Conflict) as exc:
        raise fail(str(exc), 1) from exc


def _parse_action(text: str) -> NewAction:
    try:
        due, owner, description = (part.strip() for part in text.split("|", 2))
        return NewAction(description, owner, date.fromisoformat(due))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r}: expected 'YYYY-MM-DD|owner|description'") from exc


# -- meetings ----------------------------------------------------------------------------------
@meetings_app.command("list")
def meetings_list(as_json: JsonOption = False,
                  status: Annotated[str | None, typer.Option(
                      help="scheduled, held or cancelled")] = None,
                  provider: Annotated[str | None, typer.Option(help="ODS code")] = None) -> None:
    """Meetings booked by escalation, soonest first."""
    print_rows(with_db(lambda conn: store.list_meetings(conn, 100, status, provider)), as_json,
               ["meeting_id", "ods_code", "severity", "starts_at", "breach", "status",
                "sequence"])


@meetings_app.command("show")
def meetings_show(meeting_id: uuid.UUID) -> None:
    """One meeting: time, agenda, attendees, outcome."""
    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        row = await store.get_meeting(conn, meeting_id)
        return dict(row) if row else None

    row = with_db(work)
    if row is None:
        raise fail(f"no meeting {meeting_id}", 1)
    print_record(row)


@meetings_app.command("outcome")
def meetings_outcome(
    meeting_id: uuid.UUID,
    outcome: Annotated[str, typer.Option(help="What the meeting concluded.")],
    by: By,
    action: Annotated[list[str] | None, typer.Option(
        "--action", help="An agreed action: 'YYYY-MM-DD|owner|description' (repeatable).")]
    = None,
) -> None:
    """Record that the meeting was held, what it concluded and the action plan it agreed."""
    new = [_parse_action(a) for a in action or []]
    plans = _plans()
    result = _command(lambda conn, outbox: plans.record_outcome(
        conn, outbox, meeting_id, outcome=outcome, actions=new, recorded_by=by))
    print_record(result)


# -- actions -----------------------------------------------------------------------------------
@actions_app.command("list")
def actions_list(as_json: JsonOption = False,
                 status: Annotated[str | None, typer.Option(
                     help="open, overdue or completed")] = None,
                 concern: Annotated[uuid.UUID | None, typer.Option(help="Concern id")] = None
                 ) -> None:
    """Remedial actions, by due date."""
    print_rows(with_db(lambda conn: store.list_actions(conn, status, concern)), as_json,
               ["action_id", "ods_code", "owner", "due_on", "status", "description"])


@actions_app.command("add")
def actions_add(
    concern_id: uuid.UUID,
    description: Annotated[str, typer.Option(help="What the provider will do.")],
    owner: Annotated[str, typer.Option(help="Who is accountable for it.")],
    due: Annotated[str, typer.Option(help="Due date, YYYY-MM-DD.")],
    by: By,
) -> None:
    """Add a remedial action to a concern's plan (reminder and overdue check scheduled)."""
    try:
        due_on = date.fromisoformat(due)
    except ValueError as exc:
        raise typer.BadParameter(f"--due {due!r}: expected YYYY-MM-DD") from exc
    plans = _plans()
    print_record(_command(lambda conn, outbox: plans.add_action(
        conn, outbox, concern_id, NewAction(description, owner, due_on), recorded_by=by)))


@actions_app.command("complete")
def actions_complete(
    action_id: uuid.UUID,
    evidence: Annotated[str, typer.Option(help="Evidence of completion.")],
    by: By,
    party: Annotated[str, typer.Option(help="provider or commissioner")] = "provider",
) -> None:
    """Complete a remedial action, with the evidence."""
    if party not in ("provider", "commissioner"):
        raise typer.BadParameter("--party must be provider or commissioner")
    plans = _plans()
    print_record(_command(lambda conn, outbox: plans.complete_action(
        conn, outbox, action_id, evidence=evidence, completed_by=by, party=party)))


# -- escalation --------------------------------------------------------------------------------
@escalation_app.command("concerns")
def escalation_concerns(as_json: JsonOption = False,
                        status: Annotated[str | None, typer.Option(
                            help="open, closed or resolved")] = None) -> None:
    """Concerns as escalation knows them, with their action and ladder level."""
    print_rows(with_db(lambda conn: store.list_concerns(conn, status)), as_json,
               ["concern_id", "ods_code", "theme", "severity", "action", "status", "level"])


@escalation_app.command("show")
def escalation_show(concern_id: uuid.UUID) -> None:
    """A concern with its meeting, action plan, ladder, visits and pending jobs."""
    record = with_db(lambda conn: views.concern_file(conn, concern_id))
    if record is None:
        raise fail(f"no concern {concern_id}", 1)
    print_record(record)


@escalation_app.command("audit")
def escalation_audit(concern_id: uuid.UUID, as_json: JsonOption = False) -> None:
    """The audit trail of a concern, oldest first."""
    print_rows(with_db(lambda conn: store.audit_trail(conn, concern_id)), as_json,
               ["at", "party", "actor", "action", "detail"], width=100)


@escalation_app.command("close")
def escalation_close(
    concern_id: uuid.UUID,
    reason: Annotated[str, typer.Option(help="Why the concern can close.")],
    by: By,
) -> None:
    """Close a concern whose actions are complete (publishes concern.closed.v1)."""
    plans = _plans()
    closed = _command(lambda conn, outbox: plans.close_concern(
        conn, outbox, concern_id, closed_by=by, reason=reason))
    print_record(closed.model_dump(mode="json"))


@escalation_app.command("cqrm")
def escalation_cqrm(as_json: JsonOption = False,
                    provider: Annotated[str | None, typer.Option(help="ODS code")] = None) -> None:
    """The agenda of each provider's coming CQRM (moderate concerns)."""
    agendas = with_db(lambda conn: views.cqrm_agendas(conn, provider, utc_now()))
    if as_json:
        print_rows(agendas, True, [])
        return
    if not agendas:
        typer.echo("(none)")
    for agenda in agendas:
        typer.echo(f"CQRM {agenda['ods_code']} {agenda['cqrm_at']}:")
        for n, item in enumerate(agenda["items"], 1):
            typer.echo(f"  {n}. {item['item']}  [{item['concern_id']}]")


@escalation_app.command("visits")
def escalation_visits(as_json: JsonOption = False,
                      provider: Annotated[str | None, typer.Option(help="ODS code")] = None,
                      status: Annotated[str | None, typer.Option(
                          help="planned, held or cancelled")] = None) -> None:
    """Insight visits and re-visits."""
    print_rows(with_db(lambda conn: store.list_visits(conn, provider, status)), as_json,
               ["visit_id", "ods_code", "visit_kind", "due_on", "status", "visited_on", "theme"])


@escalation_app.command("watch-list")
def escalation_watch_list(as_json: JsonOption = False,
                          provider: Annotated[str | None, typer.Option(help="ODS code")] = None
                          ) -> None:
    """Low concerns watched for the quarterly report."""
    print_rows(with_db(lambda conn: store.watch_list(conn, None, provider)), as_json,
               ["ods_code", "concern_id", "status", "added_at", "item"])


@escalation_app.command("schedule")
def escalation_schedule(as_json: JsonOption = False) -> None:
    """Pending time-driven jobs (reminders, overdue checks, ladder reviews, re-visits)."""
    print_rows(with_db(lambda conn: schedule.pending(conn)), as_json,
               ["id", "due_at", "kind", "concern_id", "attempts", "last_error"])


@escalation_app.command("tick")
def escalation_tick() -> None:
    """Run the jobs due now, once (the service does this by itself every few seconds)."""
    from shared.db import create_pool

    settings = get_settings()
    escalation = Escalation(settings, load_policy(settings.escalation_policy_file), utc_now)
    exchange = Topology(settings.namespace, settings.delivery_limit).events_exchange

    async def work() -> int:
        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            ticker = schedule.Ticker(
                lambda: pool, jobs(escalation),
                lambda conn: Outbox(conn, store.SCHEMA, exchange, "carewatch/escalation"),
                utc_now)
            return await ticker.run_due()
        finally:
            await pool.close()

    typer.echo(f"ran {run_async(work())} due job(s)")
