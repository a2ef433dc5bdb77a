"""Operator commands over the whole system: dead-letter queues, outboxes, one-screen status."""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote, urlsplit

import typer

from services.cli.common import (
    JsonOption,
    connect_amqp,
    fail,
    print_rows,
    run_async,
    with_connection,
    with_db,
)
from shared.clock import utc_now
from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    import aio_pika
    import asyncpg

    from shared.topology import Subscription

dlq_app = typer.Typer(help="Dead-letter queues: what failed, why, and replay.",
                      no_args_is_help=True)
outbox_app = typer.Typer(help="Transactional outboxes.", no_args_is_help=True)
COMMAND_GROUPS = {"dlq": dlq_app, "outbox": outbox_app}

@cache
def schemas() -> dict[str, str]:
    """Each service's PostgreSQL schema."""
    from services.catalogue import SERVICES

    return {name: importlib.import_module(f"services.{name}.store").SCHEMA for name in SERVICES}


def _subscriptions(settings: Settings) -> list[Subscription]:
    from services.catalogue import all_subscriptions
    from shared.topology import Topology

    return all_subscriptions(Topology(settings.namespace, settings.delivery_limit))


def _find(settings: Settings, queue: str) -> Subscription:
    for sub in _subscriptions(settings):
        if queue in (sub.queue, sub.dead_letter_queue):
            return sub
    names = ", ".join(s.queue for s in _subscriptions(settings))
    raise fail(f"no such queue {queue!r}; queues: {names}")


async def _queue_counts(settings: Settings, names: list[str]) -> dict[str, tuple[int, int]]:
    """(messages, consumers) of each queue."""
    import aio_pika

    connection = await connect_amqp(settings)
    counts: dict[str, tuple[int, int]] = {}
    async with connection:
        channel = await connection.channel()
        for name in names:
            try:
                q = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                counts[name] = (-1, -1)
                channel = await connection.channel()
                continue
            r = q.declaration_result
            counts[name] = (r.message_count or 0, r.consumer_count or 0)
    return counts


@dlq_app.command("list")
def dlq_list(as_json: JsonOption = False) -> None:
    """Every dead-letter queue and how many messages it holds."""
    settings = get_settings()
    subs = _subscriptions(settings)
    counts = run_async(_queue_counts(settings, [s.dead_letter_queue for s in subs]))
    rows = [{"service": s.service, "dead_letter_queue": s.dead_letter_queue,
             "messages": counts[s.dead_letter_queue][0]} for s in subs]
    print_rows(rows, as_json, ["service", "dead_letter_queue", "messages"], width=80)


def _describe(msg: aio_pika.abc.AbstractIncomingMessage) -> dict[str, Any]:
    """What ``shared.dead_letters.describe`` says of a message, with its body (the CLI is for
    operators, whose role may see quarantined and dead-lettered submissions)."""
    from shared.dead_letters import describe  # here: the CLI's start-up stays light

    told = describe(msg.message_id, msg.routing_key, dict(msg.headers or {}))
    body = msg.body.decode("utf-8", errors="replace")
    return {
        "message_id": told["message_id"],
        "routing_key": told["routing_key"],
        "queue": told["queue"],
        "dead_lettered_because": told["reason"],
        "times": told["times"],
        "dead_lettered_at": told["dead_lettered_at"],
        "body": body if len(body) <= 2000 else body[:2000] + "...",
    }


