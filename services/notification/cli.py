"""notification's operator commands: notifications and their delivery, retries of failed
ones, alert groups, and silences (who muted what, why, until when)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import typer

from services.cli.common import JsonOption, acting, fail, print_record, print_rows, with_db
from services.notification import store
from services.notification.config import load_routing
from services.notification.routing import parse_duration
from services.notification.silences import validate_matchers
from shared.clock import utc_now
from shared.roles import OPERATORS, SILENCERS
from shared.settings import get_settings

notifications_app = typer.Typer(help="Notifications and deliveries.", no_args_is_help=True)
silences_app = typer.Typer(help="Silences: time-bounded mutes by provider, rule or route.",
                           no_args_is_help=True)
COMMAND_GROUPS = {"notifications": notifications_app, "silences": silences_app}

STATUSES = ("pending", "sent", "failed", "suppressed")


async def _resolve(conn: asyncpg.Connection, prefix: str, find: Any, what: str) -> uuid.UUID:
    matches = await find(conn, prefix)
    if not matches:
        raise fail(f"no {what} with id {prefix!r}")
    if len(matches) > 1:
        raise fail(f"{prefix!r} matches several {what}s; give more of the id")
    return matches[0]


# -- notifications --------------------------------------------------------------------------
@notifications_app.command("list")
def notifications_list(as_json: JsonOption = False,
                       status: Annotated[str | None, typer.Option(
                           help="pending, sent, failed or suppressed")] = None,
                       limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
                       ) -> None:
    """Notifications, newest first, with their delivery state."""
    if status is not None and status not in STATUSES:
        raise fail(f"--status must be one of {', '.join(STATUSES)}")

    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_notifications(conn, status, limit)]

    print_rows(with_db(work), as_json,
               ["notification_id", "channel", "recipient", "subject", "status", "attempts",
                "last_error", "created_at"])


@notifications_app.command("show")
def notifications_show(notification_id: Annotated[str, typer.Argument(
        help="The notification's id (a unique prefix will do).")],
                       as_json: JsonOption = False) -> None:
    """One notification and every delivery attempt."""
    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        found = await _resolve(conn, notification_id, store.find_notification_ids,
                               "notification")
        row = await conn.fetchrow("SELECT * FROM notification.notifications"
                                  " WHERE notification_id = $1", found)
        return {**dict(row), "deliveries": [dict(d) for d in
                                            await store.deliveries_of(conn, found)]}

    print_record(with_db(work), as_json)


@notifications_app.command("retry")
def notifications_retry(
    notification_id: Annotated[str | None, typer.Argument(
        help="A failed notification's id (a unique prefix will do).")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed",
                                             help="Retry every failed notification.")] = False,
) -> None:
    """Send failed notifications again, with a fresh set of attempts; the running service
    picks them up at once."""
    if (notification_id is None) == (not all_failed):
        raise fail("give a notification id or --all-failed (not both)")

    async def work(conn: asyncpg.Connection) -> list[uuid.UUID]:
        ids = None
        if notification_id is not None:
            ids = [await _resolve(conn, notification_id, store.find_notification_ids,
                                  "notification")]
        actor = await acting(conn, OPERATORS)
        async with conn.transaction():
            return await store.requeue_failed(conn, ids, actor)

    requeued = with_db(work)
    if notification_id is not None and not requeued:
        raise fail(f"notification {notification_id} is not failed; nothing to retry")
    for i in requeued:
        typer.echo(f"requeued {i}")
    typer.echo(f"{len(requeued)} notification(s) requeued")


@notifications_app.command("groups")
def notifications_groups(as_json: JsonOption = False) -> None:
    """Open alert groups: their alerts and when each is next sent."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_groups(conn)]

    print_rows(with_db(work), as_json,
               ["route", "recipient", "labels", "firing", "resolved", "next_flush_at",
                "last_flushed_at"])


