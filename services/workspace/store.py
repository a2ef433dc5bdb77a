"""The workspace's read model: what the domain events say, kept in schema ``workspace``.

Each handler stores what one event says, idempotently (the runtime's inbox drops a repeated
event) and whatever the order events arrive in: a concern or meeting row only moves forward
(``version_at``, ``sequence``), and a closed or resolved concern is never reopened by a late
``concern.updated``. The text of each timeline entry comes from ``describe`` (pure).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from shared.events import (
    ActionDueSoon,
    ActionOverdue,
    ConcernClosed,
    ConcernEscalated,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    Event,
    MeetingCancelled,
    MeetingReplied,
    MeetingRescheduled,
    MeetingScheduled,
    ProviderRef,
    Severity,
    VisitScheduled,
)

SCHEMA = "workspace"
SEVERITIES = tuple(s.value for s in sorted(Severity, key=lambda s: -s.rank))


@dataclass(frozen=True)
class Entry:
    """One line of a concern's timeline."""

    what: str
    detail: str = ""


def describe(event: Event) -> Entry:
    """The timeline line an event makes (pure)."""
    if isinstance(event, ConcernUpdated):
        return Entry(f"Concern updated: {event.severity} (was {event.previous_severity})",
                     event.reason)
    if isinstance(event, ConcernRaised):
        return Entry(f"Concern raised: {event.severity}", event.reason)
    if isinstance(event, ConcernResolved):
        return Entry("Concern resolved", event.resolution)
    if isinstance(event, ConcernClosed):
        return Entry(f"Concern closed by {event.closed_by}", event.reason)
    if isinstance(event, ConcernEscalated):
        return Entry(f"Escalated: {event.level.replace('_', ' ')}", event.reason)
    if isinstance(event, MeetingCancelled):
        return Entry("Meeting cancelled", event.reason)
    if isinstance(event, MeetingRescheduled):
        return Entry("Meeting rescheduled", event.change)
    if isinstance(event, MeetingScheduled):
        return Entry("Meeting booked" + (" (after the deadline)" if event.breach else ""),
                     event.title)
    if isinstance(event, ActionOverdue):
        return Entry(f"Action overdue by {event.days_overdue} day(s)", event.action.description)
    if isinstance(event, ActionDueSoon):
        return Entry(f"Action due in {event.days_left} day(s)", event.action.description)
    if isinstance(event, VisitScheduled):
        return Entry(f"{event.visit_kind.replace('_', ' ').capitalize()} due on {event.due_on}",
                     event.reason)
    return Entry(event.event_type)


def joined_agenda(event: MeetingScheduled) -> Entry:
    """The line for a concern that joined the agenda of its provider's meeting (pure)."""
    if isinstance(event, MeetingCancelled):
        return describe(event)
    return Entry("Meeting booked: the concern joined the agenda of the provider's meeting",
                 event.title)


# -- writing (handlers call these, inside the event's transaction) ----------------------------
async def timeline(conn: asyncpg.Connection, concern_id: uuid.UUID, ods_code: str, at: datetime,
                   entry: Entry, actor: str = "carewatch") -> None:
    await conn.execute(
        "INSERT INTO workspace.timeline (concern_id, ods_code, at, what, detail, actor)"
        " VALUES ($1, $2, $3, $4, $5, $6)", concern_id, ods_code, at, entry.what[:500],
        entry.detail[:4000], actor)