async def _failures(settings: Settings, service: str,
                    message_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    async def work(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
        rows = await conn.fetch(
            f'SELECT message_id, attempt, error, failed_at FROM "{schemas()[service]}".'
            "delivery_failures WHERE message_id = ANY($1::text[]) ORDER BY id", message_ids)
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["message_id"], []).append(
                {"attempt": r["attempt"], "error": r["error"], "at": str(r["failed_at"])})
        return out

    return await with_connection(settings, work)


async def _peek(settings: Settings, sub: Subscription, limit: int) -> list[dict[str, Any]]:
    """Read up to ``limit`` dead-lettered messages without consuming them: they are
    left unacknowledged and return to the queue, in order, when the channel closes."""
    connection = await connect_amqp(settings)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(sub.dead_letter_queue, passive=True)
        seen = []
        for _ in range(limit):
            msg = await queue.get(no_ack=False, fail=False)
            if msg is None:
                break
            seen.append(_describe(msg))
    failures = await _failures(settings, sub.service, [m["message_id"] for m in seen
                                                       if m["message_id"]])
    for m in seen:
        m["handler_errors"] = failures.get(m["message_id"], [])
    return seen


@dlq_app.command("show")
def dlq_show(queue: Annotated[str, typer.Argument(help="A queue or its dead-letter queue.")],
             limit: int = 20, as_json: JsonOption = False) -> None:
    """The messages in a dead-letter queue, with why they were dead-lettered and the handler
    errors recorded for them (left in the queue)."""
    import json

    settings = get_settings()
    messages = run_async(_peek(settings, _find(settings, queue), limit))
    if as_json:
        typer.echo(json.dumps(messages, default=str, indent=2))
        return
    if not messages:
        typer.echo("(empty)")
    for m in messages:
        typer.echo(f"- {m['message_id']}  {m['routing_key']}  from {m['queue']}:"
                   f" {m['dead_lettered_because']} at {m['dead_lettered_at']}")
        for e in m["handler_errors"][-3:]:
            typer.echo(f"    attempt {e['attempt']}: {e['error'][:300]}")
        typer.echo(f"    body: {m['body'][:300]}")


async def _replay(settings: Settings, sub: Subscription, message_id: str | None,
                  limit: int) -> int:
    """Move dead-lettered messages back to their queue: published (confirmed) before the
    dead-lettered copy is acknowledged, so a crash in between duplicates, never loses;
    handlers are idempotent on the message id."""
    import aio_pika

    connection = await connect_amqp(settings)
    replayed = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(sub.dead_letter_queue, passive=True)
        skipped: list[aio_pika.abc.AbstractIncomingMessage] = []
        while replayed < limit:
            msg = await queue.get(no_ack=False, fail=False)
            if msg is None:
                break
            if message_id and msg.message_id != message_id:
                skipped.append(msg)
                continue
            headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("x-")}
            headers["carewatch-replayed-at"] = utc_now().isoformat()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    msg.body, headers=headers, content_type=msg.content_type,
                    message_id=msg.message_id, correlation_id=msg.correlation_id,
                    timestamp=msg.timestamp, type=msg.type, app_id=msg.app_id,
                    # Replayed as the operator's broker user, which consumers accept.
                    user_id=unquote(urlsplit(settings.amqp_url).username or "guest"),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=sub.queue, mandatory=True)
            await msg.ack()
            replayed += 1
        for msg in skipped:
            await msg.nack(requeue=True)
    return replayed


