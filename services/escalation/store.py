"""escalation's tables: concerns as announced, meetings and bookings, the CQRM agenda, the
watch list, action plans, ladder steps, visits, the durable schedule and the audit trail.

Every change to a concern's affairs first locks the concern's row (``lock_concern``), so
handlers, ticks and commands on one concern run one after the other, on any replica.
"""

from __future__ import annotations

import uuid
import zlib
from datetime import date, datetime
from typing import Any

import asyncpg
from asyncpg import Range

from services.escalation.calendar import Interval
from shared.events import ConcernRaised, MeetingScheduled, ProviderRef

SCHEMA = "escalation"


# -- concerns ----------------------------------------------------------------------------------

async def claim_concern(conn: asyncpg.Connection, c: ConcernRaised, action: str,
                        status: str = "open") -> tuple[asyncpg.Record, bool]:
    """The concern's row, locked, inserted from ``c`` if escalation did not know it (then
    the second value is True)."""
    created = await conn.fetchval(
        "INSERT INTO escalation.concerns (concern_id, fingerprint, ods_code, provider, rule,"
        " theme, severity, reason, figures, evidence, action, status, raised_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        " ON CONFLICT (concern_id) DO NOTHING RETURNING true",
        c.concern_id, c.fingerprint, c.provider.ods_code, c.provider.model_dump(mode="json"),
        c.rule, c.theme, c.severity.value, c.reason, c.figures,
        [e.model_dump(mode="json") for e in c.evidence], action, status, c.raised_at)
    row = await lock_concern(conn, c.concern_id)
    assert row is not None
    return row, bool(created)


