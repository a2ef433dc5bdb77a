"""escalation's tables: concerns as announced, meetings, bookings, CQRM agenda, watch list."""

from __future__ import annotations

import uuid
import zlib
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg import Range

from services.escalation.calendar import Interval
from shared.events import ConcernRaised, MeetingScheduled

SCHEMA = "escalation"


async def upsert_concern(conn: asyncpg.Connection, c: ConcernRaised, action: str) -> None:
    await conn.execute(
        "INSERT INTO escalation.concerns (concern_id, ods_code, provider, rule, theme, severity,"
        " reason, evidence, action) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (concern_id) DO UPDATE SET severity = $6, reason = $7, evidence = $8,"
        " action = $9, updated_at = now()",
        c.concern_id, c.provider.ods_code, c.provider.model_dump(mode="json"), c.rule, c.theme,
        c.severity.value, c.reason, [e.model_dump(mode="json") for e in c.evidence], action)


async def lock_attendees(conn: asyncpg.Connection, attendees: list[str]) -> None:
    """Serialise booking per attendee across replicas (the exclusion constraint backs it)."""
    for key in sorted(attendees):
        await conn.execute("SELECT pg_advisory_xact_lock($1)", zlib.crc32(key.encode()) - 2**31)


async def busy_intervals(conn: asyncpg.Connection, attendees: list[str],
                         since: datetime) -> list[Interval]:
    rows = await conn.fetch(
        "SELECT lower(during) AS s, upper(during) AS e FROM escalation.bookings"
        " WHERE attendee = ANY($1::text[]) AND upper(during) > $2", attendees, since)
    return [(r["s"], r["e"]) for r in rows]


async def meeting_for_concern(conn: asyncpg.Connection,
                              concern_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM escalation.meetings WHERE concern_id = $1", concern_id)


async def insert_meeting(conn: asyncpg.Connection, m: MeetingScheduled,
                         attendee_keys: list[str]) -> None:
    await conn.execute(
        "INSERT INTO escalation.meetings (meeting_id, concern_id, ods_code, severity, title,"
        " starts_at, ends_at, deadline, breach, location, agenda, remedial_actions, organizer,"
        " attendees, sequence) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
        m.meeting_id, m.concern_id, m.provider.ods_code, m.severity.value, m.title, m.starts_at,
        m.ends_at, m.deadline, m.breach, m.location, m.agenda, m.remedial_actions,
        m.organizer.model_dump(), [a.model_dump() for a in m.attendees], m.sequence)
    await conn.executemany(
        "INSERT INTO escalation.bookings (meeting_id, attendee, during) VALUES ($1, $2, $3)",
        [(m.meeting_id, key, Range(m.starts_at, m.ends_at)) for key in attendee_keys])


async def add_agenda_item(conn: asyncpg.Connection, table: str, c: ConcernRaised,
                          item: str) -> bool:
    assert table in ("cqrm_agenda", "watch_list")
    return bool(await conn.fetchval(
        f"INSERT INTO escalation.{table} (concern_id, ods_code, item) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true", c.concern_id, c.provider.ods_code, item))


async def list_meetings(conn: asyncpg.Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT meeting_id, concern_id, ods_code, severity, starts_at, ends_at, breach, status"
        " FROM escalation.meetings ORDER BY starts_at LIMIT $1", limit)
    return [dict(r) for r in rows]
