"""The metrics every service exports: a Prometheus registry of its own per runtime.

Counted by the consumer (shared/consuming.py), the outbox's publisher (shared/outbox.py) and
a service's own code; read by the operator's view (shared/operations.py) and served at
``/metrics`` by the HTTP surface (shared/http.py). It imports none of them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The metrics every service exports; a registry of its own per runtime."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "carewatch_messages_total", "Messages handled, by queue and outcome"
            " (handled, duplicate, rejected, failed).",
            ["service", "queue", "outcome"], registry=self.registry)
        self.handler_seconds = Histogram(
            "carewatch_handler_seconds", "Time to handle one message, commit included.",
            ["service", "queue"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.published = Counter(
            "carewatch_events_published_total", "Events published from the outbox, by type.",
            ["service", "event_type"], registry=self.registry)
        self.outbox_backlog = Gauge(
            "carewatch_outbox_backlog", "Events committed but not yet published.",
            ["service"], registry=self.registry)
        self.outbox_age = Gauge(
            "carewatch_outbox_oldest_seconds", "Age of the oldest unpublished event.",
            ["service"], registry=self.registry)
        self.dlq_depth = Gauge(
            "carewatch_dead_letter_messages", "Messages in each dead-letter queue.",
            ["service", "queue"], registry=self.registry)
        self.service = service

    def gauge(self, name: str, documentation: str, labels: list[str]) -> Gauge:
        """A service-specific gauge (concerns open by severity, notifications pending...)."""
        return Gauge(name, documentation, ["service", *labels], registry=self.registry)

    def counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        """A service-specific counter (the public feedback page's posts by outcome...)."""
        return Counter(name, documentation, ["service", *labels], registry=self.registry)
