"""escalation's operator commands: meetings, action plans, and the rest of escalation.

Commands that change things write their events to escalation's outbox in the same
transaction; the running escalation service publishes them (woken by NOTIFY).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from services.cli.common import (
    LONDON,
    JsonOption,
    acting,
    fail,
    print_record,
    print_rows,
    run_async,
    with_db,
)
from services.cli.lazy import modules
from shared.clock import utc_now
from shared.roles import CLOSERS, PLANNERS

# What the commands use loads when a command runs, not for `--help` (issue 20: the CLI
# starts in well under half a second).
if TYPE_CHECKING:
    import asyncpg

    from services.escalation import app, plans, schedule, store, views
    from services.escalation import config as policy
    from shared import outbox, settings, topology
else:
    app, plans, policy, schedule, store, views, outbox, settings, topology = modules(
        "services.escalation.app", "services.escalation.plans", "services.escalation.config",
        "services.escalation.schedule", "services.escalation.store", "services.escalation.views",
        "shared.outbox", "shared.settings", "shared.topology")

T = TypeVar("T")

meetings_app = typer.Typer(help="Remedial-action meetings.", no_args_is_help=True)
actions_app = typer.Typer(help="Remedial actions: the action plans agreed with providers.",
                          no_args_is_help=True)
escalation_app = typer.Typer(help="Escalation: concerns, the audit trail, CQRM agendas, visits,"
                             " the schedule.", no_args_is_help=True)
people_app = typer.Typer(help="The commissioner's people on the meeting rota: hours, daily cap,"
                         " buffer, leave.", no_args_is_help=True)
COMMAND_GROUPS = {"meetings": meetings_app, "actions": actions_app,
                  "escalation": escalation_app, "people": people_app}



def _escalation() -> app.Escalation:
    config = settings.get_settings()
    return app.Escalation(config, policy.load_policy(config.escalation_policy_file), utc_now)


def _plans() -> plans.ActionPlans:
    return _escalation().plans


Reason = Annotated[str, typer.Option(help="Why (kept in the audit trail and the update).")]


def _when(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{option} {text!r}: expected YYYY-MM-DDTHH:MM") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=LONDON)


def _command(work: Callable[[asyncpg.Connection, outbox.Outbox, str], Awaitable[T]],
             roles: tuple[str, ...] = PLANNERS) -> T:
    """Run a command in one transaction with escalation's outbox, as the console's actor
    (the account of CAREWATCH_TOKEN, which must hold one of ``roles``, or the local
    operator)."""
    config = settings.get_settings()
    exchange = topology.Topology(config.namespace, config.delivery_limit).events_exchange

    async def run(conn: asyncpg.Connection) -> T:
        actor = await acting(conn, roles)
        async with conn.transaction():
            return await work(conn, outbox.Outbox(conn, store.SCHEMA, exchange,
                                                  "carewatch/escalation"), actor)

    try:
        return with_db(run, config)
    except (plans.NotFound, plans.Conflict) as exc:
        raise fail(str(exc), 1) from exc


def _parse_action(text: str) -> plans.NewAction:
    try:
        due, owner, description = (part.strip() for part in text.split("|", 2))
        return plans.NewAction(description, owner, date.fromisoformat(due))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r}: expected 'YYYY-MM-DD|owner|description'") from exc


# -- meetings ----------------------------------------------------------------------------------
class MeetingStatus(StrEnum):
    scheduled = "scheduled"
    held = "held"
    cancelled = "cancelled"


@meetings_app.command("list")
def meetings_list(as_json: JsonOption = False,
                  status: Annotated[MeetingStatus | None, typer.Option(
                      help="Only meetings in this state.")] = None,
                  provider: Annotated[str | None, typer.Option(help="ODS code")] = None,
                  limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 100,
                  ) -> None:
    """Meetings booked by escalation, soonest first (times in Europe/London)."""
    wanted = status.value if status else None
    ods = provider.strip().upper() if provider else None

    async def work(conn: asyncpg.Connection) -> tuple[list[dict[str, Any]], int]:
        total = await conn.fetchval(
            "SELECT count(*) FROM escalation.meetings WHERE ($1::text IS NULL OR status = $1)"
            " AND ($2::text IS NULL OR ods_code = $2)", wanted, ods)
        return await store.list_meetings(conn, limit, wanted, ods), total

    rows, total = with_db(work)
    print_rows(rows, as_json, ["meeting_id", "ods_code", "severity", "starts_at", "breach",
                               "status", "sequence"], total=total)


@meetings_app.command("show")
def meetings_show(meeting_id: uuid.UUID, as_json: JsonOption = False) -> None:
    """One meeting: time (Europe/London), agenda, its concerns, attendees with their replies,
    outcome."""
    row = with_db(lambda conn: views.meeting_file(conn, meeting_id))
    if row is None:
        raise fail(f"no meeting {meeting_id}", 1)
    if not as_json:
        row["attendees"] = [_attendee(a) for a in row.get("attendees") or []]
        if isinstance(row.get("organizer"), dict):
            row["organizer"] = _attendee(row["organizer"])
    print_record(row, as_json)


def _attendee(a: Any) -> Any:
    """``Name <e-mail> (role)`` for an attendee record; anything else as it is."""
    if not isinstance(a, dict) or "email" not in a:
        return a
    role = f" ({a['role']})" if a.get("role") else ""
    return f"{a.get('name') or ''} <{a['email']}>{role}".strip()


@meetings_app.command("outcome")
def meetings_outcome(
    meeting_id: uuid.UUID,
    outcome: Annotated[str, typer.Option(help="What the meeting concluded.")],
    action: Annotated[list[str] | None, typer.Option(
        "--action", help="An agreed action: 'YYYY-MM-DD|owner|description' (repeatable).")]
    = None,
) -> None:
    """Record that the meeting was held, what it concluded and the action plan it agreed."""
    new = [_parse_action(a) for a in action or []]
    plans = _plans()
    result = _command(lambda conn, outbox, by: plans.record_outcome(
        conn, outbox, meeting_id, outcome=outcome, actions=new, recorded_by=by), PLANNERS)
    print_record(result)


@meetings_app.command("reschedule")
def meetings_reschedule(
    meeting_id: uuid.UUID, reason: Reason,
    to: Annotated[str | None, typer.Option(
        help="New start, YYYY-MM-DDTHH:MM (London time); omitted: the next free slot.")] = None,
) -> None:
    """Move a meeting not yet started (one updated invitation within the coalescing window)."""
    control = _escalation().control
    when = _when(to, "--to") if to else None
    print_record(_command(lambda conn, outbox, by: control.reschedule(
        conn, meeting_id, actor=by, reason=reason, to=when)))


@meetings_app.command("cancel")
def meetings_cancel(meeting_id: uuid.UUID, reason: Reason) -> None:
    """Cancel a meeting not yet started (the cancellation goes at once)."""
    control = _escalation().control
    print_record(_command(lambda conn, outbox, by: control.cancel(
        conn, outbox, meeting_id, actor=by, reason=reason)))


@meetings_app.command("attendee")
def meetings_attendee(
    meeting_id: uuid.UUID, reason: Reason,
    email: Annotated[str, typer.Option(help="The attendee's e-mail.")],
    name: Annotated[str | None, typer.Option(help="Their name (default: from the rota).")]
    = None,
    role: Annotated[str | None, typer.Option(help="Their role at the meeting.")] = None,
    replaces: Annotated[str | None, typer.Option(
        help="E-mail of the attendee they replace (a substitution).")] = None,
) -> None:
    """Add an attendee to a meeting, or substitute one for another."""
    control = _escalation().control
    print_record(_command(lambda conn, outbox, by: control.change_attendee(
        conn, meeting_id, actor=by, reason=reason, email=email, name=name, role=role,
        replaces=replaces)))


# -- people ------------------------------------------------------------------------------------
@people_app.command("list")
def people_list(as_json: JsonOption = False,
                role: Annotated[str | None, typer.Option(help="Only this role.")] = None,
                everyone: Annotated[bool, typer.Option(
                    "--all", help="Include people taken off the rota.")] = False) -> None:
    """People on the rota with their hours, daily cap and buffer."""
    print_rows(with_db(lambda conn: store.list_people(conn, role, None if everyone else True)),
               as_json, ["email", "name", "role", "works_from", "works_until",
                         "max_meetings_per_day", "buffer_minutes", "active"])


@people_app.command("set")
def people_set(
    email: str,
    name: Annotated[str | None, typer.Option()] = None,
    role: Annotated[str | None, typer.Option(
        help="quality lead, deputy quality lead, lay member, safeguarding lead or head of"
             " quality")] = None,
    works_from: Annotated[str | None, typer.Option("--from", help="HH:MM")] = None,
    works_until: Annotated[str | None, typer.Option("--until", help="HH:MM")] = None,
    days: Annotated[str | None, typer.Option(
        help="Working days, e.g. mon,tue,wed,thu")] = None,
    max_per_day: Annotated[int | None, typer.Option(help="Meetings a day at most.")] = None,
    buffer: Annotated[int | None, typer.Option(help="Minutes between meetings.")] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive",
                                                help="On or off the rota.")] = None,
) -> None:
    """Add a person to the rota, or change what is given."""
    week = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    try:
        working_days = [week.index(d.strip().lower()[:3]) for d in days.split(",")] \
            if days else None
        start = time.fromisoformat(works_from) if works_from else None
        end = time.fromisoformat(works_until) if works_until else None
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}: --days mon,tue,... --from/--until HH:MM") from exc
    control = _escalation().control
    print_record(_command(lambda conn, outbox, by: control.set_person(
        conn, email=email, name=name, role=role, works_from=start, works_until=end,
        working_days=working_days, max_meetings_per_day=max_per_day, buffer_minutes=buffer,
        active=active)))


@people_app.command("away")
def people_away(
    email: str, reason: Reason,
    start: Annotated[str, typer.Option("--from", help="YYYY-MM-DDTHH:MM (London time)")],
    end: Annotated[str, typer.Option("--until", help="YYYY-MM-DDTHH:MM (London time)")],
) -> None:
    """Record leave or another commitment: no meeting is booked for them in it."""
    control = _escalation().control
    starts_at, ends_at = _when(start, "--from"), _when(end, "--until")
    print_record(_command(lambda conn, outbox, by: control.add_unavailability(
        conn, email=email, starts_at=starts_at, ends_at=ends_at, reason=reason,
        actor=by)))


@people_app.command("import-calendar")
def people_import_calendar(email: str, path: Path) -> None:
    """Import busy periods from an iCalendar file (free/busy VFREEBUSY, or VEVENTs)."""
    control = _escalation().control
    data = path.read_bytes()
    print_record(_command(lambda conn, outbox, by: control.import_calendar(
        conn, email=email, data=data, actor=by)))


@people_app.command("unavailable")
def people_unavailable(email: Annotated[str | None, typer.Argument(
        help="One person's e-mail (default: everyone).")] = None,
        as_json: JsonOption = False) -> None:
    """Leave and commitments still to come (of one person, or everyone)."""
    print_rows(with_db(lambda conn: store.list_unavailability(conn, email, utc_now())), as_json,
               ["id", "email", "starts_at", "ends_at", "reason", "source"])


@people_app.command("available")
def people_available(period_id: int) -> None:
    """Remove an unavailable period (by its id)."""
    async def work(conn: asyncpg.Connection, _: outbox.Outbox, by: str) -> dict[str, Any]:
        removed = await store.remove_unavailability(conn, period_id)
        if removed is None:
            raise plans.NotFound(f"no unavailable period {period_id}")
        return removed
    print_record(_command(work))


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
) -> None:
    """Add a remedial action to a concern's plan (reminder and overdue check scheduled)."""
    from services.escalation.plans import NewAction

    try:
        due_on = date.fromisoformat(due)
    except ValueError as exc:
        raise typer.BadParameter(f"--due {due!r}: expected YYYY-MM-DD") from exc
    plans = _plans()
    print_record(_command(lambda conn, outbox, by: plans.add_action(
        conn, outbox, concern_id, NewAction(description, owner, due_on), recorded_by=by),
        PLANNERS))