async def lock_concern(conn: asyncpg.Connection, concern_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM escalation.concerns WHERE concern_id = $1 FOR UPDATE", concern_id)


async def get_concern(conn: asyncpg.Connection, concern_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM escalation.concerns WHERE concern_id = $1",
                               concern_id)


def concern_from_row(row: asyncpg.Record) -> ConcernRaised:
    """The concern as escalation last knew it (rows made before 002 lack a fingerprint)."""
    return ConcernRaised(
        concern_id=row["concern_id"], fingerprint=row["fingerprint"] or "",
        provider=ProviderRef.model_validate(row["provider"]), rule=row["rule"],
        theme=row["theme"], severity=row["severity"], reason=row["reason"],
        figures=row["figures"] or {}, evidence=row["evidence"],
        raised_at=row["raised_at"] or row["updated_at"])


def provider_of(row: asyncpg.Record) -> ProviderRef:
    return ProviderRef.model_validate(row["provider"])


async def save_concern(conn: asyncpg.Connection, c: ConcernRaised, action: str) -> None:
    await conn.execute(
        "UPDATE escalation.concerns SET severity = $2, reason = $3, figures = $4, evidence = $5,"
        " action = $6, raised_at = $7, fingerprint = coalesce(fingerprint, $8),"
        " updated_at = now() WHERE concern_id = $1",
        c.concern_id, c.severity.value, c.reason, c.figures,
        [e.model_dump(mode="json") for e in c.evidence], action, c.raised_at, c.fingerprint)


async def set_concern_status(conn: asyncpg.Connection, concern_id: uuid.UUID, status: str,
                             at: datetime) -> None:
    column = {"closed": "closed_at", "resolved": "resolved_at"}[status]
    await conn.execute(
        f"UPDATE escalation.concerns SET status = $2, {column} = $3, updated_at = now()"
        " WHERE concern_id = $1", concern_id, status, at)


async def set_concern_level(conn: asyncpg.Connection, concern_id: uuid.UUID, level: str,
                            at: datetime) -> None:
    await conn.execute(
        "UPDATE escalation.concerns SET level = $2, level_since = $3, updated_at = now()"
        " WHERE concern_id = $1", concern_id, level, at)


async def serious_concerns_raised(conn: asyncpg.Connection, ods_code: str, theme: str,
                                  severities: list[str], since: datetime) -> list[datetime]:
    """When each concern of these severities on the provider and theme was raised."""
    rows = await conn.fetch(
        "SELECT raised_at FROM escalation.concerns WHERE ods_code = $1 AND theme = $2"
        " AND severity = ANY($3::text[]) AND raised_at >= $4", ods_code, theme, severities,
        since)
    return [r["raised_at"] for r in rows]


async def list_concerns(conn: asyncpg.Connection, status: str | None = None,
                        limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT concern_id, ods_code, theme, severity, action, status, level, raised_at"
        " FROM escalation.concerns WHERE ($1::text IS NULL OR status = $1)"
        " ORDER BY raised_at DESC NULLS LAST LIMIT $2", status, limit)
    return [dict(r) for r in rows]


# -- meetings and bookings ---------------------------------------------------------------------

async def lock_attendees(conn: asyncpg.Connection, attendees: list[str]) -> None:
    """Serialise booking per attendee across replicas (the exclusion constraint backs it)."""
    for key in sorted(attendees):
        await conn.execute("SELECT pg_advisory_xact_lock($1)", zlib.crc32(key.encode()) - 2**31)


async def busy_intervals(conn: asyncpg.Connection, attendees: list[str], since: datetime,
                         except_meeting: uuid.UUID | None = None) -> list[Interval]:
    rows = await conn.fetch(
        "SELECT lower(during) AS s, upper(during) AS e FROM escalation.bookings"
        " WHERE attendee = ANY($1::text[]) AND upper(during) > $2"
        " AND ($3::uuid IS NULL OR meeting_id <> $3)", attendees, since, except_meeting)
    return [(r["s"], r["e"]) for r in rows]


async def meeting_for_concern(conn: asyncpg.Connection,
                              concern_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM escalation.meetings WHERE concern_id = $1", concern_id)


async def get_meeting(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM escalation.meetings WHERE meeting_id = $1",
                               meeting_id)


async def insert_meeting(conn: asyncpg.Connection, m: MeetingScheduled,
                         attendee_keys: list[str]) -> None:
    await conn.execute(
        "INSERT INTO escalation.meetings (meeting_id, concern_id, ods_code, severity, title,"
        " starts_at, ends_at, deadline, breach, location, agenda, remedial_actions, organizer,"
        " attendees, sequence) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
        m.meeting_id, m.concern_id, m.provider.ods_code, m.severity.value, m.title, m.starts_at,
        m.ends_at, m.deadline, m.breach, m.location, m.agenda, m.remedial_actions,
        m.organizer.model_dump(), [a.model_dump() for a in m.attendees], m.sequence)
    await insert_bookings(conn, m.meeting_id, attendee_keys, m.starts_at, m.ends_at)


async def insert_bookings(conn: asyncpg.Connection, meeting_id: uuid.UUID, keys: list[str],
                          starts_at: datetime, ends_at: datetime) -> None:
    await conn.executemany(
        "INSERT INTO escalation.bookings (meeting_id, attendee, during) VALUES ($1, $2, $3)",
        [(meeting_id, key, Range(starts_at, ends_at)) for key in keys])


async def release_bookings(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> list[str]:
    """Free the meeting's attendees; returns their booking keys."""
    rows = await conn.fetch("DELETE FROM escalation.bookings WHERE meeting_id = $1"
                            " RETURNING attendee", meeting_id)
    return [r["attendee"] for r in rows]


async def booking_keys(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> list[str]:
    return [r["attendee"] for r in await conn.fetch(
        "SELECT attendee FROM escalation.bookings WHERE meeting_id = $1", meeting_id)]


async def update_meeting(conn: asyncpg.Connection, m: MeetingScheduled,
                         status: str = "scheduled", at: datetime | None = None) -> None:
    """Store the meeting as announced by a rescheduling or a cancellation."""
    await conn.execute(
        "UPDATE escalation.meetings SET severity = $2, title = $3, starts_at = $4, ends_at = $5,"
        " deadline = $6, breach = $7, agenda = $8, remedial_actions = $9, attendees = $10,"
        " sequence = $11, status = $12,"
        " cancelled_at = CASE WHEN $12 = 'cancelled' THEN $13 ELSE cancelled_at END,"
        " updated_at = now() WHERE meeting_id = $1",
        m.meeting_id, m.severity.value, m.title, m.starts_at, m.ends_at, m.deadline, m.breach,
        m.agenda, m.remedial_actions, [a.model_dump() for a in m.attendees], m.sequence, status,
        at)


async def record_outcome(conn: asyncpg.Connection, meeting_id: uuid.UUID, outcome: str,
                         at: datetime) -> None:
    await conn.execute(
        "UPDATE escalation.meetings SET status = 'held', outcome = $2, held_at = $3,"
        " updated_at = now() WHERE meeting_id = $1", meeting_id, outcome, at)


async def list_meetings(conn: asyncpg.Connection, limit: int = 100, status: str | None = None,
                        ods_code: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT meeting_id, concern_id, ods_code, severity, starts_at, ends_at, deadline, breach,"
        " status, sequence FROM escalation.meetings WHERE ($2::text IS NULL OR status = $2)"
        " AND ($3::text IS NULL OR ods_code = $3) ORDER BY starts_at LIMIT $1",
        limit, status, ods_code)
    return [dict(r) for r in rows]


# -- CQRM agenda and watch list ----------------------------------------------------------------

async def cqrm_item(conn: asyncpg.Connection, concern_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM escalation.cqrm_agenda WHERE concern_id = $1",
                               concern_id)


async def put_cqrm_item(conn: asyncpg.Connection, c: ConcernRaised, item: str,
                        cqrm_at: datetime) -> None:
    """The concern's item on the CQRM starting at ``cqrm_at`` (moved there if it was on
    another)."""
    await conn.execute(
        "INSERT INTO escalation.cqrm_agenda (concern_id, ods_code, item, cqrm_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (concern_id) DO UPDATE SET item = $3,"
        " cqrm_at = $4, status = 'open', updated_at = now()",
        c.concern_id, c.provider.ods_code, item, cqrm_at)


async def set_cqrm_status(conn: asyncpg.Connection, concern_id: uuid.UUID,
                          status: str) -> bool:
    """Take an open item off its CQRM's agenda; True if there was one."""
    return bool(await conn.fetchval(
        "UPDATE escalation.cqrm_agenda SET status = $2, updated_at = now()"
        " WHERE concern_id = $1 AND status = 'open' RETURNING true", concern_id, status))


async def cqrm_agendas(conn: asyncpg.Connection, ods_code: str | None = None,
                       since: datetime | None = None) -> list[dict[str, Any]]:
    """Open items by provider and CQRM, soonest CQRM first."""
    rows = await conn.fetch(
        "SELECT ods_code, cqrm_at, concern_id, item, added_at FROM escalation.cqrm_agenda"
        " WHERE status = 'open' AND ($1::text IS NULL OR ods_code = $1)"
        " AND ($2::timestamptz IS NULL OR cqrm_at >= $2)"
        " ORDER BY cqrm_at NULLS FIRST, ods_code, added_at", ods_code, since)
    return [dict(r) for r in rows]


async def put_watch_item(conn: asyncpg.Connection, c: ConcernRaised, item: str) -> None:
    await conn.execute(
        "INSERT INTO escalation.watch_list (concern_id, ods_code, item) VALUES ($1, $2, $3)"
        " ON CONFLICT (concern_id) DO UPDATE SET item = $3", c.concern_id, c.provider.ods_code,
        item)


async def watch_list(conn: asyncpg.Connection, since: datetime | None = None,
                     ods_code: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT w.ods_code, w.concern_id, w.item, w.added_at, c.status FROM escalation.watch_list w"
        " JOIN escalation.concerns c USING (concern_id)"
        " WHERE ($1::timestamptz IS NULL OR w.added_at >= $1) AND ($2::text IS NULL OR w.ods_code = $2)"
        " ORDER BY w.ods_code, w.added_at", since, ods_code)
    return [dict(r) for r in rows]


# -- action plans ------------------------------------------------------------------------------

async def insert_action(conn: asyncpg.Connection, *, action_id: uuid.UUID,
                        concern_id: uuid.UUID, meeting_id: uuid.UUID | None, description: str,
                        owner: str, due_on: date, created_by: str, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO escalation.actions (action_id, concern_id, meeting_id, description, owner,"
        " due_on, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        action_id, concern_id, meeting_id, description, owner, due_on, created_by, at)


async def get_action(conn: asyncpg.Connection, action_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM escalation.actions WHERE action_id = $1",
                               action_id)


async def actions_of(conn: asyncpg.Connection, concern_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM escalation.actions WHERE concern_id = $1 ORDER BY due_on, created_at",
        concern_id)


async def complete_action(conn: asyncpg.Connection, action_id: uuid.UUID, evidence: str,
                          by: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE escalation.actions SET status = 'completed', evidence_of_completion = $2,"
        " completed_by = $3, completed_at = $4 WHERE action_id = $1", action_id, evidence, by, at)


async def mark_overdue(conn: asyncpg.Connection, action_id: uuid.UUID, since: date) -> bool:
    """Mark an open action overdue; False if it was completed or already overdue."""
    return bool(await conn.fetchval(
        "UPDATE escalation.actions SET status = 'overdue', overdue_since = $2"
        " WHERE action_id = $1 AND status = 'open' RETURNING true", action_id, since))


async def list_actions(conn: asyncpg.Connection, status: str | None = None,
                       concern_id: uuid.UUID | None = None,
                       limit: int = 200) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT a.action_id, a.concern_id, c.ods_code, a.description, a.owner, a.due_on,"
        " a.status, a.evidence_of_completion, a.completed_at FROM escalation.actions a"
        " JOIN escalation.concerns c USING (concern_id)"
        " WHERE ($1::text IS NULL OR a.status = $1) AND ($2::uuid IS NULL OR a.concern_id = $2)"
        " ORDER BY a.due_on, a.created_at LIMIT $3", status, concern_id, limit)
    return [dict(r) for r in rows]


# -- the ladder --------------------------------------------------------------------------------

async def add_ladder_step(conn: asyncpg.Connection, concern_id: uuid.UUID, level: str,
                          at: datetime, reason: str) -> bool:
    """Record the concern reaching ``level``; False if it had already reached it."""
    return bool(await conn.fetchval(
        "INSERT INTO escalation.ladder_steps (concern_id, level, at, reason)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        concern_id, level, at, reason))


async def ladder_steps(conn: asyncpg.Connection, concern_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT level, at, reason FROM escalation.ladder_steps WHERE concern_id = $1"
        " ORDER BY at, level", concern_id)


# -- visits ------------------------------------------------------------------------------------

async def insert_visit(conn: asyncpg.Connection, *, visit_id: uuid.UUID, provider: ProviderRef,
                       visit_kind: str, due_on: date, reason: str, at: datetime,
                       theme: str | None = None, concern_id: uuid.UUID | None = None,
                       status: str = "planned", visited_on: date | None = None,
                       follows: uuid.UUID | None = None,
                       feedback_id: uuid.UUID | None = None) -> bool:
    """False if an equivalent visit exists (the re-visit of that visit, or that report's)."""
    return bool(await conn.fetchval(
        "INSERT INTO escalation.visits (visit_id, ods_code, provider, visit_kind, theme,"
        " concern_id, due_on, status, visited_on, follows_visit_id, feedback_id, reason,"
        " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        " ON CONFLICT DO NOTHING RETURNING true",
        visit_id, provider.ods_code, provider.model_dump(mode="json"), visit_kind, theme,
        concern_id, due_on, status, visited_on, follows, feedback_id, reason, at))


async def last_insight_visit_planned(conn: asyncpg.Connection, ods_code: str,
                                     theme: str) -> datetime | None:
    return await conn.fetchval(
        "SELECT max(created_at) FROM escalation.visits WHERE ods_code = $1 AND theme = $2"
        " AND visit_kind = 'insight_visit' AND status <> 'cancelled'", ods_code, theme)


async def planned_visits(conn: asyncpg.Connection, ods_code: str) -> list[asyncpg.Record]:
    """The provider's planned visits, locked (a visit report fulfils one of them)."""
    return await conn.fetch(
        "SELECT * FROM escalation.visits WHERE ods_code = $1 AND status = 'planned'"
        " ORDER BY due_on FOR UPDATE", ods_code)


async def lock_visit(conn: asyncpg.Connection, visit_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM escalation.visits WHERE visit_id = $1 FOR UPDATE",
                               visit_id)


async def mark_visit_held(conn: asyncpg.Connection, visit_id: uuid.UUID, visited_on: date,
                          feedback_id: uuid.UUID | None) -> None:
    await conn.execute(
        "UPDATE escalation.visits SET status = 'held', visited_on = $2, feedback_id = $3"
        " WHERE visit_id = $1", visit_id, visited_on, feedback_id)


async def list_visits(conn: asyncpg.Connection, ods_code: str | None = None,
                      status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT visit_id, ods_code, visit_kind, theme, due_on, status, visited_on,"
        " follows_visit_id, concern_id, reason FROM escalation.visits"
        " WHERE ($1::text IS NULL OR ods_code = $1) AND ($2::text IS NULL OR status = $2)"
        " ORDER BY due_on LIMIT $3", ods_code, status, limit)
    return [dict(r) for r in rows]


# -- the audit trail ---------------------------------------------------------------------------

async def audit(conn: asyncpg.Connection, *, ods_code: str, at: datetime, party: str,
                actor: str, action: str, concern_id: uuid.UUID | None = None,
                detail: dict[str, Any] | None = None, event_id: uuid.UUID | None = None) -> None:
    """Append one entry to the audit trail (in the caller's transaction)."""
    await conn.execute(
        "INSERT INTO escalation.audit_log (concern_id, ods_code, at, party, actor, action,"
        " detail, event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        concern_id, ods_code, at, party, actor, action, detail or {}, event_id)


async def audit_trail(conn: asyncpg.Connection, concern_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, at, party, actor, action, detail, event_id FROM escalation.audit_log"
        " WHERE concern_id = $1 ORDER BY id", concern_id)
    return [dict(r) for r in rows]
