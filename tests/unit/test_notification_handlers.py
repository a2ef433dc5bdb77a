"""notification's handlers (services/notification/app.py ``Notification``) reached through a
fake store and outbox: route -> record, group or suppress -> nothing published, without a
database or a broker. The real-broker tests (tests/integration/test_notification*.py) stay."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notification import app as notification_app
from services.notification.app import Notification
from services.notification.config import load_routing
from shared.events import (
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    FeedbackRejected,
    RejectionReason,
    Severity,
)
from shared.settings import Settings
from tests.unit.builders import meeting, provider
from tests.unit.fakes import FakeOutbox

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SETTINGS = Settings(quality_team_email="team@icb.example", quality_lead_email="lead@icb.example",
                    lay_member_email="lay@icb.example")


@dataclass
class FakeStore:
    """The queries notification's handlers use, over lists and dicts."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # by group_key
    alerts: dict[tuple[uuid.UUID, str], dict[str, Any]] = field(default_factory=dict)
    silences: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)

    async def active_silences(self, conn: object, now: datetime) -> list[dict[str, Any]]:
        return [s for s in self.silences if s["starts_at"] <= now < s["ends_at"]]

    async def record(self, conn: object, **fields: Any) -> None:
        key = (fields["source_event_id"], fields["recipient"], fields["channel"])
        if all((n["source_event_id"], n["recipient"], n["channel"]) != key
               for n in self.notifications):  # the table's unique key
            self.notifications.append(fields)

    async def open_group(self, conn: object, *, group_key: str, route: str, delivery: str,
                         channel: str, recipient: str, labels: dict[str, str],
                         now: datetime) -> dict[str, Any]:
        group = self.groups.setdefault(group_key, {
            "group_id": uuid.uuid4(), "group_key": group_key, "route": route,
            "delivery": delivery, "channel": channel, "recipient": recipient,
            "next_flush_at": None, "last_flushed_at": None})
        group["labels"] = labels
        return group

    async def put_alert(self, conn: object, group_id: uuid.UUID, *, alert_key: str,
                        status: str, event_type: str, payload: dict[str, Any],
                        now: datetime) -> None:
        self.alerts[(group_id, alert_key)] = {"status": status, "event_type": event_type}

    async def set_next_flush(self, conn: object, group_id: uuid.UUID,
                             next_flush_at: datetime | None) -> None:
        self.group_by_id(group_id)["next_flush_at"] = next_flush_at

    async def groups_holding(self, conn: object, alert_key: str) -> list[dict[str, Any]]:
        held = {g for g, key in self.alerts if key == alert_key}
        return sorted((g for g in self.groups.values() if g["group_id"] in held),
                      key=lambda g: g["group_key"])

    async def drop_alert(self, conn: object, group_id: uuid.UUID, alert_key: str) -> None:
        self.alerts.pop((group_id, alert_key), None)

    async def record_rejection(self, conn: object, submission_id: uuid.UUID, feed_user: str,
                               ods_code: str | None, reasons: list[dict[str, Any]]) -> None:
        self.rejections.append({"submission_id": submission_id, "feed_user": feed_user,
                                "ods_code": ods_code, "reasons": reasons})

    def group_by_id(self, group_id: uuid.UUID) -> dict[str, Any]:
        return next(g for g in self.groups.values() if g["group_id"] == group_id)

    def alert_statuses(self, route: str) -> dict[str, str]:
        ids = {g["group_id"] for g in self.groups.values() if g["route"] == route}
        return {key: a["status"] for (g, key), a in self.alerts.items() if g in ids}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    store = FakeStore()
    monkeypatch.setattr(notification_app, "store", store)
    return store


def handlers(now: datetime = NOW) -> Notification:
    return Notification(SETTINGS, load_routing(None, SETTINGS), clock=lambda: now)


def concern(severity: Severity, cls: type[ConcernRaised] = ConcernRaised,
            concern_id: uuid.UUID | None = None, **extra: Any) -> ConcernRaised:
    return cls(concern_id=concern_id or uuid.uuid4(), fingerprint="RJ1:cluster:discharge",
               provider=provider(), rule="cluster", theme="Discharge", severity=severity,
               reason="3 alerts in 30 days", evidence=[], raised_at=NOW, **extra)


async def notify(n: Notification, event: Any) -> FakeOutbox:
    outbox = FakeOutbox()
    await n.notify(object(), event, outbox)  # type: ignore[arg-type]
    return outbox


async def test_a_meeting_invites_the_quality_team_and_every_attendee_at_once(
        fake: FakeStore) -> None:
    outbox = await notify(handlers(), meeting())
    told = {(n["recipient"], n["route"]) for n in fake.notifications}
    assert told == {("team@icb.example", "meetings"), ("q@provider.example", "meetings"),
                    ("ian@icb.example", "meetings")}
    assert {n["source_event_id"] for n in fake.notifications} == {outbox.handled.id}
    assert all(n["event_type"] == "meeting.scheduled.v1" and n["silence_id"] is None
               for n in fake.notifications)
    assert not fake.groups and not outbox.events