@actions_app.command("complete")
def actions_complete(
    action_id: uuid.UUID,
    evidence: Annotated[str, typer.Option(help="Evidence of completion.")],
    party: Annotated[str, typer.Option(help="provider or commissioner")] = "provider",
) -> None:
    """Complete a remedial action, with the evidence."""
    if party not in ("provider", "commissioner"):
        raise typer.BadParameter("--party must be provider or commissioner")
    plans = _plans()
    print_record(_command(lambda conn, outbox, by: plans.complete_action(
        conn, outbox, action_id, evidence=evidence, completed_by=by, party=party), PLANNERS))


# -- escalation --------------------------------------------------------------------------------
@escalation_app.command("concerns")
def escalation_concerns(as_json: JsonOption = False,
                        status: Annotated[str | None, typer.Option(
                            help="open, closed or resolved")] = None) -> None:
    """Concerns as escalation knows them, with their action and ladder level."""
    print_rows(with_db(lambda conn: store.list_concerns(conn, status)), as_json,
               ["concern_id", "ods_code", "theme", "severity", "action", "status", "level"])


@escalation_app.command("show")
def escalation_show(concern_id: uuid.UUID, as_json: JsonOption = False) -> None:
    """A concern with its meeting, action plan, ladder, visits and pending jobs."""
    from services.escalation import views

    record = with_db(lambda conn: views.concern_file(conn, concern_id))
    if record is None:
        raise fail(f"no concern {concern_id}", 1)
    print_record(record, as_json)