async def provider(conn: asyncpg.Connection, ref: ProviderRef, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO workspace.providers (ods_code, name, provider_type, seen_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (ods_code) DO UPDATE SET name = EXCLUDED.name,"
        " provider_type = EXCLUDED.provider_type, seen_at = EXCLUDED.seen_at"
        " WHERE workspace.providers.seen_at <= EXCLUDED.seen_at",
        ref.ods_code, ref.name, ref.provider_type, at)


async def concern(conn: asyncpg.Connection, c: ConcernRaised) -> None:
    """A concern as raised or updated: newer facts win; its status is not touched (a late
    update never reopens a concern). Evidence is added, never replaced: an update carries
    only its new items (``concern.updated.v2``), and whatever the order events arrive in,
    each item is kept once (by ``feedback_id``), in the order first seen."""
    await provider(conn, c.provider, c.raised_at)
    evidence = [e.model_dump(mode="json") for e in c.evidence]
    inserted = await conn.fetchval(
        "INSERT INTO workspace.concerns (concern_id, ods_code, rule, theme, severity,"
        " severity_rank, reason, figures, evidence, raised_at, version_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
        " ON CONFLICT (concern_id) DO UPDATE SET rule = EXCLUDED.rule, theme = EXCLUDED.theme,"
        " severity = EXCLUDED.severity, severity_rank = EXCLUDED.severity_rank,"
        " reason = EXCLUDED.reason, figures = EXCLUDED.figures,"
        " raised_at = least(workspace.concerns.raised_at, EXCLUDED.raised_at),"
        " version_at = EXCLUDED.version_at"
        " WHERE workspace.concerns.version_at <= EXCLUDED.version_at"
        " OR workspace.concerns.rule = ''"
        " RETURNING xmax = 0",
        c.concern_id, c.provider.ods_code, c.rule, c.theme, c.severity.value, c.severity.rank,
        c.reason, c.figures, evidence, c.raised_at)
    if not inserted and evidence:
        await conn.execute(
            "UPDATE workspace.concerns c SET evidence = c.evidence || coalesce(("
            " SELECT jsonb_agg(n.e ORDER BY n.i)"
            " FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS n(e, i)"
            " WHERE NOT c.evidence @> jsonb_build_array("
            "   jsonb_build_object('feedback_id', n.e->'feedback_id'))), '[]'::jsonb)"
            " WHERE concern_id = $1", c.concern_id, evidence)
    await timeline(conn, c.concern_id, c.provider.ods_code, c.raised_at, describe(c))


async def concern_ended(conn: asyncpg.Connection, concern_id: uuid.UUID, ref: ProviderRef,
                        status: str, at: datetime, reason: str,
                        known: ConcernResolved | None = None) -> None:
    """Resolved or closed (closed stays closed). A concern not seen yet gets a row of what
    the event says, which its concern.raised fills in when it arrives."""
    await provider(conn, ref, at)
    await conn.execute(
        "INSERT INTO workspace.concerns (concern_id, ods_code, rule, theme, severity,"
        " severity_rank, reason, raised_at, version_at, status, ended_at, ended_reason)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '-infinity', $9, $8, $7)"
        " ON CONFLICT (concern_id) DO UPDATE SET status = CASE WHEN"
        " workspace.concerns.status = 'closed' THEN 'closed' ELSE EXCLUDED.status END,"
        " ended_at = coalesce(workspace.concerns.ended_at, EXCLUDED.ended_at),"
        " ended_reason = CASE WHEN workspace.concerns.status = 'closed'"
        " THEN workspace.concerns.ended_reason ELSE EXCLUDED.ended_reason END",
        concern_id, ref.ods_code, known.rule if known else "", known.theme if known else "",
        known.severity.value if known else "low", known.severity.rank if known else 1,
        reason, at, status)


async def meeting(conn: asyncpg.Connection, m: MeetingScheduled, status: str,
                  reason: str | None = None) -> None:
    """A meeting as its latest sequence says (a late, older revision changes nothing)."""
    await provider(conn, m.provider, m.starts_at)
    await conn.execute(
        "INSERT INTO workspace.meetings (meeting_id, concern_id, ods_code, title, starts_at,"
        " ends_at, location, deadline, breach, severity, agenda, attendees, sequence, status,"
        " cancel_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
        " $15) ON CONFLICT (meeting_id) DO UPDATE SET title = EXCLUDED.title,"
        " starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,"
        " location = EXCLUDED.location, deadline = EXCLUDED.deadline, breach = EXCLUDED.breach,"
        " severity = EXCLUDED.severity, agenda = EXCLUDED.agenda,"
        " attendees = EXCLUDED.attendees, sequence = EXCLUDED.sequence,"
        " status = CASE WHEN workspace.meetings.status = 'held' THEN 'held'"
        " ELSE EXCLUDED.status END, cancel_reason = EXCLUDED.cancel_reason"
        " WHERE workspace.meetings.sequence <= EXCLUDED.sequence",
        m.meeting_id, m.concern_id, m.provider.ods_code, m.title, m.starts_at, m.ends_at,
        m.location, m.deadline, m.breach, m.severity.value, list(m.agenda),
        [a.model_dump() for a in [m.organizer, *m.attendees]], m.sequence, status, reason)


async def meeting_concerns(conn: asyncpg.Connection, m: MeetingScheduled,
                           at: datetime) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Link the meeting to every concern on its agenda; returns (the concerns that joined
    now, those already on it). A provider's concerns gather on one meeting."""
    on_agenda = list(dict.fromkeys([m.concern_id, *m.concern_ids]))
    joined = await conn.fetch(
        "INSERT INTO workspace.meeting_concerns (meeting_id, concern_id, joined_at)"
        " SELECT $1, unnest($2::uuid[]), $3 ON CONFLICT DO NOTHING RETURNING concern_id",
        m.meeting_id, on_agenda, at)
    new = {r["concern_id"] for r in joined}
    return [c for c in on_agenda if c in new], [c for c in on_agenda if c not in new]


async def reply(conn: asyncpg.Connection, r: MeetingReplied) -> None:
    """An attendee's reply: the latest one per attendee counts (a reply to a later invitation,
    or received later for the same one); a late, older reply changes nothing."""
    await conn.execute(
        "INSERT INTO workspace.meeting_replies (meeting_id, attendee, partstat, sequence,"
        " received_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (meeting_id, attendee) DO UPDATE"
        " SET partstat = EXCLUDED.partstat, sequence = EXCLUDED.sequence,"
        " received_at = EXCLUDED.received_at WHERE (workspace.meeting_replies.sequence,"
        " workspace.meeting_replies.received_at) <= (EXCLUDED.sequence, EXCLUDED.received_at)",
        r.meeting_id, str(r.attendee).lower(), r.partstat, r.sequence, r.received_at)


async def action(conn: asyncpg.Connection, concern_id: uuid.UUID, ods_code: str,
                 a: dict[str, Any], at: datetime) -> None:
    """An action as an event or escalation's answer to a command shows it (a completed
    action stays completed)."""
    due = a["due_on"]
    await conn.execute(
        "INSERT INTO workspace.actions (action_id, concern_id, ods_code, description, owner,"
        " due_on, status, evidence_of_completion, updated_at, meeting_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (action_id) DO UPDATE SET"
        " meeting_id = coalesce(workspace.actions.meeting_id, EXCLUDED.meeting_id),"
        " description = EXCLUDED.description, owner = EXCLUDED.owner,"
        " due_on = EXCLUDED.due_on, status = CASE WHEN workspace.actions.status = 'completed'"
        " THEN 'completed' ELSE EXCLUDED.status END,"
        " evidence_of_completion = coalesce(EXCLUDED.evidence_of_completion,"
        " workspace.actions.evidence_of_completion), updated_at = EXCLUDED.updated_at",
        uuid.UUID(str(a["action_id"])), concern_id, ods_code, a["description"], a["owner"],
        due if isinstance(due, date) else date.fromisoformat(str(due)), a["status"],
        a.get("evidence_of_completion"), at,
        uuid.UUID(str(a["meeting_id"])) if a.get("meeting_id") else None)


async def held(conn: asyncpg.Connection, meeting_id: uuid.UUID, outcome: str) -> None:
    await conn.execute("UPDATE workspace.meetings SET status = 'held', outcome = $2"
                       " WHERE meeting_id = $1", meeting_id, outcome)


async def closed_now(conn: asyncpg.Connection, concern_id: uuid.UUID, reason: str,
                     at: datetime) -> None:
    """Closed by a command just sent (its concern.closed.v1 follows and changes nothing)."""
    await conn.execute(
        "UPDATE workspace.concerns SET status = 'closed', ended_at = coalesce(ended_at, $3),"
        " ended_reason = $2 WHERE concern_id = $1", concern_id, reason, at)


async def review_decided(conn: asyncpg.Connection, concern_id: uuid.UUID, decision: str,
                         reason: str, at: datetime) -> None:
    """A possible risk confirmed (now serious) or dismissed (resolved) by a command just
    sent; its concern.updated or concern.resolved follows and adds its timeline line."""
    if decision == "confirmed":
        await conn.execute(
            "UPDATE workspace.concerns SET severity = $2, severity_rank = $3,"
            " figures = figures || '{\"review\": \"confirmed\"}' WHERE concern_id = $1",
            concern_id, Severity.SERIOUS.value, Severity.SERIOUS.rank)
    else:
        await conn.execute(
            "UPDATE workspace.concerns SET figures = figures || '{\"review\": \"dismissed\"}',"
            " status = CASE WHEN status = 'closed' THEN status ELSE 'resolved' END,"
            " ended_at = coalesce(ended_at, $3), ended_reason = coalesce(ended_reason, $2)"
            " WHERE concern_id = $1", concern_id, f"dismissed: {reason}", at)


async def meeting_changed(conn: asyncpg.Connection, meeting_id: uuid.UUID, *,
                          starts_at: datetime | None = None, ends_at: datetime | None = None,
                          cancelled: str | None = None) -> None:
    """A meeting moved or cancelled by a command just sent (its meeting.rescheduled or
    meeting.cancelled follows, with the new sequence, and changes nothing more)."""
    await conn.execute(
        "UPDATE workspace.meetings SET starts_at = coalesce($2, starts_at),"
        " ends_at = coalesce($3, ends_at),"
        " status = CASE WHEN $4::text IS NULL OR status = 'held' THEN status ELSE 'cancelled' END,"
        " cancel_reason = coalesce($4, cancel_reason) WHERE meeting_id = $1",
        meeting_id, starts_at, ends_at, cancelled)


async def comment(conn: asyncpg.Connection, *, concern_id: uuid.UUID,
                  meeting_id: uuid.UUID | None, ods_code: str, author: str, role: str,
                  body: str, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO workspace.comments (comment_id, concern_id, meeting_id, ods_code, author,"
        " role, body, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", uuid.uuid4(), concern_id,
        meeting_id, ods_code, author, role, body, at)


async def evidence_file(conn: asyncpg.Connection, *, action: dict[str, Any], filename: str,
                        content_type: str, data: bytes, sha256: str, by: str,
                        at: datetime) -> uuid.UUID:
    file_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO workspace.evidence_files (file_id, action_id, concern_id, ods_code,"
        " filename, content_type, size_bytes, sha256, data, uploaded_by, uploaded_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", file_id, action["action_id"],
        action["concern_id"], action["ods_code"], filename, content_type, len(data), sha256,
        data, by, at)
    return file_id


async def get_file(conn: asyncpg.Connection, file_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM workspace.evidence_files WHERE file_id = $1",
                              file_id)
    return dict(row) if row else None


async def level(conn: asyncpg.Connection, concern_id: uuid.UUID, value: str) -> None:
    await conn.execute("UPDATE workspace.concerns SET level = $2 WHERE concern_id = $1",
                       concern_id, value)


async def visit(conn: asyncpg.Connection, v: VisitScheduled) -> None:
    await conn.execute(
        "INSERT INTO workspace.visits (visit_id, ods_code, visit_kind, due_on, reason,"
        " concern_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (visit_id) DO UPDATE SET"
        " due_on = EXCLUDED.due_on, reason = EXCLUDED.reason", v.visit_id, v.provider.ods_code,
        v.visit_kind, v.due_on, v.reason, v.concern_id)


async def audit(conn: asyncpg.Connection | asyncpg.Pool, *, at: datetime, actor: str,
                action: str, target: str, outcome: str,
                detail: dict[str, Any] | None = None) -> None:
    await conn.execute(
        "INSERT INTO workspace.audit_log (at, actor, action, target, outcome, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6)", at, actor, action, target, outcome[:2000],
        detail or {})


# -- reading (the pages) ------------------------------------------------------------------------
def _scope(ods_codes: list[str] | None, column: str = "ods_code", n: int = 1) -> str:
    """SQL restricting rows to a provider user's providers (None: the commissioner's staff)."""
    return "true" if ods_codes is None else f"{column} = ANY(${n}::text[])"


async def open_by_severity(conn: asyncpg.Connection, ods: list[str] | None) -> dict[str, int]:
    rows = await conn.fetch(
        f"SELECT severity, count(*) AS n FROM workspace.concerns WHERE status = 'open'"
        f" AND {_scope(ods)} GROUP BY severity", *([ods] if ods is not None else []))
    counts = {r["severity"]: r["n"] for r in rows}
    return {s: counts.get(s, 0) for s in SEVERITIES}


async def search_concerns(conn: asyncpg.Connection, ods: list[str] | None, *,
                          provider: str | None = None, severity: str | None = None,
                          status: str | None = None, since: datetime | None = None,
                          until: datetime | None = None, limit: int = 50) -> list[dict[str, Any]]:
    where = [_scope(ods, "c.ods_code")]
    args: list[Any] = [ods] if ods is not None else []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if provider:
        where.append(f"c.ods_code = {arg(provider.upper())}")
    if severity:
        where.append(f"c.severity = {arg(severity)}")
    if status:
        where.append(f"c.status = {arg(status)}")
    if since:
        where.append(f"c.raised_at >= {arg(since)}")
    if until:
        where.append(f"c.raised_at < {arg(until)}")
    rows = await conn.fetch(
        "SELECT c.*, p.name AS provider_name FROM workspace.concerns c LEFT JOIN"
        " workspace.providers p USING (ods_code) WHERE " + " AND ".join(where)
        + f" ORDER BY c.severity_rank DESC, c.raised_at DESC LIMIT {arg(limit)}", *args)
    return [dict(r) for r in rows]


async def with_next_meeting(conn: asyncpg.Connection,
                            concerns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each concern with its meeting still to be held (``meeting``: id and start, or None)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (l.concern_id) l.concern_id, m.meeting_id, m.starts_at"
        " FROM workspace.meeting_concerns l JOIN workspace.meetings m USING (meeting_id)"
        " WHERE l.concern_id = ANY($1::uuid[]) AND m.status = 'scheduled'"
        " ORDER BY l.concern_id, m.starts_at", [c["concern_id"] for c in concerns])
    meetings = {r["concern_id"]: dict(r) for r in rows}
    return [{**c, "meeting": meetings.get(c["concern_id"])} for c in concerns]


async def meetings_between(conn: asyncpg.Connection, ods: list[str] | None, start: datetime,
                           end: datetime) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT m.*, p.name AS provider_name FROM workspace.meetings m LEFT JOIN"
        f" workspace.providers p USING (ods_code) WHERE {_scope(ods, 'm.ods_code', 3)}"
        f" AND m.starts_at >= $1 AND m.starts_at < $2 ORDER BY m.starts_at",
        start, end, *([ods] if ods is not None else []))
    return [dict(r) for r in rows]


async def overdue_actions(conn: asyncpg.Connection, ods: list[str] | None,
                          today: date) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT a.*, p.name AS provider_name FROM workspace.actions a LEFT JOIN"
        f" workspace.providers p USING (ods_code) WHERE {_scope(ods, 'a.ods_code', 2)}"
        f" AND a.status <> 'completed' AND a.due_on < $1 ORDER BY a.due_on LIMIT 100",
        today, *([ods] if ods is not None else []))
    return [dict(r) for r in rows]


