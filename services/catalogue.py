"""The services, by name: how to build each, and every subscription of the system."""

from __future__ import annotations

from collections.abc import Callable

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
    FeedbackAccepted,
    FeedbackAcceptedBatch,
    FeedbackRejected,
    MeetingCancelled,
    MeetingReplied,
    MeetingRescheduled,
    MeetingScheduled,
    MeetingSlotProposed,
    NotificationFailed,
    ReportPublished,
    VisitScheduled,
)
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.topology import Subscription, Topology

SERVICES = ("intake", "quality_monitor", "escalation", "notification", "workspace")

# The events each service publishes (its outbox refuses any other): the AsyncAPI documents
# are generated from this and from the subscriptions.
PUBLISHES: dict[str, tuple[type[Event], ...]] = {
    "intake": (FeedbackAccepted, FeedbackAcceptedBatch, FeedbackRejected),
    "quality_monitor": (ConcernRaised, ConcernUpdated, ConcernResolved, ReportPublished),
    "escalation": (MeetingScheduled, MeetingRescheduled, MeetingCancelled, ActionDueSoon,
                   ActionOverdue, ConcernEscalated, VisitScheduled, ConcernClosed,
                   MeetingSlotProposed),
    "notification": (NotificationFailed, MeetingReplied),
    # The workspace publishes nothing: its commands go to escalation's HTTP API.
    "workspace": (),
}

# Earlier versions of events a service no longer publishes, still its own: an outbox, a
# queue or a DLQ of before the upgrade may hold them, and consumers still take them.
RETIRED: dict[str, tuple[type[Event], ...]] = {
    "quality_monitor": (ConcernUpdatedV1,),  # v2 carries only the new evidence
}


def builder(name: str) -> Callable[[Settings], ServiceRuntime]:
    if name == "intake":
        from services.intake.app import build
    elif name == "quality_monitor":
        from services.quality_monitor.app import build
    elif name == "escalation":
        from services.escalation.app import build
    elif name == "notification":
        from services.notification.app import build
    elif name == "workspace":
        from services.workspace.app import build
    else:
        raise KeyError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    return build


def all_subscriptions(topology: Topology) -> list[Subscription]:
    """Every subscription of every service (the CLI declares them all at once)."""
    from services.escalation.app import subscriptions as escalation
    from services.intake.app import subscriptions as intake
    from services.notification.app import subscriptions as notification
    from services.quality_monitor.app import subscriptions as monitor
    from services.workspace.app import subscriptions as workspace

    return [*intake(topology), *monitor(topology), *escalation(topology), *notification(topology),
            *workspace(topology)]
