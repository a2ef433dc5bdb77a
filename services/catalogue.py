"""The four services, by name: how to build each, and every subscription of the system."""

from __future__ import annotations

from collections.abc import Callable

from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.topology import Subscription, Topology

SERVICES = ("intake", "quality_monitor", "escalation", "notification")


def builder(name: str) -> Callable[[Settings], ServiceRuntime]:
    if name == "intake":
        from services.intake.app import build
    elif name == "quality_monitor":
        from services.quality_monitor.app import build
    elif name == "escalation":
        from services.escalation.app import build
    elif name == "notification":
        from services.notification.app import build
    else:
        raise KeyError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    return build


def all_subscriptions(topology: Topology) -> list[Subscription]:
    """Every subscription of every service (the CLI declares them all at once)."""
    from services.escalation.app import subscriptions as escalation
    from services.intake.app import subscriptions as intake
    from services.notification.app import subscriptions as notification
    from services.quality_monitor.app import subscriptions as monitor

    return [*intake(topology), *monitor(topology), *escalation(topology), *notification(topology)]
