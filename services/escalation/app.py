"""escalation: books remedial-action meetings and files lesser concerns, by policy.

Consumes: ``concern.raised.v1``, ``concern.updated.v1``.
Publishes: ``meeting.scheduled.v1`` (through the outbox).
Stores: schema ``escalation`` (concerns, meetings, bookings, cqrm_agenda, watch_list).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from services.escalation import store
from services.escalation.calendar import first_free_slot
from services.escalation.policy import EscalationPolicy, load_policy
from shared.events import Attendee, ConcernRaised, ConcernUpdated, Event, MeetingScheduled
from shared.outbox import Outbox
from shared.runtime import EventHandler, ServiceRuntime
from shared.settings import Settings
from shared.topology import Subscription, Topology

NAME = "escalation"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Escalation:
    """The handlers, with the policy, the commissioner's people and a clock."""

    def __init__(self, settings: Settings, policy: EscalationPolicy, clock: Clock = utc_now):
        self.policy = policy
        self.clock = clock
        self.organizer = Attendee(role="organizer", name=settings.commissioner_name,
                                  email=settings.quality_team_email)
        self.commissioner_attendees = [
            Attendee(role="commissioner quality lead", name=settings.quality_lead_name,
                     email=settings.quality_lead_email),
            Attendee(role="lay member", name=settings.lay_member_name,
                     email=settings.lay_member_email),
        ]

    async def on_concern_raised(self, conn: asyncpg.Connection, concern: ConcernRaised,
                                outbox: Outbox) -> None:
        """Act on a new concern by the policy for its severity."""
        await self._act(conn, concern, outbox)

    async def on_concern_updated(self, conn: asyncpg.Connection, concern: ConcernUpdated,
                                 outbox: Outbox) -> None:
        """New evidence: refresh the concern; a rise in severity may now need a meeting."""
        await self._act(conn, concern, outbox)

    async def _act(self, conn: asyncpg.Connection, concern: ConcernRaised,
                   outbox: Outbox) -> None:
        rule = self.policy.for_severity(concern.severity)
        await store.upsert_concern(conn, concern, rule.action)
        if rule.action == "meeting":
            if await store.meeting_for_concern(conn, concern.concern_id) is None:
                meeting = await self.book_meeting(conn, concern, rule.within_working_days,
                                                  timedelta(minutes=rule.duration_minutes))
                await outbox.add(meeting)
        else:
            item = f"{concern.provider.name}: {concern.theme} ({concern.severity}): {concern.reason}"
            await store.add_agenda_item(conn, rule.action, concern, item)

    async def book_meeting(self, conn: asyncpg.Connection, concern: ConcernRaised,
                           within_working_days: int, duration: timedelta) -> MeetingScheduled:
        provider_lead = Attendee(role="provider quality lead",
                                 name=f"Quality lead, {concern.provider.name}",
                                 email=concern.provider.quality_contact_email)
        attendees = [provider_lead, *self.commissioner_attendees]
        keys = [f"provider:{concern.provider.ods_code}",
                *(f"person:{a.email.lower()}" for a in self.commissioner_attendees)]
        now = self.clock()
        await store.lock_attendees(conn, keys)
        busy = await store.busy_intervals(conn, keys, now)
        slot = first_free_slot(now, within_working_days=within_working_days, duration=duration,
                               busy=busy, hours=self.policy.hours(),
                               minimum_notice=self.policy.minimum_notice)
        meeting = MeetingScheduled(
            meeting_id=uuid.uuid4(), concern_id=concern.concern_id, provider=concern.provider,
            title=f"Remedial action meeting: {concern.provider.name} - {concern.theme}"
                  f" ({concern.severity})",
            starts_at=slot.start, ends_at=slot.end, timezone=str(self.policy.hours().tz),
            location=self.policy.location, deadline=slot.deadline, breach=slot.breach,
            severity=concern.severity, agenda=agenda(concern),
            remedial_actions=self.policy.actions_for(
                concern.rule, concern.figures.get("triggers")),
            organizer=self.organizer, attendees=attendees)
        await store.insert_meeting(conn, meeting, keys)
        return meeting


def agenda(concern: ConcernRaised) -> list[str]:
    """The meeting's agenda: the concern, why it was raised, and the evidence."""
    items = [f"The concern: {concern.reason}",
             f"Rule {concern.rule} on theme '{concern.theme}', severity {concern.severity}."]
    for e in concern.evidence:
        matched = f' (matched: "{e.matched}")' if e.matched else ""
        items.append(f"Evidence: {e.kind} {e.feedback_id} of {e.occurred_on}{matched}")
    items.append("Remedial actions requested and the provider's response.")
    return items


def handlers(escalation: Escalation) -> list[tuple[type[Event], EventHandler[Any]]]:
    """What this service does, in one table: event consumed -> handler."""
    return [
        (ConcernRaised, escalation.on_concern_raised),
        (ConcernUpdated, escalation.on_concern_updated),
    ]


def subscriptions(topology: Topology) -> list[Subscription]:
    return [topology.event_subscription(NAME, cls.event_type)
            for cls in (ConcernRaised, ConcernUpdated)]


def build(settings: Settings, clock: Clock = utc_now) -> ServiceRuntime:
    runtime = ServiceRuntime(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
    escalation = Escalation(settings, load_policy(settings.escalation_policy_file), clock)
    for event_cls, handler in handlers(escalation):
        runtime.on_event(event_cls, handler)
    return runtime