@escalation_app.command("audit")
def escalation_audit(concern_id: uuid.UUID, as_json: JsonOption = False) -> None:
    """The audit trail of a concern, oldest first."""
    print_rows(with_db(lambda conn: store.audit_trail(conn, concern_id)), as_json,
               ["at", "party", "actor", "action", "detail"], width=100)


@escalation_app.command("close")
def escalation_close(
    concern_id: uuid.UUID,
    reason: Annotated[str, typer.Option(help="Why the concern can close.")],
) -> None:
    """Close a concern whose actions are complete (publishes concern.closed.v1)."""
    plans = _plans()
    closed = _command(lambda conn, outbox, by: plans.close_concern(
        conn, outbox, concern_id, closed_by=by, reason=reason), CLOSERS)
    print_record(closed.model_dump(mode="json"))


@escalation_app.command("cqrm")
def escalation_cqrm(as_json: JsonOption = False,
                    provider: Annotated[str | None, typer.Option(help="ODS code")] = None) -> None:
    """The agenda of each provider's coming CQRM (moderate concerns)."""
    from services.escalation import views
    from shared.clock import utc_now

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

    config = settings.get_settings()
    escalation = _escalation()
    exchange = topology.Topology(config.namespace, config.delivery_limit).events_exchange

    async def work() -> int:
        pool = await create_pool(config.database_url, min_size=1, max_size=2)
        try:
            ticker = schedule.Ticker(
                lambda: pool, app.jobs(escalation),
                lambda conn: outbox.Outbox(conn, store.SCHEMA, exchange, "carewatch/escalation"),
                utc_now)
            return await ticker.run_due()
        finally:
            await pool.close()

    typer.echo(f"ran {run_async(work())} due job(s)")
