"""Remedial-action meetings: book, bring forward, update the agenda, cancel.

Booking takes a transaction-scoped advisory lock per attendee (in one global order, so no two
bookings deadlock), reads who is busy, picks the first free slot by the calendar rules and
books it; the exclusion constraint on ``bookings`` refuses a double booking whatever happens.
Each change bumps the meeting's ``sequence`` and is announced (meeting.rescheduled.v1,
meeting.cancelled.v1) with the same meeting id, so calendar invitations update in place.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.escalation import store
from services.escalation.calendar import Slot, booking_deadline, first_free_slot
from services.escalation.concerns import agenda, meeting_title
from services.escalation.people import People
from services.escalation.policy import EscalationPolicy
from shared.events import (
    Attendee,
    ConcernRaised,
    MeetingCancelled,
    MeetingRescheduled,
    MeetingScheduled,
    ProviderRef,
    Severity,
)


def attendee_keys(provider: ProviderRef, people: People) -> list[str]:
    """The calendars a remedial meeting books: the provider's and each commissioner person's."""
    return [f"provider:{provider.ods_code}",
            *(f"person:{a.email.lower()}" for a in people.commissioner)]


def meeting_from_row(row: asyncpg.Record, provider: ProviderRef, timezone: str) -> MeetingScheduled:
    """The meeting as last announced."""
    return MeetingScheduled(
        meeting_id=row["meeting_id"], concern_id=row["concern_id"], provider=provider,
        title=row["title"], starts_at=row["starts_at"], ends_at=row["ends_at"],
        timezone=timezone, location=row["location"], deadline=row["deadline"],
        breach=row["breach"], severity=row["severity"], agenda=row["agenda"],
        remedial_actions=row["remedial_actions"],
        organizer=Attendee.model_validate(row["organizer"]),
        attendees=[Attendee.model_validate(a) for a in row["attendees"]],
        sequence=row["sequence"])


class MeetingPlanner:
    def __init__(self, policy: EscalationPolicy, people: People) -> None:
        self.policy = policy
        self.people = people
        self.timezone = str(policy.hours().tz)

    def duration(self, severity: Severity) -> timedelta:
        return timedelta(minutes=self.policy.for_severity(severity).duration_minutes)

    def window(self, severity: Severity) -> int:
        return self.policy.for_severity(severity).within_working_days

    def deadline(self, severity: Severity, now: datetime) -> datetime:
        return booking_deadline(now, self.window(severity), self.policy.hours())

    async def _find_slot(self, conn: asyncpg.Connection, keys: list[str], severity: Severity,
                         now: datetime, except_meeting: uuid.UUID | None = None) -> Slot:
        await store.lock_attendees(conn, keys)
        busy = await store.busy_intervals(conn, keys, now, except_meeting)
        return first_free_slot(now, within_working_days=self.window(severity),
                               duration=self.duration(severity), busy=busy,
                               hours=self.policy.hours(),
                               minimum_notice=self.policy.minimum_notice)

    def _details(self, concern: ConcernRaised) -> dict[str, Any]:
        return {
            "title": meeting_title(concern), "severity": concern.severity,
            "agenda": agenda(concern),
            "remedial_actions": self.policy.actions_for(concern.rule,
                                                        concern.figures.get("triggers")),
            "attendees": self.people.meeting(concern.provider),
        }

    async def book(self, conn: asyncpg.Connection, concern: ConcernRaised,
                   now: datetime) -> MeetingScheduled:
        """Book the concern's meeting in the first free slot of its window (or the first
        after it, flagged as a breach)."""
        keys = attendee_keys(concern.provider, self.people)
        slot = await self._find_slot(conn, keys, concern.severity, now)
        meeting = MeetingScheduled(
            meeting_id=uuid.uuid4(), concern_id=concern.concern_id, provider=concern.provider,
            starts_at=slot.start, ends_at=slot.end, timezone=self.timezone,
            location=self.policy.location, deadline=slot.deadline, breach=slot.breach,
            organizer=self.people.organizer, **self._details(concern))
        await store.insert_meeting(conn, meeting, keys)
        return meeting

    async def revise(self, conn: asyncpg.Connection, row: asyncpg.Record,
                     concern: ConcernRaised, change: str, now: datetime) -> MeetingRescheduled:
        """The meeting after the concern changed: brought forward into the new window if the
        concern became more severe and the booked time is now too late, else the same time
        with the new agenda. Either way, sequence + 1."""
        current = meeting_from_row(row, concern.provider, self.timezone)
        update: dict[str, Any] = self._details(concern)
        rose = concern.severity.rank > current.severity.rank
        if not rose:
            change = f"agenda updated ({change})"
        else:
            deadline = min(current.deadline, self.deadline(concern.severity, now))
            update["deadline"] = deadline
            if current.ends_at <= deadline:
                change = f"agenda updated; the meeting is already inside the new window ({change})"
            else:
                keys = await store.booking_keys(conn, current.meeting_id) \
                    or attendee_keys(concern.provider, self.people)
                slot = await self._find_slot(conn, keys, concern.severity, now,
                                             except_meeting=current.meeting_id)
                if slot.start < current.starts_at:
                    await store.release_bookings(conn, current.meeting_id)
                    await store.insert_bookings(conn, current.meeting_id, keys, slot.start,
                                                slot.end)
                    update |= {"starts_at": slot.start, "ends_at": slot.end,
                               "deadline": slot.deadline, "breach": slot.breach}
                    change = f"brought forward ({change})"
                else:
                    update["breach"] = True
                    change = f"agenda updated; no earlier slot is free ({change})"
        revised = MeetingRescheduled(
            **(current.model_dump() | update | {"sequence": current.sequence + 1}),
            previous_starts_at=current.starts_at, change=change)
        await store.update_meeting(conn, revised)
        return revised

    async def cancel(self, conn: asyncpg.Connection, row: asyncpg.Record,
                     provider: ProviderRef, reason: str, now: datetime) -> MeetingCancelled:
        """Cancel a meeting not yet held and free its attendees; sequence + 1."""
        current = meeting_from_row(row, provider, self.timezone)
        cancelled = MeetingCancelled(**(current.model_dump() | {"sequence": current.sequence + 1}),
                                     reason=reason)
        await store.release_bookings(conn, current.meeting_id)
        await store.update_meeting(conn, cancelled, status="cancelled", at=now)
        return cancelled
