"""escalation's tables: concerns as announced, meetings and bookings, the CQRM agenda, the
watch list, action plans, ladder steps, visits, the durable schedule and the audit trail.

Every change to a concern's affairs first locks the concern's row (``lock_concern``), so
handlers, ticks and commands on one concern run one after the other, on any replica.
"""

from __future__ import annotations

import uuid
import zlib
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
from asyncpg import Range

from services.escalation.calendar import Interval
from services.escalation.concerns import KnownConcern
from shared.events import ConcernRaised, Evidence, MeetingScheduled, ProviderRef

SCHEMA = "escalation"


# -- concerns ----------------------------------------------------------------------------------

async def claim_concern(conn: asyncpg.Connection, c: ConcernRaised, action: str,
                        status: str = "open") -> tuple[asyncpg.Record, bool]:
    """The concern's row, locked, inserted from ``c`` if escalation did not know it (then
    the second value is True). Its evidence is not stored here: ``add_evidence``."""
    created = await conn.fetchval(
        "INSERT INTO escalation.concerns (concern_id, fingerprint, ods_code, provider, rule,"
        " theme, severity, reason, figures, action, status, raised_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (concern_id) DO NOTHING RETURNING true",
        c.concern_id, c.fingerprint, c.provider.ods_code, c.provider.model_dump(mode="json"),
        c.rule, c.theme, c.severity.value, c.reason, c.figures, action, status, c.raised_at)
    row = await lock_concern(conn, c.concern_id)
    assert row is not None
    return row, bool(created)


