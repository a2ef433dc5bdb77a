"""quality-monitor: finds serious risks (and, later, trends) in accepted feedback.

Consumes: ``feedback.accepted.v1``.
Publishes: ``concern.raised.v1``, ``concern.updated.v1`` (through the outbox).
Stores: schema ``monitor`` (feedback, concerns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from services.quality_monitor import rules, store
from shared.events import Event, Evidence, FeedbackAccepted
from shared.outbox import Outbox
from shared.runtime import EventHandler, ServiceRuntime
from shared.settings import Settings
from shared.topology import Subscription, Topology

NAME = "quality_monitor"

async def on_feedback_accepted(conn: asyncpg.Connection, fb: FeedbackAccepted,
                               outbox: Outbox) -> None:
    """Record the feedback; raise (or add it to) a concern if it carries a serious risk."""
    await store.record_feedback(conn, fb)
    if (finding := rules.immediate_serious_risk(fb)) is not None:
        event = await store.raise_or_update(
            conn, fingerprint=rules.fingerprint(fb.provider.ods_code, finding.rule, finding.theme),
            provider=fb.provider, rule=finding.rule, theme=finding.theme,
            severity=finding.severity, reason=finding.reason, figures=finding.figures,
            evidence=[Evidence(feedback_id=fb.feedback_id, kind=fb.kind,
                               occurred_on=fb.occurred_on, matched=finding.matched)])
        if event is not None:
            await outbox.add(event)


# What this service does, in one table: event consumed -> handler.
HANDLERS: list[tuple[type[Event], EventHandler[Any]]] = [
    (FeedbackAccepted, on_feedback_accepted),
]


def subscriptions(topology: Topology) -> list[Subscription]:
    return [topology.event_subscription(NAME, cls.event_type) for cls, _ in HANDLERS]


def build(settings: Settings) -> ServiceRuntime:
    runtime = ServiceRuntime(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
    for event_cls, handler in HANDLERS:
        runtime.on_event(event_cls, handler)
    return runtime
