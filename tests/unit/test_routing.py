"""Routing configuration (services/notification/routing.py, read by config.py): who hears of
what, and how."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.notification.config import load_routing
from services.notification.routing import (
    alert_key,
    alert_status,
    event_labels,
    parse_duration,
    route_event,
)
from shared.events import (
    ActionOverdue,
    Attendee,
    ConcernEscalated,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    ConcernUpdatedV1,
    MeetingScheduled,
    ProviderRef,
    RemedialAction,
    Severity,
)
from shared.settings import Settings

SETTINGS = Settings(quality_team_email="team@icb.example", quality_lead_email="lead@icb.example",
                    lay_member_email="lay@icb.example")
PROVIDER = ProviderRef(ods_code="RX1", name="Example Trust", provider_type="acute",
                       quality_contact_email="Quality@Provider.example")
CONCERN_ID = uuid.UUID("00000000-0000-4000-8000-0000000000c1")


def concern(severity: str = "moderate", cls: type[ConcernRaised] = ConcernRaised,
            **extra: Any) -> ConcernRaised:
    return cls(concern_id=CONCERN_ID, fingerprint="fp", provider=PROVIDER, rule="cluster",
               theme="Discharge", severity=Severity(severity), reason="3 alerts in 30 days",
               evidence=[], raised_at=datetime(2026, 11, 20, tzinfo=UTC), **extra)


def meeting() -> MeetingScheduled:
    start = datetime(2026, 11, 24, 9, tzinfo=UTC)
    return MeetingScheduled(
        meeting_id=uuid.uuid4(), concern_id=CONCERN_ID, provider=PROVIDER, title="Remedial",
        starts_at=start, ends_at=start + timedelta(hours=1), timezone="Europe/London",
        location="Teams", deadline=start, breach=False, severity=Severity.SERIOUS,
        agenda=[], remedial_actions=[],
        organizer=Attendee(role="organizer", name="ICB", email="team@icb.example"),
        attendees=[Attendee(role="provider", name="P", email="quality@provider.example"),
                   Attendee(role="lead", name="L", email="Lead@icb.example")])


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    return path


def recipients(config: Any, event: Any) -> list[tuple[str, str, str, str]]:
    return [(d.route.name, d.route.delivery, d.channel, d.recipient)
            for d in route_event(config, event, event_labels(event), SETTINGS)]


# -- the default configuration ----------------------------------------------------------------
DEFAULT = load_routing(None, SETTINGS)


def test_default_meeting_goes_at_once_to_the_team_and_each_attendee_once() -> None:
    assert recipients(DEFAULT, meeting()) == [
        ("meetings", "immediate", "email", "team@icb.example"),
        ("meetings", "immediate", "email", "quality@provider.example"),
        ("meetings", "immediate", "email", "lead@icb.example"),
    ]
    assert not DEFAULT.route_named("meetings").silenceable  # type: ignore[union-attr]


@pytest.mark.parametrize("severity, route, delivery", [
    ("serious", "serious-concerns", "immediate"),
    ("high", "serious-concerns", "immediate"),
    ("moderate", "moderate-concerns", "grouped"),
    ("low", "low-concerns", "digest"),
])
def test_default_concerns_by_severity(severity: str, route: str, delivery: str) -> None:
    for event in (concern(severity),
                  concern(severity, ConcernUpdated, previous_severity=Severity.LOW,
                          evidence_count=3),
                  concern(severity, ConcernUpdatedV1, previous_severity=Severity.LOW)):
        assert recipients(DEFAULT, event) == [(route, delivery, "email", "team@icb.example")]


def test_default_resolution_follows_the_concern() -> None:
    resolved = ConcernResolved(concern_id=CONCERN_ID, fingerprint="fp", provider=PROVIDER,
                               rule="cluster", theme="Discharge", severity=Severity.MODERATE,
                               resolution="back to common cause",
                               resolved_at=datetime(2026, 11, 21, tzinfo=UTC))
    assert recipients(DEFAULT, resolved) == [
        ("moderate-concerns", "grouped", "email", "team@icb.example")]
    assert alert_status(resolved) == "resolved"
    assert alert_key(resolved) == alert_key(concern()) == f"concern:{CONCERN_ID}"


def test_default_overdue_action_tells_the_provider_and_the_lead() -> None:
    overdue = ActionOverdue(concern_id=CONCERN_ID, provider=PROVIDER, days_overdue=3,
                            action=RemedialAction(action_id=uuid.uuid4(), description="x",
                                                  owner="o", due_on=date(2026, 11, 1)))
    assert [r[3] for r in recipients(DEFAULT, overdue)] == [
        "quality@provider.example", "lead@icb.example"]
    assert alert_key(overdue) == f"action:{overdue.action.action_id}"


def test_risk_summit_reaches_the_qsg_and_enhanced_surveillance_does_not() -> None:
    summit = ConcernEscalated(concern_id=CONCERN_ID, provider=PROVIDER, level="risk_summit",
                              reason="actions overdue", history=[])
    told = {r[3] for r in recipients(DEFAULT, summit)}
    assert {"lead@icb.example", "quality@provider.example"} <= told
    assert SETTINGS.qsg_cqc_email.lower() in told
    enhanced = summit.model_copy(update={"level": "enhanced_surveillance"})
    assert [r[0] for r in recipients(DEFAULT, enhanced)] == ["escalations", "escalations"]


def test_rejections_are_not_routed_by_default() -> None:
    from shared.events import FeedbackRejected

    rejected = FeedbackRejected(submission_id=uuid.uuid4(), feed_user="feed", ods_code="RX1",
                                reasons=[])
    assert recipients(DEFAULT, rejected) == []


# -- matching, order and continue ------------------------------------------------------------
CONFIG = """
defaults: {group_wait: 10s, group_interval: 2m, repeat_interval: null, digest_at: "07:30"}
people:
  infection-control: [ipc.lead@icb.example, IPC.Nurse@icb.example]
