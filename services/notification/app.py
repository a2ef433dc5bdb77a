"""notification: records who must be told of each event, then delivers it.

Consumes: ``meeting.scheduled.v1``, ``feedback.rejected.v1``.
Publishes: ``notification.failed.v1`` (through the outbox).
Stores: schema ``notification`` (notifications, deliveries, rejections).
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg

from services.notification import store
from services.notification.channels import EmailChannel, SmtpChannel
from services.notification.dispatcher import Dispatcher
from services.notification.messages import meeting_invitation_email, meeting_subject
from shared.events import Event, FeedbackRejected, MeetingScheduled
from shared.outbox import Outbox
from shared.runtime import EventHandler, ServiceRuntime
from shared.settings import Settings
from shared.topology import Subscription, Topology

NAME = "notification"


class Notification:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_meeting_scheduled(self, conn: asyncpg.Connection, meeting: MeetingScheduled,
                                   outbox: Outbox) -> None:
        """Invite the commissioner's quality team and every attendee, one e-mail each."""
        assert outbox.cause is not None
        recipients: dict[str, None] = {self.settings.quality_team_email.lower(): None}
        for person in meeting.attendees:
            recipients.setdefault(person.email.lower(), None)
        for recipient in recipients:
            await store.record(
                conn, source_event_id=outbox.cause.id,
                event_type=meeting.event_type, channel="email", recipient=recipient,
                subject=meeting_subject(meeting), payload=meeting.model_dump(mode="json"))

    async def on_feedback_rejected(self, conn: asyncpg.Connection, rejected: FeedbackRejected,
                                   outbox: Outbox) -> None:
        """Keep the rejection for the feed's digest."""
        await store.record_rejection(conn, rejected.submission_id, rejected.feed_user,
                                     rejected.ods_code,
                                     [r.model_dump() for r in rejected.reasons])

    def render(self, row: asyncpg.Record) -> EmailMessage:
        if row["event_type"] == MeetingScheduled.event_type:
            return meeting_invitation_email(
                MeetingScheduled.model_validate(row["payload"]), sender=self.settings.mail_from,
                recipient=row["recipient"], message_id=row["message_id"])
        raise ValueError(f"no e-mail template for {row['event_type']}")


def handlers(n: Notification) -> list[tuple[type[Event], EventHandler[Any]]]:
    """What this service does, in one table: event consumed -> handler."""
    return [
        (MeetingScheduled, n.on_meeting_scheduled),
        (FeedbackRejected, n.on_feedback_rejected),
    ]


def subscriptions(topology: Topology) -> list[Subscription]:
    return [topology.event_subscription(NAME, cls.event_type)
            for cls in (MeetingScheduled, FeedbackRejected)]


def build(settings: Settings, channel: EmailChannel | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
    notification = Notification(settings)
    for event_cls, handler in handlers(notification):
        runtime.on_event(event_cls, handler)
    dispatcher = Dispatcher(runtime, channel or SmtpChannel(settings), notification.render)
    runtime.background(dispatcher.run)
    return runtime
