"""notification's tables: notifications (recorded before sending), the delivery log, alert
groups and their alerts, silences, and rejected submissions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

SCHEMA = "notification"
DISPATCH_CHANNEL = "carewatch_notification_dispatch"


def message_id_for(notification_id: uuid.UUID) -> str:
    """Stable Message-ID: a resend after a crash carries the same one, so mail systems
    can drop the copy."""
    return f"<{notification_id}@carewatch>"


# -- notifications --------------------------------------------------------------------------
async def record(conn: asyncpg.Connection, *, source_event_id: uuid.UUID, event_type: str,
                 channel: str, recipient: str, subject: str, payload: dict[str, Any],
                 kind: str = "event", route: str | None = None,
                 silence_id: uuid.UUID | None = None) -> uuid.UUID | None:
    """Record a notification to send (or, under a silence, as suppressed); returns its id,
    or None if it was already recorded: one row per (source, recipient, channel)."""
    notification_id = uuid.uuid4()
    status = "pending" if silence_id is None else "suppressed"
    inserted = await conn.fetchval(
        "INSERT INTO notification.notifications (notification_id, source_event_id, event_type,"
        " channel, recipient, subject, payload, message_id, kind, route, status, silence_id)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
        " ON CONFLICT (source_event_id, recipient, channel) DO NOTHING RETURNING true",
        notification_id, source_event_id, event_type, channel, recipient, subject, payload,
        message_id_for(notification_id), kind, route, status, silence_id)
    if not inserted:
        return None
    if silence_id is None:
        await conn.execute("SELECT pg_notify($1, '')", DISPATCH_CHANNEL)
    else:
        await conn.execute(
            "INSERT INTO notification.deliveries (notification_id, attempt, outcome, detail)"
            " VALUES ($1, 0, 'suppressed', $2)", notification_id, f"silence {silence_id}")
    return notification_id


async def claim_next(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """One due notification, locked until this transaction ends (other replicas skip it;
    if this process dies, the lock goes with its connection and the row is due again)."""
    return await conn.fetchrow(
        "SELECT * FROM notification.notifications WHERE status = 'pending'"
        " AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 1"
        " FOR UPDATE SKIP LOCKED")


async def mark(conn: asyncpg.Connection, notification_id: uuid.UUID, *, status: str,
               attempt: int, outcome: str, detail: str | None,
               retry_in: float | None = None) -> None:
    """Record an attempt; ``retry_in`` seconds from now (the database's clock, which
    ``claim_next`` compares with) is when a pending one is tried again."""
    await conn.execute(
        "UPDATE notification.notifications SET status = $2, attempts = $3, last_error = $4,"
        " next_attempt_at = COALESCE(now() + make_interval(secs => $5::float8),"
        " next_attempt_at),"
        " sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END"
        " WHERE notification_id = $1",
        notification_id, status, attempt, None if status == "sent" else detail, retry_in)
    await conn.execute(
        "INSERT INTO notification.deliveries (notification_id, attempt, outcome, detail)"
        " VALUES ($1, $2, $3, $4)", notification_id, attempt, outcome, detail)


async def requeue_failed(conn: asyncpg.Connection, ids: list[uuid.UUID] | None,
                         by: str) -> list[uuid.UUID]:
    """Put failed notifications back to pending, with a fresh set of attempts (all failed
    ones when ``ids`` is None); the delivery log keeps the earlier attempts."""
    rows = await conn.fetch(
        "UPDATE notification.notifications SET status = 'pending', attempts = 0,"
        " next_attempt_at = now() WHERE status = 'failed'"
        " AND ($1::uuid[] IS NULL OR notification_id = ANY($1::uuid[]))"
        " RETURNING notification_id", ids)
    requeued = [r["notification_id"] for r in rows]
    if requeued:
        await conn.executemany(
            "INSERT INTO notification.deliveries (notification_id, attempt, outcome, detail)"
            " VALUES ($1, 0, 'requeued', $2)", [(i, f"retried by {by}") for i in requeued])
        await conn.execute("SELECT pg_notify($1, '')", DISPATCH_CHANNEL)
    return requeued


async def find_notification_ids(conn: asyncpg.Connection, prefix: str) -> list[uuid.UUID]:
    """Notifications whose id starts with ``prefix`` (operators type short ids)."""
    rows = await conn.fetch(
        "SELECT notification_id FROM notification.notifications"
        " WHERE notification_id::text LIKE $1 || '%' LIMIT 2", prefix.lower())
    return [r["notification_id"] for r in rows]


async def list_notifications(conn: asyncpg.Connection, status: str | None = None,
                             limit: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT notification_id, kind, event_type, route, channel, recipient, subject, status,"
        " attempts, last_error, silence_id, created_at, sent_at"
        " FROM notification.notifications"
        " WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC LIMIT $2",
        status, limit)


async def deliveries_of(conn: asyncpg.Connection,
                        notification_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT attempt, outcome, detail, at FROM notification.deliveries"
        " WHERE notification_id = $1 ORDER BY id", notification_id)


async def count_by_status(conn: asyncpg.Connection) -> dict[str, int]:
    return {r["status"]: r["n"] for r in await conn.fetch(
        "SELECT status, count(*) AS n FROM notification.notifications GROUP BY status")}


# -- alert groups ---------------------------------------------------------------------------
async def open_group(conn: asyncpg.Connection, *, group_key: str, route: str, delivery: str,
                     channel: str, recipient: str, labels: dict[str, str],
                     now: datetime) -> asyncpg.Record:
    """The group for this key, created if new; locked for the rest of the transaction."""
    return await conn.fetchrow(
        "INSERT INTO notification.alert_groups (group_id, group_key, route, delivery, channel,"
        " recipient, labels, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
        " ON CONFLICT (group_key) DO UPDATE SET labels = EXCLUDED.labels"
        " RETURNING group_id, next_flush_at, last_flushed_at",
        uuid.uuid4(), group_key, route, delivery, channel, recipient, labels, now)


async def put_alert(conn: asyncpg.Connection, group_id: uuid.UUID, *, alert_key: str,
                    status: str, event_type: str, payload: dict[str, Any],
                    now: datetime) -> None:
    """Add an alert to a group, or replace its state (de-duplication by ``alert_key``)."""
    await conn.execute(
        "INSERT INTO notification.group_alerts (group_id, alert_key, status, event_type,"
        " payload, first_seen_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$6)"
        " ON CONFLICT (group_id, alert_key) DO UPDATE SET status = EXCLUDED.status,"
        " event_type = EXCLUDED.event_type, payload = EXCLUDED.payload,"
        " version = group_alerts.version + 1, updated_at = EXCLUDED.updated_at",
        group_id, alert_key, status, event_type, payload, now)


async def groups_holding(conn: asyncpg.Connection, alert_key: str) -> list[asyncpg.Record]:
    """Every group an alert is in (locked), with its route and timers."""
    return await conn.fetch(
        "SELECT g.* FROM notification.alert_groups g JOIN notification.group_alerts a"
        " USING (group_id) WHERE a.alert_key = $1 ORDER BY g.group_key FOR UPDATE OF g",
        alert_key)


async def drop_alert(conn: asyncpg.Connection, group_id: uuid.UUID, alert_key: str) -> None:
    await conn.execute("DELETE FROM notification.group_alerts WHERE group_id = $1"
                       " AND alert_key = $2", group_id, alert_key)


async def set_next_flush(conn: asyncpg.Connection, group_id: uuid.UUID,
                         next_flush_at: datetime | None) -> None:
    await conn.execute("UPDATE notification.alert_groups SET next_flush_at = $2"
                       " WHERE group_id = $1", group_id, next_flush_at)


async def claim_due_groups(conn: asyncpg.Connection, now: datetime,
                           limit: int) -> list[asyncpg.Record]:
    """Groups whose timer has come, locked for this transaction (replicas skip them)."""
    return await conn.fetch(
        "SELECT * FROM notification.alert_groups WHERE next_flush_at <= $1"
        " ORDER BY next_flush_at LIMIT $2 FOR UPDATE SKIP LOCKED", now, limit)


async def alerts_of(conn: asyncpg.Connection, group_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM notification.group_alerts WHERE group_id = $1",
                            group_id)


async def finish_flush(conn: asyncpg.Connection, group_id: uuid.UUID, *, now: datetime,
                       sent: bool, done: list[str], next_flush_at: datetime | None,
                       close: bool) -> None:
    """After a flush: alerts marked as told, resolved ones removed, the timer reset; an
    empty group is closed."""
    if close:
        await conn.execute("DELETE FROM notification.alert_groups WHERE group_id = $1",
                           group_id)
        return
    await conn.execute("UPDATE notification.group_alerts SET notified_version = version"
                       " WHERE group_id = $1", group_id)
    await conn.execute("DELETE FROM notification.group_alerts WHERE group_id = $1"
                       " AND alert_key = ANY($2::text[])", group_id, done)
    await conn.execute(
        "UPDATE notification.alert_groups SET next_flush_at = $2,"
        " last_flushed_at = CASE WHEN $3 THEN $4 ELSE last_flushed_at END,"
        " flushes = flushes + 1 WHERE group_id = $1",
        group_id, next_flush_at, sent, now)


async def list_groups(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT g.group_id, g.route, g.delivery, g.channel, g.recipient, g.labels,"
        " g.next_flush_at, g.last_flushed_at, g.flushes,"
        " count(a.alert_key) FILTER (WHERE a.status = 'firing') AS firing,"
        " count(a.alert_key) FILTER (WHERE a.status = 'resolved') AS resolved"
        " FROM notification.alert_groups g LEFT JOIN notification.group_alerts a USING (group_id)"
        " GROUP BY g.group_id ORDER BY g.next_flush_at NULLS LAST")


# -- silences -------------------------------------------------------------------------------
async def add_silence(conn: asyncpg.Connection, *, matchers: dict[str, str],
                      starts_at: datetime, ends_at: datetime, created_by: str,
                      reason: str) -> uuid.UUID:
    silence_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO notification.silences (silence_id, matchers, starts_at, ends_at,"
        " created_by, reason) VALUES ($1, $2, $3, $4, $5, $6)",
        silence_id, matchers, starts_at, ends_at, created_by, reason)
    return silence_id


async def active_silences(conn: asyncpg.Connection, now: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM notification.silences WHERE expired_at IS NULL AND starts_at <= $1"
        " AND ends_at > $1 ORDER BY created_at", now)


async def list_silences(conn: asyncpg.Connection, now: datetime,
                        include_ended: bool = False) -> list[asyncpg.Record]:
    """Silences current or to come (or all), each with how many notifications it muted."""
    return await conn.fetch(
        "SELECT s.*, (SELECT count(*) FROM notification.notifications n"
        "   WHERE n.silence_id = s.silence_id) AS suppressed"
        " FROM notification.silences s"
        " WHERE $2 OR (s.expired_at IS NULL AND s.ends_at > $1) ORDER BY s.created_at DESC",
        now, include_ended)


async def expire_silence(conn: asyncpg.Connection, silence_id: uuid.UUID, *, by: str,
                         reason: str | None, now: datetime) -> bool:
    """End a silence now; False if it is unknown or already over."""
    return bool(await conn.fetchval(
        "UPDATE notification.silences SET expired_at = $2, expired_by = $3,"
        " expire_reason = $4 WHERE silence_id = $1 AND expired_at IS NULL AND ends_at > $2"
        " RETURNING true", silence_id, now, by, reason))


async def find_silence_ids(conn: asyncpg.Connection, prefix: str) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT silence_id FROM notification.silences"
                            " WHERE silence_id::text LIKE $1 || '%' LIMIT 2", prefix.lower())
    return [r["silence_id"] for r in rows]


# -- rejected submissions -------------------------------------------------------------------
async def record_rejection(conn: asyncpg.Connection, submission_id: uuid.UUID,
                           feed_user: str | None, ods_code: str | None,
                           reasons: list[dict[str, Any]]) -> None:
    await conn.execute(
        "INSERT INTO notification.rejections (submission_id, feed_user, ods_code, reasons)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        submission_id, feed_user, ods_code, reasons)


# -- replies to meeting invitations -----------------------------------------------------------

async def meeting_attendees(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> set[str] | None:
    """The attendees of the meeting's latest invitation sent (None: no invitation)."""
    attendees = await conn.fetchval(
        "SELECT payload->'attendees' FROM notification.notifications"
        " WHERE event_type LIKE 'meeting.%' AND payload->>'meeting_id' = $1"
        " AND event_type IN ('meeting.scheduled.v1', 'meeting.rescheduled.v1',"
        " 'meeting.cancelled.v1')"
        " ORDER BY (payload->>'sequence')::int DESC, created_at DESC LIMIT 1", str(meeting_id))
    if attendees is None:
        return None
    return {str(a["email"]).lower() for a in attendees}


async def record_reply(conn: asyncpg.Connection, *, message_key: str, meeting_id: uuid.UUID,
                       attendee: str, partstat: str, sequence: int, at: datetime) -> bool:
    """Keep the reply; False if this message was recorded already."""
    return bool(await conn.fetchval(
        "INSERT INTO notification.replies (message_key, meeting_id, attendee, partstat,"
        " sequence, received_at) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (message_key) DO NOTHING RETURNING true",
        message_key, meeting_id, attendee, partstat, sequence, at))


async def replies_to(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT attendee, partstat, sequence, received_at FROM notification.replies"
        " WHERE meeting_id = $1 ORDER BY received_at", meeting_id)
    return [dict(r) for r in rows]
