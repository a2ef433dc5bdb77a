"""notification: routes each event to the people who must hear of it, then delivers it.

Consumes: ``meeting.scheduled.v1``, ``meeting.rescheduled.v1``, ``meeting.cancelled.v1``,
``concern.raised.v1``, ``concern.updated.v2`` (and v1), ``concern.resolved.v1``,
``action.due_soon.v1``, ``action.overdue.v1``, ``concern.escalated.v1``,
``visit.scheduled.v1``, ``meeting.slot_proposed.v1``, ``feedback.rejected.v1``,
``report.published.v1`` (e-mailed with its PDF and XLSX attached).
Publishes: ``notification.failed.v1``, ``meeting.reply.v1`` (attendees' replies received by
the inbound SMTP endpoint; through the outbox).
Stores: schema ``notification`` (notifications, deliveries, alert_groups, group_alerts,
silences, rejections, replies).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.notification import http, store
from services.notification.channels import Channel, default_channels
from services.notification.config import load_routing
from services.notification.dispatcher import Dispatcher
from services.notification.flusher import GroupFlusher
from services.notification.grouping import flush_time_on_change, group_key
from services.notification.inbound import InboundSmtp
from services.notification.messages import event_subject
from services.notification.routing import (
    Delivery,
    RoutingConfig,
    alert_key,
    alert_status,
    event_labels,
    route_event,
)
from services.notification.silences import Silence, muting
from shared.clock import Clock, utc_now
from shared.events import (
    ActionDueSoon,
    ActionOverdue,
    ConcernEscalated,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    ConcernUpdatedV1,
    Event,
    FeedbackRejected,
    MeetingCancelled,
    MeetingRescheduled,
    MeetingScheduled,
    MeetingSlotProposed,
    ReportPublished,
    VisitScheduled,
)
from shared.outbox import Outbox
from shared.runtime import EventHandler, ServiceRuntime, subscriptions_of
from shared.settings import Settings
from shared.topology import Subscription, Topology

NAME = "notification"

# Every event routed by the routing configuration (routing.yaml).
ROUTED: tuple[type[Event], ...] = (
    MeetingScheduled, MeetingRescheduled, MeetingCancelled,
    ConcernRaised, ConcernUpdated, ConcernUpdatedV1, ConcernResolved,
    ActionDueSoon, ActionOverdue, ConcernEscalated, VisitScheduled, MeetingSlotProposed,
    ReportPublished,
)




class Notification:
    """The handlers, with the routing configuration and a clock."""

    def __init__(self, settings: Settings, routing: RoutingConfig, clock: Clock = utc_now):
        self.settings = settings
        self.routing = routing
        self.clock = clock

    async def notify(self, conn: asyncpg.Connection, event: Event, outbox: Outbox) -> None:
        """Route the event: record a notification for each recipient told at once (or a
        suppressed one under a silence), and add it to its groups for the others."""
        assert outbox.cause is not None
        now = self.clock()
        labels = event_labels(event)
        deliveries = route_event(self.routing, event, labels, self.settings)
        silences = [Silence.from_row(r) for r in await store.active_silences(conn, now)]
        payload = event.model_dump(mode="json")
        groups: set[uuid.UUID] = set()
        for d in sorted(deliveries, key=lambda d: (d.route.name, d.channel, d.recipient)):
            if d.route.delivery == "immediate":
                silence = muting(silences, {**labels, "route": d.route.name}, now) \
                    if d.route.silenceable else None
                await store.record(
                    conn, source_event_id=outbox.cause.id, event_type=event.event_type,
                    channel=d.channel, recipient=d.recipient, subject=event_subject(event),
                    payload=payload, route=d.route.name,
                    silence_id=silence.silence_id if silence else None)
            else:
                groups.add(await self._add_to_group(conn, d, event, labels, payload, now))
        await self._update_other_groups(conn, event, payload, groups, now)

    async def _add_to_group(self, conn: asyncpg.Connection, d: Delivery, event: Event,
                            labels: dict[str, str], payload: dict[str, Any],
                            now: datetime) -> uuid.UUID:
        timing = self.routing.timing_of(d.route)
        group_labels = {k: labels[k] for k in timing.group_by if k in labels}
        if "provider" in group_labels and "provider_name" in labels:
            group_labels["provider_name"] = labels["provider_name"]
        group = await store.open_group(
            conn, group_key=group_key(d.route.name, d.channel, d.recipient, timing.group_by,
                                      labels),
            route=d.route.name, delivery=d.route.delivery, channel=d.channel,
            recipient=d.recipient, labels=group_labels, now=now)
        await store.put_alert(conn, group["group_id"], alert_key=alert_key(event),
                              status=alert_status(event), event_type=event.event_type,
                              payload=payload, now=now)
        await store.set_next_flush(conn, group["group_id"], flush_time_on_change(
            timing, d.route.delivery == "digest", now, group["next_flush_at"],
            group["last_flushed_at"]))
        return group["group_id"]

    async def _update_other_groups(self, conn: asyncpg.Connection, event: Event,
                                   payload: dict[str, Any], handled: set[uuid.UUID],
                                   now: datetime) -> None:
        """Groups that hold this alert but no longer route it: a resolution still reaches
        them (their recipients were told it was open); otherwise the alert leaves them (its
        severity now routes it elsewhere)."""
        key = alert_key(event)
        for group in await store.groups_holding(conn, key):
            if group["group_id"] in handled:
                continue
            if alert_status(event) == "resolved":
                await store.put_alert(conn, group["group_id"], alert_key=key,
                                      status="resolved", event_type=event.event_type,
                                      payload=payload, now=now)
                route = self.routing.route_named(group["route"])
                timing = self.routing.timing_of(route) if route else self.routing.defaults
                await store.set_next_flush(conn, group["group_id"], flush_time_on_change(
                    timing, group["delivery"] == "digest", now, group["next_flush_at"],
                    group["last_flushed_at"]))
            else:
                await store.drop_alert(conn, group["group_id"], key)

    async def on_feedback_rejected(self, conn: asyncpg.Connection, rejected: FeedbackRejected,
                                   outbox: Outbox) -> None:
        """Keep the rejection for the feed's digest (and route it, if a route asks)."""
        await store.record_rejection(conn, rejected.submission_id, rejected.feed_user,
                                     rejected.ods_code,
                                     [r.model_dump() for r in rejected.reasons])
        await self.notify(conn, rejected, outbox)


