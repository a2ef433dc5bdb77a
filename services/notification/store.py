"""notification's tables: notifications (recorded before sending), the delivery log."""

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


async def record(conn: asyncpg.Connection, *, source_event_id: uuid.UUID, event_type: str,
                 channel: str, recipient: str, subject: str, payload: dict[str, Any]) -> bool:
    """Record a notification to send; False if it was already recorded."""
    notification_id = uuid.uuid4()
    inserted = await conn.fetchval(
        "INSERT INTO notification.notifications (notification_id, source_event_id, event_type,"
        " channel, recipient, subject, payload, message_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
        " ON CONFLICT (source_event_id, recipient, channel) DO NOTHING RETURNING true",
        notification_id, source_event_id, event_type, channel, recipient, subject, payload,
        message_id_for(notification_id))
    if inserted:
        await conn.execute("SELECT pg_notify($1, '')", DISPATCH_CHANNEL)
    return bool(inserted)


async def claim_due(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Due notifications, locked for this transaction (other replicas skip them)."""
    return await conn.fetch(
        "SELECT * FROM notification.notifications WHERE status = 'pending'"
        " AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $1"
        " FOR UPDATE SKIP LOCKED", limit)


async def mark(conn: asyncpg.Connection, notification_id: uuid.UUID, *, status: str,
               attempt: int, outcome: str, detail: str | None,
               next_attempt_at: datetime | None = None) -> None:
    await conn.execute(
        "UPDATE notification.notifications SET status = $2, attempts = $3, last_error = $4,"
        " next_attempt_at = COALESCE($5, next_attempt_at),"
        " sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END"
        " WHERE notification_id = $1",
        notification_id, status, attempt, None if status == "sent" else detail, next_attempt_at)
    await conn.execute(
        "INSERT INTO notification.deliveries (notification_id, attempt, outcome, detail)"
        " VALUES ($1, $2, $3, $4)", notification_id, attempt, outcome, detail)


async def record_rejection(conn: asyncpg.Connection, submission_id: uuid.UUID,
                           feed_user: str | None, ods_code: str | None,
                           reasons: list[dict[str, Any]]) -> None:
    await conn.execute(
        "INSERT INTO notification.rejections (submission_id, feed_user, ods_code, reasons)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        submission_id, feed_user, ods_code, reasons)


async def list_notifications(conn: asyncpg.Connection, status: str | None = None,
                             limit: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT notification_id, event_type, channel, recipient, subject, status, attempts,"
        " last_error, created_at, sent_at FROM notification.notifications"
        " WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC LIMIT $2",
        status, limit)
