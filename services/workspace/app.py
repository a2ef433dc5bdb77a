"""workspace: the quality team's signed-in web app (services/workspace/README.md).

Consumes: ``concern.raised.v1``, ``concern.updated.v2`` (and v1), ``concern.resolved.v1``,
``concern.closed.v1``, ``concern.escalated.v1``, ``meeting.scheduled.v1``,
``meeting.rescheduled.v1``, ``meeting.cancelled.v1``, ``action.due_soon.v1``,
``action.overdue.v1``, ``visit.scheduled.v1``, ``meeting.reply.v1`` (notification's: the
attendees' replies): its read model.
Publishes: nothing (commands go to escalation's HTTP API).
Stores: schema ``workspace`` (the read model; comments, evidence files, sessions, audit log).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.workspace import store
from services.workspace.config import WorkspaceSettings
from shared.clock import Clock, utc_now
from shared.events import (
    ActionDueSoon,
    ActionOverdue,
    ConcernClosed,
    ConcernEscalated,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    ConcernUpdatedV1,
    Event,
    MeetingCancelled,
    MeetingReplied,
    MeetingRescheduled,
    MeetingScheduled,
    VisitScheduled,
)
from shared.outbox import Outbox
from shared.runtime import EventHandler, ServiceRuntime, subscriptions_of
from shared.settings import Settings
from shared.topology import Subscription, Topology

NAME = "workspace"




def sent_at(outbox: Outbox, fallback: datetime) -> datetime:
    """When the event was published (its envelope's time), for the timeline."""
    return outbox.cause.time if outbox.cause is not None else fallback


class ReadModel:
    """The handlers: each stores what its event says (load -> decide -> store)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def on_concern(self, conn: asyncpg.Connection, event: ConcernRaised,
                         outbox: Outbox) -> None:
        """A concern raised or updated: its rule, figures, redacted evidence, severity."""
        await store.concern(conn, event)

    async def on_resolved(self, conn: asyncpg.Connection, event: ConcernResolved,
                          outbox: Outbox) -> None:
        """The concern is over (closed, or its signal back to common cause)."""
        await store.concern_ended(conn, event.concern_id, event.provider, "resolved",
                                  event.resolved_at, event.resolution, known=event)
        await store.timeline(conn, event.concern_id, event.provider.ods_code,
                             event.resolved_at, store.describe(event))

    async def on_closed(self, conn: asyncpg.Connection, event: ConcernClosed,
                        outbox: Outbox) -> None:
        """The quality team closed the concern (escalation)."""
        await store.concern_ended(conn, event.concern_id, event.provider, "closed",
                                  event.closed_at, event.reason)
        await store.timeline(conn, event.concern_id, event.provider.ods_code, event.closed_at,
                             store.describe(event), actor=event.closed_by)

    async def on_escalated(self, conn: asyncpg.Connection, event: ConcernEscalated,
                           outbox: Outbox) -> None:
        """The concern climbed the ladder."""
        await store.level(conn, event.concern_id, event.level)
        at = event.history[-1].at if event.history else sent_at(outbox, self.clock())
        await store.timeline(conn, event.concern_id, event.provider.ods_code, at,
                             store.describe(event))

    async def on_meeting(self, conn: asyncpg.Connection, event: MeetingScheduled,
                         outbox: Outbox) -> None:
        """A meeting booked, moved or cancelled."""
        status = "cancelled" if isinstance(event, MeetingCancelled) else "scheduled"
        reason = event.reason if isinstance(event, MeetingCancelled) else None
        at = sent_at(outbox, event.deadline)
        await store.meeting(conn, event, status, reason)
        joined, already = await store.meeting_concerns(conn, event, at)
        entry = store.describe(event)
        for concern_id in already:
            await store.timeline(conn, concern_id, event.provider.ods_code, at, entry)
        for concern_id in joined:
            await store.timeline(conn, concern_id, event.provider.ods_code, at,
                                 entry if type(event) is MeetingScheduled
                                 else store.joined_agenda(event))

    async def on_reply(self, conn: asyncpg.Connection, event: MeetingReplied,
                       outbox: Outbox) -> None:
        """An attendee accepted, declined or said tentative (the RSVP shown with the
        meeting)."""
        await store.reply(conn, event)

    async def on_action(self, conn: asyncpg.Connection, event: ActionDueSoon,
                        outbox: Outbox) -> None:
        """A remedial action due soon or overdue."""
        at = sent_at(outbox, datetime.combine(event.action.due_on, datetime.min.time(), UTC))
        await store.action(conn, event.concern_id, event.provider.ods_code,
                           event.action.model_dump(), at)
        await store.timeline(conn, event.concern_id, event.provider.ods_code, at,
                             store.describe(event))

    async def on_visit(self, conn: asyncpg.Connection, event: VisitScheduled,
                       outbox: Outbox) -> None:
        """An insight visit or re-visit due."""
        await store.visit(conn, event)


def handlers(r: ReadModel) -> list[tuple[type[Event], EventHandler[Any]]]:
    return [
        (ConcernRaised, r.on_concern),
        (ConcernUpdated, r.on_concern),
        (ConcernUpdatedV1, r.on_concern),  # until its queues are drained
        (ConcernResolved, r.on_resolved),
        (ConcernClosed, r.on_closed),
        (ConcernEscalated, r.on_escalated),
        (MeetingScheduled, r.on_meeting),
        (MeetingRescheduled, r.on_meeting),
        (MeetingCancelled, r.on_meeting),
        (MeetingReplied, r.on_reply),
        (ActionDueSoon, r.on_action),
        (ActionOverdue, r.on_action),
        (VisitScheduled, r.on_visit),
    ]


def subscriptions(topology: Topology) -> list[Subscription]:
    return subscriptions_of(build, topology)


class WorkspaceRuntime(ServiceRuntime):
    def __init__(self, settings: Settings, clock: Clock = utc_now,
                 workspace: WorkspaceSettings | None = None) -> None:
        super().__init__(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
        self.clock = clock
        self.workspace = workspace or WorkspaceSettings()
        self.read_model = ReadModel(clock)


def build(settings: Settings, clock: Clock = utc_now,
          workspace: WorkspaceSettings | None = None) -> WorkspaceRuntime:
    from services.workspace.http import add_pages

    runtime = WorkspaceRuntime(settings, clock, workspace)
    for event_cls, handler in handlers(runtime.read_model):
        runtime.on_event(event_cls, handler)
    add_pages(runtime)
    return runtime