async def get_concern(conn: asyncpg.Connection, concern_id: uuid.UUID) -> dict[str, Any] | None:
    """The concern without its evidence (``evidence_page``), with how many items it holds."""
    row = await conn.fetchrow(
        "SELECT c.concern_id, c.ods_code, c.rule, c.theme, c.severity, c.severity_rank,"
        " c.reason, c.figures, c.status, c.level, c.raised_at, c.version_at, c.ended_at,"
        " c.ended_reason, jsonb_array_length(c.evidence) AS evidence_count,"
        " p.name AS provider_name FROM workspace.concerns c LEFT JOIN"
        " workspace.providers p USING (ods_code) WHERE c.concern_id = $1", concern_id)
    return dict(row) if row else None


async def evidence_page(conn: asyncpg.Connection, concern_id: uuid.UUID, page: int,
                        per_page: int) -> dict[str, Any]:
    """A page of the concern's evidence, latest first (page 1: the latest ``per_page``), with
    the total, the number of pages and how many items the other pages hold."""
    row = await conn.fetchrow(
        "SELECT n AS total, coalesce((SELECT jsonb_agg(x.e ORDER BY x.i DESC)"
        "  FROM jsonb_array_elements(c.evidence) WITH ORDINALITY AS x(e, i)"
        "  WHERE x.i <= n - $2 AND x.i > n - $2 - $3), '[]'::jsonb) AS items"
        " FROM workspace.concerns c, jsonb_array_length(c.evidence) AS n WHERE concern_id = $1",
        concern_id, (page - 1) * per_page, per_page)
    total = row["total"] if row else 0
    items = row["items"] if row else []
    pages = max(1, -(-total // per_page))
    return {"items": items, "total": total, "page": page, "pages": pages,
            "first": (page - 1) * per_page + 1, "last": (page - 1) * per_page + len(items),
            "more": total - len(items)}


async def concern_parts(conn: asyncpg.Connection, concern_id: uuid.UUID) -> dict[str, Any]:
    meetings = await conn.fetch(
        "SELECT m.* FROM workspace.meetings m JOIN workspace.meeting_concerns l"
        " USING (meeting_id) WHERE l.concern_id = $1 ORDER BY m.starts_at", concern_id)
    # Its own actions and those agreed at a meeting it was on the agenda of.
    actions = await conn.fetch(
        "SELECT * FROM workspace.actions WHERE concern_id = $1 OR meeting_id IN"
        " (SELECT meeting_id FROM workspace.meeting_concerns WHERE concern_id = $1)"
        " ORDER BY due_on, description", concern_id)
    files = await conn.fetch(
        "SELECT file_id, action_id, filename, content_type, size_bytes, sha256, uploaded_by,"
        " uploaded_at FROM workspace.evidence_files WHERE concern_id = $1 ORDER BY uploaded_at",
        concern_id)
    entries = await conn.fetch("SELECT * FROM workspace.timeline WHERE concern_id = $1"
                               " ORDER BY at, entry_id", concern_id)
    comments = await conn.fetch("SELECT * FROM workspace.comments WHERE concern_id = $1"
                                " ORDER BY at", concern_id)
    return {"meetings": [dict(m) for m in meetings], "actions": [dict(a) for a in actions],
            "files": [dict(f) for f in files], "timeline": [dict(e) for e in entries],
            "comments": [dict(c) for c in comments]}


async def get_meeting(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT m.*, p.name AS provider_name FROM workspace.meetings m LEFT JOIN"
        " workspace.providers p USING (ods_code) WHERE m.meeting_id = $1", meeting_id)
    return dict(row) if row else None


async def concerns_of_meeting(conn: asyncpg.Connection,
                              meeting_id: uuid.UUID) -> list[dict[str, Any]]:
    """The concerns on a meeting's agenda, most severe first."""
    rows = await conn.fetch(
        "SELECT c.* FROM workspace.concerns c JOIN workspace.meeting_concerns l"
        " USING (concern_id) WHERE l.meeting_id = $1"
        " ORDER BY c.severity_rank DESC, c.raised_at", meeting_id)
    return [dict(r) for r in rows]


REPLIES = ("accepted", "declined", "tentative", "no reply")


async def replies_of(conn: asyncpg.Connection, meeting_ids: list[uuid.UUID]
                     ) -> dict[uuid.UUID, dict[str, dict[str, Any]]]:
    """The replies to each meeting, by attendee address (lower case)."""
    rows = await conn.fetch("SELECT * FROM workspace.meeting_replies"
                            " WHERE meeting_id = ANY($1::uuid[])", meeting_ids)
    out: dict[uuid.UUID, dict[str, dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["meeting_id"], {})[r["attendee"]] = dict(r)
    return out


def rsvps(meeting: dict[str, Any], replies: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each attendee of a meeting with their reply (pure): ``reply`` is accepted, declined,
    tentative or "no reply" (the organiser, who sends the invitation, has none: None);
    ``earlier`` says the reply answered an invitation since moved (a lower sequence)."""
    out = []
    for a in meeting["attendees"]:
        r = replies.get(str(a["email"]).lower())
        organiser = a.get("role") == "organizer"
        out.append({**a, "reply": None if organiser and r is None else
                    (r["partstat"] if r else "no reply"),
                    "replied_at": r["received_at"] if r else None,
                    "earlier": bool(r and r["sequence"] < meeting["sequence"])})
    return out


def rsvp_summary(people: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Who replied what (pure), in ``REPLIES`` order, each list in the attendees' order."""
    summary: dict[str, list[str]] = {k: [] for k in REPLIES}
    for p in people:
        if p["reply"] is not None:
            summary[p["reply"]].append(str(p["name"]))
    return summary


async def get_action(conn: asyncpg.Connection, action_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM workspace.actions WHERE action_id = $1", action_id)
    return dict(row) if row else None


async def get_provider(conn: asyncpg.Connection, ods_code: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM workspace.providers WHERE ods_code = $1", ods_code)
    return dict(row) if row else None


async def provider_parts(conn: asyncpg.Connection, ods_code: str,
                         since: datetime) -> dict[str, Any]:
    meetings = await conn.fetch("SELECT * FROM workspace.meetings WHERE ods_code = $1"
                                " ORDER BY starts_at DESC LIMIT 50", ods_code)
    actions = await conn.fetch("SELECT * FROM workspace.actions WHERE ods_code = $1"
                               " ORDER BY due_on DESC LIMIT 100", ods_code)
    visits = await conn.fetch("SELECT * FROM workspace.visits WHERE ods_code = $1"
                              " ORDER BY due_on DESC LIMIT 50", ods_code)
    # Concerns raised per month since ``since`` (the chart and its table).
    monthly = await conn.fetch(
        "SELECT date_trunc('month', raised_at AT TIME ZONE 'Europe/London')::date AS month,"
        " count(*) AS n FROM workspace.concerns WHERE ods_code = $1 AND raised_at >= $2"
        " GROUP BY 1 ORDER BY 1", ods_code, since)
    return {"meetings": [dict(m) for m in meetings], "actions": [dict(a) for a in actions],
            "visits": [dict(v) for v in visits], "monthly": [dict(m) for m in monthly]}


POSSIBLE_RULE = "possible_serious_risk"  # quality-monitor's rule for a possible risk
# An open possible risk nobody has confirmed or dismissed yet (quality-monitor's
# concern.updated says "review": "confirmed"; a dismissal resolves the concern).
PENDING_REVIEW = (f"c.rule = '{POSSIBLE_RULE}' AND c.status = 'open'"
                  " AND coalesce(c.figures->>'review', 'pending') = 'pending'")


def pending_review(concern: dict[str, Any]) -> bool:
    """Whether a concern waits for the quality team to confirm or dismiss it (pure)."""
    return concern["rule"] == POSSIBLE_RULE and concern["status"] == "open" and \
        (concern.get("figures") or {}).get("review", "pending") == "pending"


async def review_queue(conn: asyncpg.Connection, ods: list[str] | None,
                       limit: int = 100) -> list[dict[str, Any]]:
    """Possible serious risks waiting for a decision, oldest first."""
    rows = await conn.fetch(
        "SELECT c.*, p.name AS provider_name FROM workspace.concerns c LEFT JOIN"
        f" workspace.providers p USING (ods_code) WHERE {PENDING_REVIEW}"
        f" AND {_scope(ods, 'c.ods_code', 2)} ORDER BY c.raised_at LIMIT $1",
        limit, *([ods] if ods is not None else []))
    return [dict(r) for r in rows]


async def measure_concerns(conn: asyncpg.Connection, ods_code: str,
                           limit: int = 20) -> list[dict[str, Any]]:
    """A provider's concerns about its measures (quality-monitor's SPC and funnel signals
    gather on them, with their figures), newest first."""
    rows = await conn.fetch(
        "SELECT concern_id, figures, raised_at FROM workspace.concerns WHERE ods_code = $1"
        " AND rule = 'measure_signals' ORDER BY version_at DESC LIMIT $2", ods_code, limit)
    return [dict(r) for r in rows]


async def newest_serious(conn: asyncpg.Connection, ods: list[str] | None) -> datetime | None:
    """When the newest open serious or high concern was raised (the overview's live check)."""
    value = await conn.fetchval(
        f"SELECT max(raised_at) FROM workspace.concerns WHERE status = 'open'"
        f" AND severity_rank >= 3 AND {_scope(ods)}", *([ods] if ods is not None else []))
    return value if isinstance(value, datetime) else None