@notifications_app.command("routes")
def notifications_routes(as_json: JsonOption = False) -> None:
    """The routing configuration in force (validated): each route in order."""
    settings = get_settings()
    try:
        routing = load_routing(settings.notification_routing_file, settings)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    rows = [{"route": r.name,
             "match": "; ".join(f"{k}={'|'.join(v)}" for k, v in r.match.items()) or "*",
             "to": ", ".join(r.to),
             "delivery": r.delivery, "continue": r.continue_, "silenceable": r.silenceable}
            for r in routing.routes]
    print_rows(rows, as_json, ["route", "match", "to", "delivery", "continue", "silenceable"],
               width=80)


# -- silences -------------------------------------------------------------------------------
@silences_app.command("add")
def silences_add(
    reason: Annotated[str, typer.Option("--reason", help="Why (kept for the audit trail).")],
    provider: Annotated[str | None, typer.Option(help="ODS code (pattern).")] = None,
    rule: Annotated[str | None, typer.Option(help="Concern rule (pattern).")] = None,
    route: Annotated[str | None, typer.Option(help="Routing route name (pattern).")] = None,
    event: Annotated[str | None, typer.Option(help="Event type (pattern).")] = None,
    severity: Annotated[str | None, typer.Option(help="Concern severity.")] = None,
    theme: Annotated[str | None, typer.Option(help="Concern theme (pattern).")] = None,
    duration: Annotated[str | None, typer.Option(
        "--for", help="How long, e.g. 2h, 3d (default 2h).")] = None,
    until: Annotated[datetime | None, typer.Option(
        help="Or an end time (ISO 8601; local time if no zone).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Mute matching notifications for a while. Nothing is dropped: each muted one is
    recorded as suppressed, with this silence's id."""
    try:
        matchers = validate_matchers({"provider": provider, "rule": rule, "route": route,
                                      "event": event, "severity": severity, "theme": theme})
        now = utc_now()
        if until is not None and duration is not None:
            raise ValueError("give --for or --until, not both")
        ends = (until if until.tzinfo else until.astimezone()) if until is not None \
            else now + parse_duration(duration or "2h")
        if ends <= now:
            raise ValueError("the silence would already be over")
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if not reason.strip():
        raise fail("--reason must say why")

    async def work(conn: asyncpg.Connection) -> uuid.UUID:
        actor = await acting(conn, SILENCERS)
        return await store.add_silence(conn, matchers=matchers, starts_at=now, ends_at=ends,
                                       created_by=actor, reason=reason.strip())

    silence_id = with_db(work)
    if as_json:
        print_record({"silence_id": silence_id, "matchers": matchers, "ends_at": ends}, True)
    else:
        typer.echo(f"silence {silence_id} until {ends.isoformat(timespec='seconds')}:"
                   f" {', '.join(f'{k}={v}' for k, v in matchers.items())}")


@silences_app.command("list")
def silences_list(
    all_: Annotated[bool, typer.Option("--all", help="Include expired and ended ones.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Silences in force or to come (or all), with who added them, why, and how many
    notifications each has suppressed."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_silences(conn, utc_now(), all_)]

    print_rows(with_db(work), as_json,
               ["silence_id", "matchers", "ends_at", "created_by", "reason", "suppressed",
                "expired_by"])


@silences_app.command("expire")
def silences_expire(
    silence_id: Annotated[str, typer.Argument(help="The silence's id (a unique prefix).")],
    reason: Annotated[str | None, typer.Option(help="Why it ends early.")] = None,
) -> None:
    """End a silence now (it stays listed with --all, with who ended it)."""
    async def work(conn: asyncpg.Connection) -> tuple[uuid.UUID, bool]:
        actor = await acting(conn, SILENCERS)
        found = await _resolve(conn, silence_id, store.find_silence_ids, "silence")
        return found, await store.expire_silence(conn, found, by=actor, reason=reason,
                                                 now=utc_now())

    found, expired = with_db(work)
    if not expired:
        raise fail(f"silence {found} is already over")
    typer.echo(f"expired silence {found}")