def handlers(n: Notification) -> list[tuple[type[Event], EventHandler[Any]]]:
    """What this service does, in one table: event consumed -> handler."""
    return [
        *((event_cls, n.notify) for event_cls in ROUTED),
        (FeedbackRejected, n.on_feedback_rejected),
    ]


def subscriptions(topology: Topology) -> list[Subscription]:
    return subscriptions_of(build, topology)


def build(settings: Settings, channels: Mapping[str, Channel] | None = None,
          clock: Clock = utc_now, routing: RoutingConfig | None = None) -> ServiceRuntime:
    """The notification service: handlers, the group timers and the dispatcher."""
    runtime = ServiceRuntime(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
    routing = routing or load_routing(settings.notification_routing_file, settings)
    notification = Notification(settings, routing, clock)
    for event_cls, handler in handlers(notification):
        runtime.on_event(event_cls, handler)
    runtime.background(GroupFlusher(runtime, routing, clock).run)
    dispatcher = Dispatcher(runtime, channels or default_channels(settings, routing.webhooks),
                            concurrency=settings.notification_send_concurrency)
    runtime.background(dispatcher.run)
    by_status = runtime.metrics.gauge(
        "carewatch_notifications", "Notifications by status (pending, sent, failed,"
        " suppressed).", ["status"])

    async def refresh(conn: asyncpg.Connection) -> None:
        counts = await store.count_by_status(conn)
        for status in ("pending", "sent", "failed", "suppressed"):
            by_status.labels(NAME, status).set(counts.get(status, 0))

    runtime.gauge_refreshers.append(refresh)
    http.add_routes(runtime)
    if settings.inbound_smtp_port is not None:
        inbound = InboundSmtp(runtime, settings.inbound_smtp_host, settings.inbound_smtp_port,
                              clock)
        runtime.background(inbound.run)
        runtime.inbound_smtp = inbound  # type: ignore[attr-defined]  # tests read its port
    return runtime