async def lock_concern(conn: asyncpg.Connection, concern_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM escalation.concerns WHERE concern_id = $1 FOR UPDATE", concern_id)


async def get_concern(conn: asyncpg.Connection, concern_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM escalation.concerns WHERE concern_id = $1",
                               concern_id)


async def add_evidence(conn: asyncpg.Connection, concern_id: uuid.UUID,
                       evidence: list[Evidence]) -> list[Evidence]:
    """Add the items the concern does not hold yet (by feedback id; an item twice is kept
    once), numbered on from its ``evidence_count``, and count them on its row (locked by the
    caller); the items that were new, in their order. One statement that reads an index entry
    per incoming item and nothing of what the concern holds."""
    if not evidence:
        return []
    rows = await conn.fetch(
        "WITH incoming AS (SELECT DISTINCT ON (fid) fid, x, n FROM"
        "  (SELECT (x->>'feedback_id')::uuid AS fid, x, n"
        "   FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(x, n)) s"
        "  ORDER BY fid, n),"
        # A probe of the key per incoming item (a scalar subquery: never an anti-join that
        # would read every item the concern holds).
        " new AS (SELECT fid, x, row_number() OVER (ORDER BY n) AS k FROM incoming i"
        "  WHERE (SELECT true FROM escalation.concern_evidence e"
        "   WHERE e.concern_id = $1 AND e.feedback_id = i.fid) IS NULL),"
        " added AS (INSERT INTO escalation.concern_evidence (concern_id, feedback_id, pos, item)"
        "  SELECT $1, fid, c.evidence_count + k, x FROM new,"
        "   escalation.concerns c WHERE c.concern_id = $1"
        "  ON CONFLICT DO NOTHING RETURNING pos, item),"
        " counted AS (UPDATE escalation.concerns"
        "  SET evidence_count = evidence_count + (SELECT count(*) FROM added)"
        "  WHERE concern_id = $1 AND EXISTS (SELECT FROM added))"
        " SELECT item FROM added ORDER BY pos",
        concern_id, [e.model_dump(mode="json") for e in evidence])
    return [Evidence.model_validate(r["item"]) for r in rows]


async def latest_evidence(conn: asyncpg.Connection, concern_ids: list[uuid.UUID],
                          limit: int) -> dict[uuid.UUID, list[Evidence]]:
    """The latest ``limit`` items of each concern (oldest of them first): a range of
    positions each, so only those rows are read."""
    rows = await conn.fetch(
        "SELECT c.concern_id, e.item FROM escalation.concerns c CROSS JOIN LATERAL"
        " (SELECT pos, item FROM escalation.concern_evidence e"
        "  WHERE e.concern_id = c.concern_id AND e.pos > c.evidence_count - $2) e"
        " WHERE c.concern_id = ANY($1::uuid[]) ORDER BY c.concern_id, e.pos",
        concern_ids, limit)
    out: dict[uuid.UUID, list[Evidence]] = {i: [] for i in concern_ids}
    for r in rows:
        out[r["concern_id"]].append(Evidence.model_validate(r["item"]))
    return out


def concern_from_row(row: asyncpg.Record, evidence: list[Evidence] | None = None) -> KnownConcern:
    """The concern as escalation last knew it, with ``evidence`` (its latest items, from
    ``latest_evidence``; none if not given) and how many it holds in all (rows made before
    002 lack a fingerprint)."""
    return KnownConcern(
        concern_id=row["concern_id"], fingerprint=row["fingerprint"] or "",
        provider=ProviderRef.model_validate(row["provider"]), rule=row["rule"],
        theme=row["theme"], severity=row["severity"], reason=row["reason"],
        figures=row["figures"] or {}, evidence=evidence or [],
        evidence_count=row["evidence_count"], raised_at=row["raised_at"] or row["updated_at"])


async def load_concerns(conn: asyncpg.Connection, rows: list[asyncpg.Record],
                        listed: int) -> list[KnownConcern]:
    """The concerns of these rows, each with its latest ``listed`` items of evidence."""
    latest = await latest_evidence(conn, [r["concern_id"] for r in rows], listed)
    return [concern_from_row(r, latest[r["concern_id"]]) for r in rows]


def provider_of(row: asyncpg.Record) -> ProviderRef:
    return ProviderRef.model_validate(row["provider"])


async def save_concern(conn: asyncpg.Connection, c: ConcernRaised, action: str) -> None:
    """The concern's fields after a merge (its evidence is added by ``add_evidence``)."""
    await conn.execute(
        "UPDATE escalation.concerns SET severity = $2, reason = $3, figures = $4,"
        " action = $5, raised_at = $6, fingerprint = coalesce(fingerprint, $7),"
        " updated_at = now() WHERE concern_id = $1",
        c.concern_id, c.severity.value, c.reason, c.figures, action, c.raised_at,
        c.fingerprint)


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


async def lock_key(conn: asyncpg.Connection, key: str) -> None:
    """A transaction-scoped advisory lock on ``key`` (the key space of ``lock_attendees``)."""
    await lock_attendees(conn, [key])


async def busy_intervals(conn: asyncpg.Connection, attendees: list[str], since: datetime,
                         except_meeting: uuid.UUID | None = None) -> list[Interval]:
    rows = await conn.fetch(
        "SELECT lower(during) AS s, upper(during) AS e FROM escalation.bookings"
        " WHERE attendee = ANY($1::text[]) AND upper(during) > $2"
        " AND ($3::uuid IS NULL OR meeting_id <> $3)", attendees, since, except_meeting)
    return [(r["s"], r["e"]) for r in rows]


async def meeting_for_concern(conn: asyncpg.Connection,
                              concern_id: uuid.UUID) -> asyncpg.Record | None:
    """The meeting whose agenda the concern is on (each concern is on one)."""
    return await conn.fetchrow(
        "SELECT m.* FROM escalation.meeting_concerns mc JOIN escalation.meetings m"
        " USING (meeting_id) WHERE mc.concern_id = $1", concern_id)


async def open_meeting_of_provider(conn: asyncpg.Connection, ods_code: str, now: datetime,
                                   kind: str = "remedial") -> asyncpg.Record | None:
    """The provider's meeting booked and not yet started (at most one), locked."""
    return await conn.fetchrow(
        "SELECT * FROM escalation.meetings WHERE ods_code = $1 AND kind = $2"
        " AND status = 'scheduled' AND starts_at > $3 ORDER BY starts_at LIMIT 1 FOR UPDATE",
        ods_code, kind, now)


async def lock_meeting(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM escalation.meetings WHERE meeting_id = $1 FOR UPDATE", meeting_id)


async def lock_provider_and_meeting(conn: asyncpg.Connection,
                                    meeting_id: uuid.UUID) -> asyncpg.Record | None:
    """The meeting's row, locked after its provider's advisory lock: the order booking takes
    them, so a command that may re-book never deadlocks with a concern joining."""
    seen = await get_meeting(conn, meeting_id)
    if seen is None:
        return None
    await lock_attendees(conn, [f"provider:{seen['ods_code']}"])
    return await lock_meeting(conn, meeting_id)


async def add_meeting_concern(conn: asyncpg.Connection, meeting_id: uuid.UUID,
                              concern_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO escalation.meeting_concerns (concern_id, meeting_id, added_at)"
        " VALUES ($1, $2, $3)", concern_id, meeting_id, at)


async def meeting_concerns(conn: asyncpg.Connection, meeting_id: uuid.UUID,
                           status: str | None = "open") -> list[asyncpg.Record]:
    """The concerns on the meeting's agenda (open ones by default), oldest first."""
    return await conn.fetch(
        "SELECT c.* FROM escalation.meeting_concerns mc JOIN escalation.concerns c"
        " USING (concern_id) WHERE mc.meeting_id = $1 AND ($2::text IS NULL OR c.status = $2)"
        " ORDER BY mc.added_at, c.concern_id", meeting_id, status)


async def meeting_concern_ids(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> list[uuid.UUID]:
    return [r["concern_id"] for r in await conn.fetch(
        "SELECT concern_id FROM escalation.meeting_concerns WHERE meeting_id = $1"
        " ORDER BY added_at, concern_id", meeting_id)]


async def set_pending_changes(conn: asyncpg.Connection, meeting_id: uuid.UUID,
                              changes: list[str], announced_starts_at: datetime | None = None,
                              sequence: int | None = None) -> None:
    await conn.execute(
        "UPDATE escalation.meetings SET pending_changes = $2,"
        " announced_starts_at = coalesce($3, announced_starts_at),"
        " sequence = coalesce($4, sequence), updated_at = now() WHERE meeting_id = $1",
        meeting_id, changes, announced_starts_at, sequence)


async def set_rsvp(conn: asyncpg.Connection, meeting_id: uuid.UUID, email: str,
                   reply: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE escalation.meetings SET rsvp = rsvp || jsonb_build_object($2::text, $3::jsonb),"
        " updated_at = now() WHERE meeting_id = $1", meeting_id, email.lower(), reply)


async def set_proposal(conn: asyncpg.Connection, meeting_id: uuid.UUID,
                       starts_at: datetime | None) -> None:
    await conn.execute("UPDATE escalation.meetings SET proposed_starts_at = $2"
                       " WHERE meeting_id = $1", meeting_id, starts_at)


# -- the commissioner's people -----------------------------------------------------------------

PERSON_COLUMNS = ("email", "name", "role", "works_from", "works_until", "working_days",
                  "max_meetings_per_day", "buffer_minutes", "active")


async def ensure_people(conn: asyncpg.Connection, people: list[dict[str, Any]]) -> None:
    """Add these people if unknown (the settings' quality lead and lay member seed the rota)."""
    await conn.executemany(
        "INSERT INTO escalation.people (email, name, role) VALUES ($1, $2, $3)"
        " ON CONFLICT (email) DO NOTHING",
        [(p["email"].lower(), p["name"], p["role"]) for p in people])


async def upsert_person(conn: asyncpg.Connection, person: dict[str, Any]) -> dict[str, Any]:
    """Add a person, or change the fields given (email is the key)."""
    fields = {k: v for k, v in person.items() if k in PERSON_COLUMNS and v is not None}
    fields["email"] = fields["email"].lower()
    columns = list(fields)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "email")
    row = await conn.fetchrow(
        f"INSERT INTO escalation.people ({', '.join(columns)}) VALUES ({placeholders})"
        f" ON CONFLICT (email) DO UPDATE SET {updates or 'email = EXCLUDED.email'},"
        " updated_at = now() RETURNING *", *fields.values())
    return dict(row)


async def get_person(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM escalation.people WHERE email = $1", email.lower())


async def list_people(conn: asyncpg.Connection, role: str | None = None,
                      active: bool | None = True) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM escalation.people WHERE ($1::text IS NULL OR role = $1)"
        " AND ($2::boolean IS NULL OR active = $2) ORDER BY role, email", role, active)
    return [dict(r) for r in rows]


async def people_in_roles(conn: asyncpg.Connection, roles: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM escalation.people WHERE active AND role = ANY($1::text[])"
        " ORDER BY email", roles)


async def person_bookings(conn: asyncpg.Connection, emails: list[str], since: datetime,
                          except_meeting: uuid.UUID | None = None) -> dict[str, list[Interval]]:
    rows = await conn.fetch(
        "SELECT substr(attendee, 8) AS email, lower(during) AS s, upper(during) AS e"
        " FROM escalation.bookings WHERE attendee = ANY($1::text[]) AND upper(during) > $2"
        " AND ($3::uuid IS NULL OR meeting_id <> $3)",
        [f"person:{e}" for e in emails], since, except_meeting)
    out: dict[str, list[Interval]] = {}
    for r in rows:
        out.setdefault(r["email"], []).append((r["s"], r["e"]))
    return out


async def person_load(conn: asyncpg.Connection, emails: list[str], since: datetime,
                      until: datetime) -> dict[str, int]:
    """Meetings each person has between ``since`` and ``until`` (the rota's measure)."""
    rows = await conn.fetch(
        "SELECT substr(attendee, 8) AS email, count(*) AS n FROM escalation.bookings"
        " WHERE attendee = ANY($1::text[]) AND during && tstzrange($2, $3) GROUP BY 1",
        [f"person:{e}" for e in emails], since, until)
    return {r["email"]: r["n"] for r in rows}


async def unavailable_periods(conn: asyncpg.Connection, emails: list[str],
                              since: datetime) -> dict[str, list[Interval]]:
    rows = await conn.fetch(
        "SELECT email, lower(during) AS s, upper(during) AS e FROM escalation.unavailability"
        " WHERE email = ANY($1::text[]) AND upper(during) > $2", emails, since)
    out: dict[str, list[Interval]] = {}
    for r in rows:
        out.setdefault(r["email"], []).append((r["s"], r["e"]))
    return out


async def add_unavailability(conn: asyncpg.Connection, *, email: str, starts_at: datetime,
                             ends_at: datetime, reason: str, created_by: str, at: datetime,
                             source: str = "manual",
                             source_uid: str | None = None) -> dict[str, Any]:
    """A period the person cannot meet; an imported period with a known UID is replaced."""
    row = await conn.fetchrow(
        "INSERT INTO escalation.unavailability (email, during, reason, source, source_uid,"
        " created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (email, source_uid) DO UPDATE SET during = EXCLUDED.during,"
        " reason = EXCLUDED.reason, created_by = EXCLUDED.created_by,"
        " created_at = EXCLUDED.created_at RETURNING id, email, lower(during) AS starts_at,"
        " upper(during) AS ends_at, reason, source, source_uid",
        email.lower(), Range(starts_at, ends_at), reason, source, source_uid, created_by, at)
    return dict(row)


async def remove_unavailability(conn: asyncpg.Connection, period_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "DELETE FROM escalation.unavailability WHERE id = $1 RETURNING id, email,"
        " lower(during) AS starts_at, upper(during) AS ends_at, reason", period_id)
    return dict(row) if row else None


async def list_unavailability(conn: asyncpg.Connection, email: str | None = None,
                              since: datetime | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, email, lower(during) AS starts_at, upper(during) AS ends_at, reason,"
        " source, source_uid, created_by FROM escalation.unavailability"
        " WHERE ($1::text IS NULL OR email = $1)"
        " AND ($2::timestamptz IS NULL OR upper(during) > $2) ORDER BY lower(during)",
        email.lower() if email else None, since)
    return [dict(r) for r in rows]


async def get_meeting(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM escalation.meetings WHERE meeting_id = $1",
                               meeting_id)


async def insert_meeting(conn: asyncpg.Connection, m: MeetingScheduled,
                         attendee_keys: dict[str, int], at: datetime) -> None:
    """The meeting, its first concern on its agenda, and its bookings (key -> buffer
    minutes)."""
    await conn.execute(
        "INSERT INTO escalation.meetings (meeting_id, concern_id, ods_code, severity, title,"
        " starts_at, ends_at, deadline, breach, location, agenda, remedial_actions, organizer,"
        " attendees, sequence, kind, url, breach_reason, announced_starts_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$6)",
        m.meeting_id, m.concern_id, m.provider.ods_code, m.severity.value, m.title, m.starts_at,
        m.ends_at, m.deadline, m.breach, m.location, m.agenda, m.remedial_actions,
        m.organizer.model_dump(), [a.model_dump() for a in m.attendees], m.sequence, m.kind,
        m.url, m.breach_reason)
    # A remedial meeting's agenda holds its concerns (each concern on one agenda); a Rapid
    # Quality Review is about its concern but does not take it off that agenda.
    for concern_id in m.concern_ids if m.kind == "remedial" else []:
        await add_meeting_concern(conn, m.meeting_id, concern_id, at)
    await insert_bookings(conn, m.meeting_id, attendee_keys, m.starts_at, m.ends_at)


async def insert_bookings(conn: asyncpg.Connection, meeting_id: uuid.UUID,
                          keys: dict[str, int], starts_at: datetime, ends_at: datetime) -> None:
    """Book each key (``provider:ODS``, ``person:email``) with its buffer in minutes: the
    exclusion constraints refuse an overlap, or a meeting inside a person's buffer."""
    await conn.executemany(
        "INSERT INTO escalation.bookings (meeting_id, attendee, during, blocked)"
        " VALUES ($1, $2, $3, $4)",
        [(meeting_id, key, Range(starts_at, ends_at),
          Range(starts_at, ends_at + timedelta(minutes=buffer))) for key, buffer in keys.items()])


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
        " breach_reason = $14, location = $15, url = $16,"
        " updated_at = now() WHERE meeting_id = $1",
        m.meeting_id, m.severity.value, m.title, m.starts_at, m.ends_at, m.deadline, m.breach,
        m.agenda, m.remedial_actions, [a.model_dump() for a in m.attendees], m.sequence, status,
        at, m.breach_reason, m.location, m.url)


async def record_outcome(conn: asyncpg.Connection, meeting_id: uuid.UUID, outcome: str,
                         at: datetime) -> None:
    await conn.execute(
        "UPDATE escalation.meetings SET status = 'held', outcome = $2, held_at = $3,"
        " updated_at = now() WHERE meeting_id = $1", meeting_id, outcome, at)


async def list_meetings(conn: asyncpg.Connection, limit: int = 100, status: str | None = None,
                        ods_code: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT meeting_id, concern_id, ods_code, kind, severity, starts_at, ends_at, deadline,"
        " breach, status, sequence, (SELECT count(*) FROM escalation.meeting_concerns mc"
        " WHERE mc.meeting_id = meetings.meeting_id) AS concerns, rsvp FROM escalation.meetings"
        " WHERE ($2::text IS NULL OR status = $2)"
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
                       concern_id: uuid.UUID | None = None, limit: int = 200,
                       ods_code: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT a.action_id, a.concern_id, c.ods_code, a.description, a.owner, a.due_on,"
        " a.status, a.evidence_of_completion, a.completed_at, a.created_at"
        " FROM escalation.actions a JOIN escalation.concerns c USING (concern_id)"
        " WHERE ($1::text IS NULL OR a.status = $1) AND ($2::uuid IS NULL OR a.concern_id = $2)"
        " AND ($4::text IS NULL OR c.ods_code = $4)"
        " ORDER BY a.due_on, a.created_at LIMIT $3", status, concern_id, limit, ods_code)
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