webhooks:
  rx-team: {url: "http://127.0.0.1:1/hook", secret: s3cret, format: teams}
routes:
  - name: rx-webhook
    match: {provider: [RX*]}
    to: [webhook:rx-team]
    continue: true
  - name: serious
    match: {event: ["concern.*"], severity: serious}
    to: [quality_team, provider_quality_contact]
  - name: ipc
    match: {theme: [Infection*]}
    to: [infection-control]
    delivery: grouped
    timing: {group_by: [provider, theme], group_wait: 1m}
  - name: everything-else
    to: [quality_lead]
    delivery: digest
"""


def test_first_match_wins_and_continue_goes_on(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, CONFIG), SETTINGS)
    assert recipients(config, concern("serious")) == [
        ("rx-webhook", "immediate", "webhook", "rx-team"),
        ("serious", "immediate", "email", "team@icb.example"),
        ("serious", "immediate", "email", "quality@provider.example"),
    ]
    infection = concern("moderate").model_copy(update={"theme": "Infection control"})
    assert recipients(config, infection)[1:] == [
        ("ipc", "grouped", "email", "ipc.lead@icb.example"),
        ("ipc", "grouped", "email", "ipc.nurse@icb.example"),
    ]
    other = concern("low").model_copy(update={"provider": PROVIDER.model_copy(
        update={"ods_code": "AB1"})})
    assert recipients(config, other) == [
        ("everything-else", "digest", "email", "lead@icb.example")]


def test_route_timing_overrides_the_defaults(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, CONFIG), SETTINGS)
    ipc = config.timing_of(config.route_named("ipc"))  # type: ignore[arg-type]
    assert ipc.group_by == ("provider", "theme")
    assert ipc.group_wait == timedelta(minutes=1)
    assert ipc.group_interval == timedelta(minutes=2)
    assert ipc.repeat_interval is None
    assert ipc.digest_at == time(7, 30)


def test_secrets_from_settings_override_the_file(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"notification_webhook_secrets": {"rx-team": "env"}})
    assert load_routing(write(tmp_path, CONFIG), settings).webhooks["rx-team"].secret == "env"


@pytest.mark.parametrize("mutation, message", [
    (("secret: s3cret, ", ""), "have no secret"),
    (("to: [webhook:rx-team]", "to: [webhook:nobody]"), "unknown webhook"),
    (("to: [quality_lead]", "to: [the_board]"), "unknown recipient"),
    (("match: {provider: [RX*]}", "match: {postcode: [N1]}"), "cannot match on"),
    (("- name: ipc", "- name: serious"), "unique"),
    (("group_wait: 1m", "group_wait: soon"), "not a duration"),
    (("group_by: [provider, theme]", "group_by: [colour]"), "cannot group by"),
])
def test_bad_configuration_is_refused_with_a_reason(tmp_path: Path, mutation: tuple[str, str],
                                                     message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_routing(write(tmp_path, CONFIG.replace(*mutation)), SETTINGS)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_routing(tmp_path / "nope.yaml", SETTINGS)


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("250ms", 0.25), (45, 45),
    ("1.5h", 5400)])
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_labels_of_events() -> None:
    assert event_labels(concern("high")) == {
        "event": "concern.raised.v1", "provider": "RX1", "provider_name": "Example Trust",
        "severity": "high", "rule": "cluster", "theme": "Discharge"}