@dlq_app.command("replay")
def dlq_replay(
    queue: Annotated[str, typer.Argument(help="A queue or its dead-letter queue.")],
    message_id: Annotated[str | None, typer.Option(help="Only this message.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 1000,
) -> None:
    """Send dead-lettered messages back to their queue (after the cause is fixed)."""
    settings = get_settings()
    sub = _find(settings, queue)
    n = run_async(_replay(settings, sub, message_id, limit))
    typer.echo(f"replayed {n} message(s) from {sub.dead_letter_queue} to {sub.queue}")
    if message_id and not n:
        raise fail(f"message {message_id} is not in {sub.dead_letter_queue}", 1)


async def _outbox_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = []
    for service, schema in schemas().items():
        r = await conn.fetchrow(
            f'SELECT count(*) AS backlog, EXTRACT(EPOCH FROM now() - min(created_at)) AS age,'
            f' count(*) FILTER (WHERE attempts > 0) AS refused,'
            f' (array_agg(last_error ORDER BY seq) FILTER (WHERE attempts > 0))[1] AS error'
            f' FROM "{schema}".outbox')
        rows.append({"service": service, "backlog": r["backlog"],
                     "oldest_seconds": round(r["age"] or 0, 1),
                     "refused_by_broker": r["refused"], "last_error": r["error"] or ""})
    return rows


@outbox_app.command("status")
def outbox_status(as_json: JsonOption = False) -> None:
    """Events committed but not yet published, per service (should be near zero)."""
    print_rows(with_db(_outbox_rows), as_json,
               ["service", "backlog", "oldest_seconds", "refused_by_broker", "last_error"])


async def _status(settings: Settings) -> dict[str, Any]:
    import asyncpg

    from shared.topology import Topology

    subs = _subscriptions(settings)
    topology = Topology(settings.namespace, settings.delivery_limit)
    counts = await _queue_counts(settings, [*(s.queue for s in subs),
                                            *(s.dead_letter_queue for s in subs),
                                            topology.unrouted_queue])

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        async def scalar(sql: str) -> Any:
            try:
                return await conn.fetchval(sql)
            except asyncpg.UndefinedTableError:
                return None

        return {
            "outbox": await _outbox_rows(conn),
            "quarantine_open": await scalar(
                "SELECT count(*) FROM intake.quarantine WHERE status = 'open'"),
            "feedback_accepted": await scalar("SELECT count(*) FROM intake.feedback"),
            "concerns_open": dict(await conn.fetch(
                "SELECT severity, count(*) FROM monitor.concerns WHERE status = 'open'"
                " GROUP BY severity")),
            "meetings_upcoming": await scalar(
                "SELECT count(*) FROM escalation.meetings WHERE status = 'scheduled'"
                " AND starts_at > now()"),
            "notifications": dict(await conn.fetch(
                "SELECT status, count(*) FROM notification.notifications GROUP BY status")),
        }

    db = await with_connection(settings, work)
    queues = [{"service": s.service, "queue": s.queue, "messages": counts[s.queue][0],
               "consumers": counts[s.queue][1], "dead_letters": counts[s.dead_letter_queue][0]}
              for s in subs]
    return {"queues": queues, "unrouted": counts[topology.unrouted_queue][0], **db}


def status(as_json: JsonOption = False) -> None:
    """One screen: queues and consumers, dead letters, outbox backlogs, quarantine, open
    concerns, upcoming meetings and notification delivery."""
    import json

    settings = get_settings()
    s = run_async(_status(settings))
    if as_json:
        typer.echo(json.dumps(s, default=str, indent=2))
        return
    typer.secho(f"carewatch  namespace {settings.namespace}", bold=True)
    typer.echo("")
    print_rows(s["queues"], False, ["service", "queue", "messages", "consumers", "dead_letters"],
               width=70)
    typer.echo("")
    print_rows(s["outbox"], False, ["service", "backlog", "oldest_seconds"])
    typer.echo("")
    for line in status_lines(s):
        typer.echo(line)
    if status_needs_attention(s):
        typer.secho("attention: dead letters, unrouted events or failed notifications above",
                    fg="yellow")


def _counted(counts: dict[str, int] | None, order: tuple[str, ...]) -> str:
    """``{"serious": 1, "low": 4}`` as ``1 serious, 4 low`` (in ``order``); 0 when none."""
    counts = counts or {}
    parts = [f"{counts[k]} {k}" for k in (*order, *sorted(set(counts) - set(order)))
             if counts.get(k)]
    return ", ".join(parts) if parts else "0"


def status_lines(s: dict[str, Any]) -> list[str]:
    """The summary under the tables of ``carewatch status``, for people."""
    def n(value: Any) -> str:
        return "-" if value is None else f"{value:,}"

    concerns = _counted(s["concerns_open"], ("serious", "high", "moderate", "low"))
    notifications = _counted(s["notifications"], ("sent", "pending", "failed", "suppressed"))
    return [
        f"feedback accepted:      {n(s['feedback_accepted'])}",
        f"quarantined (open):     {n(s['quarantine_open'])}",
        f"unrouted events:        {n(s['unrouted'])}",
        f"concerns open:          {concerns}",
        f"upcoming meetings:      {n(s['meetings_upcoming'])}",
        f"notifications:          {notifications}",
    ]


def status_needs_attention(s: dict[str, Any]) -> bool:
    return bool(s["unrouted"] or any(q["dead_letters"] for q in s["queues"])
                or (s["notifications"] or {}).get("failed"))
