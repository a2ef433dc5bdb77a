"""People in control: the quality team moves, cancels and staffs meetings, and keeps the rota
(people, their capacity and their unavailability). Commands for the CLI and the HTTP API,
each in the caller's transaction, with its events in the outbox.

The actor is an explicit argument of every command (the CLI and the HTTP API obtain it; this
module never guesses it), and every command writes the audit trail of each concern on the
meeting's agenda.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Any

import asyncpg

from services.escalation import store
from services.escalation.freebusy import busy_periods
from services.escalation.meetings import MeetingPlanner
from services.escalation.plans import Conflict, NotFound
from shared.outbox import Outbox

ROLES = ("quality lead", "deputy quality lead", "lay member", "safeguarding lead",
         "head of quality")


class MeetingControl:
    def __init__(self, planner: MeetingPlanner, clock: Callable[[], datetime]) -> None:
        self.planner = planner
        self.clock = clock

    async def _audit(self, conn: asyncpg.Connection, meeting_id: uuid.UUID, *, actor: str,
                     action: str, detail: dict[str, Any], at: datetime) -> None:
        row = await store.get_meeting(conn, meeting_id)
        assert row is not None
        ids = await store.meeting_concern_ids(conn, meeting_id) or [row["concern_id"]]
        for concern_id in ids:
            await store.audit(conn, concern_id=concern_id, ods_code=row["ods_code"], at=at,
                              party="commissioner", actor=actor, action=action,
                              detail={"meeting_id": str(meeting_id), **detail})

    # -- meetings --------------------------------------------------------------------------
    async def reschedule(self, conn: asyncpg.Connection, meeting_id: uuid.UUID, *, actor: str,
                         reason: str, to: datetime | None = None) -> dict[str, Any]:
        """Move the meeting to ``to`` (refused with the reason if that time is not free), or
        to the next free slot after it."""
        now = self.clock()
        result = await self.planner.reschedule(conn, meeting_id, now, reason=reason, to=to)
        await self._audit(conn, meeting_id, actor=actor, action="meeting rescheduled",
                          detail={"reason": reason, "to": result["starts_at"].isoformat()},
                          at=now)
        return result

    async def cancel(self, conn: asyncpg.Connection, outbox: Outbox, meeting_id: uuid.UUID, *,
                     actor: str, reason: str) -> dict[str, Any]:
        """Cancel a meeting not yet started; the cancellation goes out at once."""
        now = self.clock()
        row = await self.planner.open_for_change(conn, meeting_id, now)
        first = await store.get_concern(conn, row["concern_id"])
        assert first is not None
        cancelled = await self.planner.cancel(conn, row, store.provider_of(first),
                                              f"cancelled by the quality team: {reason}", now)
        await outbox.add(cancelled)
        await self._audit(conn, meeting_id, actor=actor, action="meeting cancelled",
                          detail={"reason": reason}, at=now)
        return {"meeting_id": meeting_id, "status": "cancelled", "sequence": cancelled.sequence,
                "reason": reason}

    async def change_attendee(self, conn: asyncpg.Connection, meeting_id: uuid.UUID, *,
                              actor: str, reason: str, email: str, name: str | None = None,
                              role: str | None = None,
                              replaces: str | None = None) -> dict[str, Any]:
        """Add an attendee, or substitute one for another (``replaces``)."""
        now = self.clock()
        result = await self.planner.change_attendee(conn, meeting_id, now, reason=reason,
                                                    email=email, name=name, role=role,
                                                    replaces=replaces)
        await self._audit(conn, meeting_id, actor=actor,
                          action="attendee substituted" if replaces else "attendee added",
                          detail={"reason": reason, "email": email.lower(),
                                  "replaces": replaces}, at=now)
        return result

    # -- the rota --------------------------------------------------------------------------
    async def _on_rota(self, conn: asyncpg.Connection, email: str) -> asyncpg.Record:
        await store.ensure_people(conn, self.planner.people.rota_seed())
        person = await store.get_person(conn, email)
        if person is None:
            raise NotFound(f"{email} is not on the rota")
        return person

    async def set_person(self, conn: asyncpg.Connection, *, email: str, name: str | None = None,
                         role: str | None = None, works_from: time | None = None,
                         works_until: time | None = None,
                         working_days: list[int] | None = None,
                         max_meetings_per_day: int | None = None,
                         buffer_minutes: int | None = None,
                         active: bool | None = None) -> dict[str, Any]:
        """Add a person to the rota or change what is given."""
        await store.ensure_people(conn, self.planner.people.rota_seed())
        known = await store.get_person(conn, email)
        if known is None and (name is None or role is None):
            raise Conflict(f"{email} is not on the rota: a new person needs a name and a role")
        if role is not None and role not in ROLES:
            raise Conflict(f"role {role!r}: expected one of {', '.join(ROLES)}")
        if working_days is not None and not set(working_days) <= set(range(7)):
            raise Conflict("working days are 0 (Monday) to 6 (Sunday)")
        try:
            return await store.upsert_person(conn, {
                "email": email, "name": name, "role": role, "works_from": works_from,
                "works_until": works_until, "working_days": working_days,
                "max_meetings_per_day": max_meetings_per_day, "buffer_minutes": buffer_minutes,
                "active": active})
        except asyncpg.CheckViolationError as exc:
            raise Conflict(f"refused: {exc.constraint_name or exc}") from exc

    async def add_unavailability(self, conn: asyncpg.Connection, *, email: str,
                                 starts_at: datetime, ends_at: datetime, reason: str,
                                 actor: str) -> dict[str, Any]:
        await self._on_rota(conn, email)
        if ends_at <= starts_at:
            raise Conflict("an unavailable period must end after it starts")
        return await store.add_unavailability(conn, email=email, starts_at=starts_at,
                                              ends_at=ends_at, reason=reason,
                                              created_by=actor, at=self.clock())

    async def import_calendar(self, conn: asyncpg.Connection, *, email: str, data: bytes,
                              actor: str) -> dict[str, Any]:
        """Import busy periods from an iCalendar free/busy or events file (a re-import of the
        same file replaces its periods)."""
        await self._on_rota(conn, email)
        now = self.clock()
        try:
            periods = busy_periods(data, self.planner.hours.tz, since=now,
                                   until=now + timedelta(days=400))
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
        for p in periods:
            await store.add_unavailability(conn, email=email, starts_at=p.starts_at,
                                           ends_at=p.ends_at, reason=p.reason,
                                           created_by=actor, at=now, source="icalendar",
                                           source_uid=p.uid)
        return {"email": email.lower(), "imported": len(periods)}