async def test_the_same_event_twice_records_each_recipient_once(fake: FakeStore) -> None:
    n, event = handlers(), meeting()
    outbox = FakeOutbox()
    await n.notify(object(), event, outbox)  # type: ignore[arg-type]
    await n.notify(object(), event, outbox)  # type: ignore[arg-type]
    assert len(fake.notifications) == 3


async def test_a_serious_concern_goes_at_once_and_a_moderate_one_waits_in_its_group(
        fake: FakeStore) -> None:
    await notify(handlers(), concern(Severity.SERIOUS))
    assert [(n["recipient"], n["route"]) for n in fake.notifications] == [
        ("team@icb.example", "serious-concerns")]
    assert not fake.groups

    moderate = concern(Severity.MODERATE)
    await notify(handlers(), moderate)
    assert len(fake.notifications) == 1  # nothing more at once
    [group] = fake.groups.values()
    assert group["route"] == "moderate-concerns" and group["recipient"] == "team@icb.example"
    assert group["labels"]["provider"] == "RJ1"
    assert group["next_flush_at"] == NOW + timedelta(seconds=30)  # routing.yaml's group_wait
    assert fake.alert_statuses("moderate-concerns") == {f"concern:{moderate.concern_id}": "firing"}


async def test_a_later_change_to_a_waiting_group_keeps_its_earlier_flush(
        fake: FakeStore) -> None:
    await notify(handlers(), concern(Severity.MODERATE))
    await notify(handlers(NOW + timedelta(seconds=20)), concern(Severity.MODERATE))
    [group] = fake.groups.values()
    assert group["next_flush_at"] == NOW + timedelta(seconds=30)
    assert len(fake.alert_statuses("moderate-concerns")) == 2


async def test_a_concern_that_becomes_serious_leaves_its_moderate_group(
        fake: FakeStore) -> None:
    moderate = concern(Severity.MODERATE)
    await notify(handlers(), moderate)
    raised = concern(Severity.SERIOUS, ConcernUpdated, concern_id=moderate.concern_id,
                     previous_severity=Severity.MODERATE, evidence_count=2)
    await notify(handlers(), raised)
    assert fake.alert_statuses("moderate-concerns") == {}
    assert [n["route"] for n in fake.notifications] == ["serious-concerns"]


async def test_a_resolution_still_reaches_the_group_that_was_told_it_was_open(
        fake: FakeStore) -> None:
    moderate = concern(Severity.MODERATE)
    await notify(handlers(), moderate)
    [group] = fake.groups.values()
    group["last_flushed_at"], group["next_flush_at"] = NOW, None  # the group has been sent
    later = NOW + timedelta(minutes=1)
    resolved = ConcernResolved(
        concern_id=moderate.concern_id, fingerprint=moderate.fingerprint,
        provider=moderate.provider, rule=moderate.rule, theme=moderate.theme,
        severity=Severity.MODERATE, resolution="signal returned to common cause",
        resolved_at=later)
    await notify(handlers(later), resolved)
    assert fake.alert_statuses("moderate-concerns") == {f"concern:{moderate.concern_id}": "resolved"}
    # No more often than group_interval (5 minutes) after the last send.
    assert group["next_flush_at"] == NOW + timedelta(minutes=5)


async def test_a_silence_records_the_notification_as_suppressed(fake: FakeStore) -> None:
    silence_id = uuid.uuid4()
    fake.silences.append({"silence_id": silence_id, "matchers": {"provider": "RJ1"},
                          "starts_at": NOW - timedelta(hours=1),
                          "ends_at": NOW + timedelta(hours=1), "created_by": "user:lead",
                          "reason": "known issue", "expired_at": None})
    await notify(handlers(), concern(Severity.SERIOUS))
    [n] = fake.notifications
    assert n["silence_id"] == silence_id
    # Meeting invitations are never silenced.
    await notify(handlers(), meeting())
    assert all(n["silence_id"] is None for n in fake.notifications[1:])
    # A silence that has ended mutes nothing.
    fake.silences[0]["ends_at"] = NOW
    fake.notifications.clear()
    await notify(handlers(), concern(Severity.SERIOUS))
    assert [n["silence_id"] for n in fake.notifications] == [None]


async def test_a_rejection_is_kept_for_the_feed_s_digest(fake: FakeStore) -> None:
    rejected = FeedbackRejected(
        submission_id=uuid.uuid4(), feed_user="feed-rj1", ods_code="RJ1",
        reasons=[RejectionReason(loc="occurred_on", msg="a date in the future",
                                 type="future_date")])
    await handlers().on_feedback_rejected(object(), rejected, FakeOutbox())  # type: ignore[arg-type]
    [kept] = fake.rejections
    assert kept["feed_user"] == "feed-rj1" and kept["ods_code"] == "RJ1"
    assert kept["reasons"] == [{"loc": "occurred_on", "msg": "a date in the future",
                                "type": "future_date"}]
