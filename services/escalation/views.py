"""What the quality team reads (the CLI and the HTTP API show the same views)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.escalation import schedule, store


async def concern_file(conn: asyncpg.Connection, concern_id: uuid.UUID) -> dict[str, Any] | None:
    """Everything about one concern: as announced, its meeting, action plan, ladder, visits
    and pending jobs."""
    concern = await store.get_concern(conn, concern_id)
    if concern is None:
        return None
    meeting = await store.meeting_for_concern(conn, concern_id)
    visits = await conn.fetch("SELECT * FROM escalation.visits WHERE concern_id = $1"
                              " ORDER BY due_on", concern_id)
    return {
        "concern": dict(concern),
        "meeting": dict(meeting) if meeting else None,
        "actions": [dict(a) for a in await store.actions_of(conn, concern_id)],
        "ladder": [dict(s) for s in await store.ladder_steps(conn, concern_id)],
        "visits": [dict(v) for v in visits],
        "pending_jobs": await schedule.pending(conn, concern_id),
    }


async def cqrm_agendas(conn: asyncpg.Connection, ods_code: str | None = None,
                       since: datetime | None = None) -> list[dict[str, Any]]:
    """The agenda of each CQRM that has open items: provider, start, items."""
    agendas: dict[tuple[str, Any], dict[str, Any]] = {}
    for row in await store.cqrm_agendas(conn, ods_code, since):
        key = (row["ods_code"], row["cqrm_at"])
        agenda = agendas.setdefault(key, {"ods_code": row["ods_code"], "cqrm_at": row["cqrm_at"],
                                          "items": []})
        agenda["items"].append({"concern_id": row["concern_id"], "item": row["item"],
                                "added_at": row["added_at"]})
    return list(agendas.values())


async def meeting_file(conn: asyncpg.Connection, meeting_id: uuid.UUID) -> dict[str, Any] | None:
    """A meeting with the concerns on its agenda and each attendee's reply (RSVP)."""
    row = await store.get_meeting(conn, meeting_id)
    if row is None:
        return None
    meeting = dict(row)
    rsvp = row["rsvp"] or {}
    meeting["attendees"] = [{**a, "rsvp": (rsvp.get(a["email"].lower()) or {}).get(
        "partstat", "needs-action")} for a in row["attendees"]]
    meeting["concerns"] = [
        {"concern_id": c["concern_id"], "theme": c["theme"], "severity": c["severity"],
         "status": c["status"]}
        for c in await store.meeting_concerns(conn, meeting_id, status=None)]
    return meeting
