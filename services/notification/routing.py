"""Routing: which events reach whom, on which channel, at once or grouped (pure).

The configuration is YAML (``routing.yaml`` beside this file, or the file named by
``CAREWATCH_NOTIFICATION_ROUTING_FILE``), read by config.py's ``load_routing``. Routes are
tried in order, in the manner of Prometheus Alertmanager: the first route whose matchers all
match applies, and later routes are tried too only while the matching routes say
``continue: true``. Each route names its
recipients (see ``RECIPIENT_KINDS``) and a delivery: ``immediate``, ``grouped`` (group wait,
group interval, repeat interval) or ``digest`` (once a day at ``digest_at``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import time, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from shared.events import (
    ActionDueSoon,
    ActionOverdue,
    ConcernResolved,
    Event,
    FeedbackRejected,
    ReportPublished,
)
from shared.settings import Settings

# Recipients a route may name besides ``email:<address>``, ``webhook:<name>`` and the
# groups under ``people:`` in the configuration.
RECIPIENT_KINDS = {
    "quality_team": "the commissioner's quality team (CAREWATCH_QUALITY_TEAM_EMAIL)",
    "quality_lead": "the commissioner's quality lead (CAREWATCH_QUALITY_LEAD_EMAIL)",
    "lay_member": "the lay member (CAREWATCH_LAY_MEMBER_EMAIL)",
    "provider_quality_contact": "the quality contact of the event's provider",
    "attendees": "the attendees the event names (meetings, risk summits, visits)",
    "qsg_members": "the Quality Surveillance Group (CAREWATCH_QSG_*_EMAIL)",
    "head_of_quality": "the head of quality a meeting's breach is reported to (from the event)",
}
_QSG_SETTINGS = ("qsg_local_authority_email", "qsg_cqc_email", "qsg_nhs_england_email")
# The labels a route or a silence can match, and a group can be grouped by.
LABELS = ("event", "severity", "provider", "rule", "theme", "level", "visit_kind", "breach",
          "route", "report")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> timedelta:
    """``30s``, ``5m``, ``4h``, ``1d``, ``250ms`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 30s, 5m, 4h, 1d)")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


class Timing(BaseModel):
    """How a grouped or digest route batches its alerts (Alertmanager's terms)."""

    model_config = ConfigDict(frozen=True)

    group_by: tuple[str, ...] = ("provider",)
    group_wait: timedelta = timedelta(seconds=30)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta | None = timedelta(hours=24)
    digest_at: time = time(8, 0)
    timezone: str = "Europe/London"

    @field_validator("group_wait", "group_interval", "repeat_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @field_validator("group_by")
    @classmethod
    def _known_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - set(LABELS)
        if unknown:
            raise ValueError(f"cannot group by {sorted(unknown)}; labels are {list(LABELS)}")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class WebhookTarget(BaseModel):
    """A per-team webhook: where to post, how to shape the JSON, and the signing secret."""

    model_config = ConfigDict(frozen=True)

    url: str
    format: Literal["slack", "teams"] = "slack"
    secret: str | None = None  # or from CAREWATCH_NOTIFICATION_WEBHOOK_SECRETS


class Route(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: str
    match: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    to: tuple[str, ...]
    delivery: Literal["immediate", "grouped", "digest"] = "immediate"
    continue_: bool = Field(default=False, alias="continue")
    # Meeting invitations should not be muted by a silence meant for alerts.
    silenceable: bool = True
    # Overrides of the configuration's ``defaults`` for this route.
    timing: dict[str, Any] = Field(default_factory=dict)

    @field_validator("match", mode="before")
    @classmethod
    def _lists(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        return {k: [v] if isinstance(v, str) else v for k, v in (value or {}).items()}

    @field_validator("match")
    @classmethod
    def _known(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        unknown = set(value) - set(LABELS)
        if unknown:
            raise ValueError(f"cannot match on {sorted(unknown)}; labels are {list(LABELS)}")
        return value

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(key) is not None
                   and any(fnmatchcase(labels[key], pattern) for pattern in patterns)
                   for key, patterns in self.match.items())


class RoutingConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    defaults: Timing = Timing()
    people: dict[str, tuple[EmailStr, ...]] = Field(default_factory=dict)
    webhooks: dict[str, WebhookTarget] = Field(default_factory=dict)
    routes: tuple[Route, ...]

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        names = [r.name for r in self.routes]
        if len(names) != len(set(names)):
            raise ValueError(f"route names must be unique: {names}")
        clash = set(self.people) & set(RECIPIENT_KINDS)
        if clash:
            raise ValueError(f"people groups {sorted(clash)} shadow built-in recipients")
        for route in self.routes:
            for token in route.to:
                kind, _, value = token.partition(":")
                if kind == "webhook" and value not in self.webhooks:
                    raise ValueError(f"route {route.name!r} names unknown webhook {value!r}")
                if kind == "email" and "@" not in value:
                    raise ValueError(f"route {route.name!r}: bad address {token!r}")
                if not value and token not in RECIPIENT_KINDS and token not in self.people:
                    raise ValueError(f"route {route.name!r}: unknown recipient {token!r}; use"
                                     f" {sorted(RECIPIENT_KINDS)}, a people group,"
                                     " email:<address> or webhook:<name>")
            self.timing_of(route)  # validates the overrides
        return self

    def timing_of(self, route: Route) -> Timing:
        return Timing.model_validate({**self.defaults.model_dump(), **route.timing})

    def route_named(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)


# -- events as labels -----------------------------------------------------------------------
def event_labels(event: Event) -> dict[str, str]:
    """The labels routes and silences match on: event type, severity, provider (ODS code),
    rule, theme, escalation level, visit kind, where the event has them."""
    labels = {"event": event.event_type}
    provider = getattr(event, "provider", None)
    if provider is not None:
        labels["provider"] = provider.ods_code
        labels["provider_name"] = provider.name
    elif isinstance(event, FeedbackRejected) and event.ods_code:
        labels["provider"] = event.ods_code
    for name in ("severity", "rule", "theme", "level", "visit_kind"):
        value = getattr(event, name, None)
        if value is not None:
            labels[name] = str(value)
    if isinstance(event, ReportPublished):
        labels["report"] = event.kind
    if isinstance(getattr(event, "breach", None), bool):
        labels["breach"] = "true" if event.breach else "false"  # type: ignore[attr-defined]
    return labels


def alert_key(event: Event) -> str:
    """What a grouped alert is about: the same key in a group is de-duplicated (a concern's
    updates and resolution replace its earlier state)."""
    concern_id = getattr(event, "concern_id", None)
    if isinstance(event, ActionDueSoon | ActionOverdue):
        return f"action:{event.action.action_id}"
    if concern_id is not None and event.event_type.startswith("concern."):
        return f"concern:{concern_id}"
    subject = event.subject()
    return f"{event.event_type}:{subject}" if subject else f"event:{uuid.uuid4()}"


def alert_status(event: Event) -> Literal["firing", "resolved"]:
    return "resolved" if isinstance(event, ConcernResolved) else "firing"


# -- recipients -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """One recipient on one channel, by one route."""

    route: Route
    channel: str  # "email" or "webhook"
    recipient: str  # an address, or a webhook's name


def resolve_recipient(token: str, event: Event, config: RoutingConfig,
                      settings: Settings) -> list[tuple[str, str]]:
    """(channel, recipient) pairs a route's recipient token stands for, for this event."""
    kind, _, value = token.partition(":")
    if kind == "email" and value:
        return [("email", value.lower())]
    if kind == "webhook" and value:
        return [("webhook", value)]
    addresses: list[str] = []
    if token == "quality_team":
        addresses = [settings.quality_team_email]
    elif token == "quality_lead":
        addresses = [settings.quality_lead_email]
    elif token == "lay_member":
        addresses = [settings.lay_member_email]
    elif token == "provider_quality_contact":
        provider = getattr(event, "provider", None)
        addresses = [provider.quality_contact_email] if provider is not None else []
    elif token == "qsg_members":
        addresses = [a for name in _QSG_SETTINGS if (a := getattr(settings, name, None))]
    elif token == "head_of_quality":
        head = getattr(event, "head_of_quality", None)
        addresses = [head.email] if head is not None else []
    elif token == "attendees":
        addresses = [a.email for a in getattr(event, "attendees", None) or []]
    elif token in config.people:
        addresses = list(config.people[token])
    return [("email", a.lower()) for a in addresses]


def route_event(config: RoutingConfig, event: Event, labels: dict[str, str],
                settings: Settings) -> list[Delivery]:
    """Every (channel, recipient) the event goes to, once each, by the first route that
    names it."""
    deliveries: dict[tuple[str, str], Delivery] = {}
    for route in config.routes:
        if not route.matches(labels):
            continue
        for token in route.to:
            for channel, recipient in resolve_recipient(token, event, config, settings):
                deliveries.setdefault((channel, recipient), Delivery(route, channel, recipient))
        if not route.continue_:
            break
    return list(deliveries.values())
