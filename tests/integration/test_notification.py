"""notification against the real broker, database, an SMTP server (aiosmtpd) and an HTTP
webhook receiver: routing, invitations, grouping, digests, retries, failures, silences.

The module has a broker namespace of its own; events are published straight to
notification's queues (through the broker's default exchange). Time for the group timers comes
from a clock the tests drive; providers ZZN01-ZZN09 are synthetic (not in the registry).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aiosmtpd.controller import Controller
from icalendar import Calendar

from services.notification.app import build, subscriptions
from services.notification.channels import verify
from services.notification.grouping import next_digest
from services.notification.routing import Timing
from shared.envelope import CONTENT_TYPE
from shared.events import (
    Attendee,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    Event,
    MeetingCancelled,
    MeetingRescheduled,
    MeetingScheduled,
    ProviderRef,
    Severity,
)
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import free_port
from tests.helpers import (
    Inbox,
    Receiver,
    bearer,
    body_text,
    calendar_part,
    carewatch,
    eventually,
    token_for,
)

pytestmark = pytest.mark.integration
SECRET = "test-webhook-secret"
TEAM = "ntest.quality.team@icb.example"


class FakeClock:
    """Real time plus an offset the tests move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)

    def reset(self) -> None:
        self.offset = timedelta()


class MailServer(Inbox):
    """The Inbox, able to refuse the next N messages or every message to some addresses."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse_next = 0
        self.refuse_for: set[str] = set()
        self.refused = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_next > 0 or self.refuse_for & set(envelope.rcpt_tos):
            self.refuse_next = max(0, self.refuse_next - 1)
            self.refused += 1
            return "451 4.3.0 Mail server temporarily unavailable"
        return await super().handle_DATA(server, session, envelope)


ROUTING = """
defaults: {{group_wait: 60s, group_interval: 5m, repeat_interval: 4h, digest_at: "08:00"}}
webhooks:
  ntest-team: {{url: "http://127.0.0.1:{port}/hooks/quality"}}
routes:
  - name: ntest-meetings
    match: {{event: ["meeting.*"]}}
    to: [quality_team, attendees]
    silenceable: false
  - name: ntest-webhook
    match: {{provider: [ZZN06], severity: [serious]}}
    to: [webhook:ntest-team]
  - name: ntest-digest
    match: {{provider: [ZZN03]}}
    to: [email:digest.zzn03@icb.example]
    delivery: digest
  - name: ntest-serious
    match: {{event: ["concern.*"], severity: [serious, high]}}
    to: [email:serious.zzn@icb.example]
  - name: ntest-grouped
    match: {{event: ["concern.*"], severity: [low, moderate]}}
    to: [provider_quality_contact]
    delivery: grouped
"""


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
async def notification(settings: Settings, clock: FakeClock, tmp_path_factory: Any,
                       amqp: aio_pika.abc.AbstractConnection, db: asyncpg.Pool,
                       ) -> AsyncIterator[dict[str, Any]]:
    """notification running in this process with a test routing file, its own SMTP port,
    a webhook receiver, and a queue that catches notification.failed."""
    with Receiver() as receiver:
        routing = Path(tmp_path_factory.mktemp("routing")) / "routing.yaml"
        routing.write_text(ROUTING.format(port=receiver.port))
        # A broker namespace of this module's own: no other module's events reach this
        # runtime, and none of these reaches another module's queues.
        own = settings.model_copy(update={
            "namespace": f"{settings.namespace}_ntf",
            "smtp_port": free_port(), "quality_team_email": TEAM,
            "notification_routing_file": str(routing),
            "notification_webhook_secrets": {"ntest-team": SECRET},
            "notification_group_poll_interval": 0.05,
            "notification_backoff_base": 0.05, "notification_backoff_cap": 0.1,
            "notification_max_attempts": 6,
        })
        inbox = MailServer()
        controller = Controller(inbox, hostname="127.0.0.1", port=own.smtp_port)
        controller.start()
        topology = Topology(own.namespace, own.delivery_limit)
        channel = await amqp.channel()
        await topology.declare(channel, subscriptions(topology))
        failed = await channel.declare_queue(exclusive=True)
        await failed.bind(topology.events_exchange, "notification.failed.v1")
        state: dict[str, Any] = {"settings": own, "inbox": inbox, "receiver": receiver,
                                 "failed": failed, "runtime": build(own, clock=clock)}
        await state["runtime"].start()
        try:
            yield state
        finally:
            # Leave nothing behind for the next module: every failure event published
            # (to our queue, not to the unrouted one), no open groups, nothing pending.
            await eventually(lambda: _outbox_empty(db), what="outbox flushed")
            await state["runtime"].stop()
            await db.execute("DELETE FROM notification.alert_groups WHERE route LIKE 'ntest-%'")
            await db.execute("UPDATE notification.notifications SET status = 'failed'"
                             " WHERE status = 'pending' AND route LIKE 'ntest-%'")
            await topology.delete_all(channel, subscriptions(topology))
            await channel.close()
            controller.stop()


async def _outbox_empty(db: asyncpg.Pool) -> bool:
    return await db.fetchval("SELECT count(*) FROM notification.outbox") == 0


async def publish(amqp: aio_pika.abc.AbstractConnection, settings: Settings,
                  *events: Event) -> None:
    """Put events on notification's own queues only, as the relay of another service would."""
    topology = Topology(settings.namespace, settings.delivery_limit)
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    try:
        for event in events:
            envelope = event.envelope("carewatch/tests")
            queue = topology.event_subscription("notification", event.event_type).queue
            await channel.default_exchange.publish(
                aio_pika.Message(envelope.to_bytes(), message_id=str(envelope.id), user_id="guest",
                                 content_type=CONTENT_TYPE,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue, mandatory=True)
    finally:
        await channel.close()


def provider(ods: str) -> ProviderRef:
    return ProviderRef(ods_code=ods, name=f"Test Trust {ods}", provider_type="acute",
                       quality_contact_email=f"quality.{ods.lower()}@provider.example")


def concern(ods: str, severity: str = "low", concern_id: uuid.UUID | None = None,
            theme: str = "Discharge", cls: type[ConcernRaised] = ConcernRaised,
            **extra: Any) -> ConcernRaised:
    concern_id = concern_id or uuid.uuid4()
    return cls(concern_id=concern_id, fingerprint=f"{ods}:cluster:{theme}",
               provider=provider(ods), rule="cluster", theme=theme, severity=Severity(severity),
               reason=f"{theme} alerts at {ods} (concern {concern_id})", evidence=[],
               raised_at=datetime.now(UTC), **extra)


def resolved(c: ConcernRaised) -> ConcernResolved:
    return ConcernResolved(concern_id=c.concern_id, fingerprint=c.fingerprint,
                           provider=c.provider, rule=c.rule, theme=c.theme,
                           severity=c.severity, resolution="signal returned to common cause",
                           resolved_at=datetime.now(UTC))


def meeting(ods: str, tag: str, **extra: Any) -> dict[str, Any]:
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    return dict(
        meeting_id=uuid.uuid4(), concern_id=uuid.uuid4(), provider=provider(ods),
        title=f"Remedial action meeting: {ods}", starts_at=start,
        ends_at=start + timedelta(hours=1), timezone="Europe/London", location="Teams",
        deadline=start, breach=False, severity=Severity.SERIOUS, agenda=["The concern"],
        remedial_actions=["A plan"],
        organizer=Attendee(role="organizer", name="ICB quality team", email=TEAM),
        attendees=[Attendee(role="provider quality lead", name="Pat",
                            email=f"pat.{tag}@provider.example"),
                   Attendee(role="lay member", name="Lee", email=f"lee.{tag}@icb.example")],
        **extra)


async def _mail(inbox: Inbox, address: str, n: int) -> list[EmailMessage] | None:
    found = inbox.to(address)
    return found if len(found) >= n else None


async def mail(inbox: Inbox, address: str, n: int = 1) -> list[EmailMessage]:
    return await eventually(lambda: _mail(inbox, address, n), what=f"{n} message(s) to {address}")


async def quiet(seconds: float = 0.5) -> None:
    """Give a wrongly sent message the time to arrive before asserting there is none."""
    await asyncio.sleep(seconds)


def group_rows(db: asyncpg.Pool, recipient: str) -> Any:
    return db.fetch("SELECT a.* FROM notification.group_alerts a JOIN notification.alert_groups g"
                    " USING (group_id) WHERE g.recipient = $1", recipient)


# -- meetings ----------------------------------------------------------------------------------
async def test_invitation_then_update_then_cancellation_for_every_recipient(
        notification: dict[str, Any], amqp: aio_pika.abc.AbstractConnection) -> None:
    inbox, settings = notification["inbox"], notification["settings"]
    tag = uuid.uuid4().hex[:8]
    fields = meeting("ZZN01", tag)
    later = fields["starts_at"] + timedelta(days=1)
    await publish(amqp, settings, MeetingScheduled(**fields))
    recipients = [TEAM, f"pat.{tag}@provider.example", f"lee.{tag}@icb.example"]
    for address in recipients:
        await mail(inbox, address, 1)
    await publish(amqp, settings, MeetingRescheduled(
        **{**fields, "starts_at": later, "ends_at": later + timedelta(hours=1), "sequence": 1},
        previous_starts_at=fields["starts_at"], change="moved a day later"))
    for address in recipients:
        await mail(inbox, address, 2)
    await publish(amqp, settings, MeetingCancelled(**{**fields, "sequence": 2},
                                                   reason="concern resolved"))
    for address in recipients:
        msgs = await mail(inbox, address, 3)
        cals = [Calendar.from_ical(calendar_part(m)) for m in msgs]
        events = [c.events[0] for c in cals]
        assert [str(c["METHOD"]) for c in cals] == ["REQUEST", "REQUEST", "CANCEL"]
        assert {str(e["UID"]) for e in events} == {f"meeting-{fields['meeting_id']}@carewatch"}
        assert [e.decoded("SEQUENCE") for e in events] == [0, 1, 2]
        assert events[1].decoded("DTSTART") == later
        assert str(events[0]["ORGANIZER"]) == f"mailto:{TEAM}"
        attendees = {str(a) for a in events[0].attendees}
        assert attendees == {f"mailto:pat.{tag}@provider.example", f"mailto:lee.{tag}@icb.example"}
        assert len({m["Message-ID"] for m in msgs}) == 3
        assert cals[2].walk("VTIMEZONE")[0]["TZID"] == "Europe/London"
    await quiet()
    assert [len(inbox.to(a)) for a in recipients] == [3, 3, 3]


# -- grouping ------------------------------------------------------------------------------------
async def test_twenty_low_concerns_inside_the_group_wait_become_one_email_then_changes_and_repeats(
        notification: dict[str, Any], amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool, clock: FakeClock) -> None:
    inbox, settings = notification["inbox"], notification["settings"]
    clock.reset()
    contact = "quality.zzn02@provider.example"
    concerns = [concern("ZZN02", theme=f"Theme {i}") for i in range(20)]
    # Updates to five of them inside the wait: de-duplicated into the same alerts.
    updates = [concern("ZZN02", "moderate", c.concern_id, c.theme, ConcernUpdated,
                       previous_severity=Severity.LOW, evidence_count=0)
               for c in concerns[:5]]
    await publish(amqp, settings, *concerns, *updates)
    await eventually(lambda: _versions(db, contact, 25), what="25 events in one group")
    await quiet()
    assert inbox.to(contact) == []  # the group wait (60 s) has not passed

    clock.advance(seconds=61)
    [first] = await mail(inbox, contact, 1)
    assert "20 alerts at Test Trust ZZN02 (ZZN02) (20 open, 20 new)" in first["Subject"]
    text = body_text(first)
    assert text.count("[NEW]") == 20
    assert text.count("moderate concern") == 5
    await quiet()
    assert len(inbox.to(contact)) == 1

    # A resolution: sent with the rest of the group, after the group interval only.
    await publish(amqp, settings, resolved(concerns[0]))
    await eventually(lambda: _versions(db, contact, 26), what="resolution stored")
    await quiet()
    assert len(inbox.to(contact)) == 1
    clock.advance(minutes=5)
    second = (await mail(inbox, contact, 2))[1]
    assert "(19 open, 1 resolved)" in second["Subject"]
    assert body_text(second).count("[RESOLVED]") == 1

    # Nothing changes: the open concerns are repeated after the repeat interval.
    clock.advance(hours=4, minutes=1)
    third = (await mail(inbox, contact, 3))[2]
    assert "19 alerts" in third["Subject"]
    assert "still open, repeated" in body_text(third)
    await quiet()
    assert len(inbox.to(contact)) == 3
    clock.reset()


async def _versions(db: asyncpg.Pool, recipient: str, total: int) -> bool:
    rows = await group_rows(db, recipient)
    return sum(r["version"] for r in rows) >= total


async def test_group_timer_survives_a_restart(
        notification: dict[str, Any], amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool, clock: FakeClock) -> None:
    inbox, settings = notification["inbox"], notification["settings"]
    clock.reset()
    contact = "quality.zzn05@provider.example"
    await publish(amqp, settings, *(concern("ZZN05") for _ in range(3)))
    await eventually(lambda: _versions(db, contact, 3), what="3 alerts grouped")
    # The process stops inside the group wait; a new one takes the durable timer over.
    await notification["runtime"].stop()
    notification["runtime"] = build(settings, clock=clock)
    clock.advance(seconds=61)
    await notification["runtime"].start()
    [msg] = await mail(inbox, contact, 1)
    assert "3 alerts" in msg["Subject"]
    # The timers are checked by a recurring job of the shared scheduler.
    job = await db.fetchrow("SELECT * FROM notification.jobs WHERE name = 'group_flush'")
    assert job["recurring"] and job["done_at"] is None and job["last_run_at"] is not None
    clock.reset()


async def test_daily_digest_is_sent_at_the_digest_time(
        notification: dict[str, Any], amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool, clock: FakeClock) -> None:
    inbox, settings = notification["inbox"], notification["settings"]
    clock.reset()
    address = "digest.zzn03@icb.example"
    await publish(amqp, settings, concern("ZZN03"), concern("ZZN03", "serious"),
                  concern("ZZN03", "moderate"))
    await eventually(lambda: _versions(db, address, 3), what="3 alerts in the digest")
    due = await db.fetchval("SELECT next_flush_at FROM notification.alert_groups"
                            " WHERE recipient = $1", address)
    assert abs((due - next_digest(clock(), Timing())).total_seconds()) < 5
    clock.offset = due - datetime.now(UTC) - timedelta(seconds=2)
    await quiet()
    assert inbox.to(address) == []
    clock.advance(seconds=3)
    [msg] = await mail(inbox, address, 1)
    assert msg["Subject"].startswith("[carewatch] Daily digest: 3 alerts at Test Trust ZZN03")
    clock.reset()


# -- delivery guarantees ------------------------------------------------------------------------
async def test_smtp_refusing_for_a_while_is_retried_then_delivered_once(
        notification: dict[str, Any], amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool) -> None:
    inbox, settings = notification["inbox"], notification["settings"]
    tag = uuid.uuid4().hex[:8]
    inbox.refuse_next = 3
    fields = meeting("ZZN04", tag)
    fields["attendees"] = fields["attendees"][:1]
    await publish(amqp, settings, MeetingScheduled(**fields))
    address = f"pat.{tag}@provider.example"
    await mail(inbox, address, 1)
    await eventually(lambda: db.fetchval(
        "SELECT count(*) = 2 FROM notification.notifications WHERE status = 'sent'"
        " AND payload->>'meeting_id' = $1", str(fields["meeting_id"])), what="both sent")
    await quiet()
    assert len(inbox.to(address)) == 1
    log = await db.fetch(
        "SELECT d.outcome FROM notification.deliveries d JOIN notification.notifications n"
        " USING (notification_id) WHERE n.payload->>'meeting_id' = $1 ORDER BY d.id",
        str(fields["meeting_id"]))
    outcomes = [r["outcome"] for r in log]
    assert outcomes.count("retry") == 3 and outcomes.count("sent") == 2
    assert inbox.refused == 3


async def test_smtp_down_for_good_fails_visibly_publishes_and_can_be_retried_from_the_cli(
        notification: dict[str, Any], amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool) -> None:
    inbox, settings, failed = notification["inbox"], notification["settings"], notification["failed"]
    tag = uuid.uuid4().hex[:8]
    address, other = f"pat.{tag}@provider.example", f"lee.{tag}@icb.example"
    inbox.refuse_for = {address, other}
    fields = meeting("ZZN08", tag)
    await publish(amqp, settings, MeetingScheduled(**fields))
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM notification.notifications WHERE recipient = $1 AND status = 'failed'",
        address), what="notification failed")
    assert row["attempts"] == 6 and "451" in row["last_error"]
    await eventually(lambda: db.fetchval(
        "SELECT true FROM notification.notifications WHERE recipient = $1"
        " AND status = 'failed'", other), what="the other failed too")
    outcomes = [r["outcome"] for r in await db.fetch(
        "SELECT outcome FROM notification.deliveries WHERE notification_id = $1 ORDER BY id",
        row["notification_id"])]
    assert outcomes == ["retry"] * 5 + ["failed"]

    message = await eventually(lambda: _failure_event(failed, row["notification_id"]),
                               what="notification.failed published")
    data = json.loads(message.body)["data"]
    assert data["recipient"] == address and data["attempts"] == 6

    code, out = await carewatch(settings, "notifications", "list", "--status", "failed", "--json")
    assert code == 0, out
    assert str(row["notification_id"]) in {r["notification_id"] for r in json.loads(out)}

    inbox.refuse_for = set()
    code, out = await carewatch(settings, "notifications", "retry",
                                str(row["notification_id"])[:13],
                                env={"CAREWATCH_TOKEN": await token_for(
                                    notification["runtime"].pool, "ops-tester", "operator")})
    assert code == 0, out
    assert f"requeued {row['notification_id']}" in out
    [msg] = await mail(inbox, address, 1)
    assert msg["Message-ID"] == row["message_id"]
    after = await eventually(lambda: db.fetchrow(
        "SELECT status, attempts FROM notification.notifications WHERE notification_id = $1"
        " AND status <> 'pending'", row["notification_id"]), what="settled")
    assert (after["status"], after["attempts"]) == ("sent", 1)
    code, out = await carewatch(settings, "notifications", "show", str(row["notification_id"]))
    assert code == 0 and "retried by ops-tester" in out
    code, out = await carewatch(settings, "notifications", "retry", str(row["notification_id"]))
    assert code != 0 and "not failed" in out

    code, out = await carewatch(settings, "notifications", "retry", "--all-failed")
    assert code == 0, out
    await mail(inbox, other, 1)


async def _failure_event(queue: aio_pika.abc.AbstractQueue,
                         notification_id: uuid.UUID) -> aio_pika.abc.AbstractIncomingMessage | None:
    message = await queue.get(fail=False)
    if message is None:
        return None
    await message.ack()
    return message if json.loads(message.body)["data"]["notification_id"] == str(
        notification_id) else None


# -- webhooks ----------------------------------------------------------------------------------
async def test_webhook_gets_signed_slack_shaped_json_and_a_5xx_is_retried(
        notification: dict[str, Any], amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool) -> None:
    receiver, settings = notification["receiver"], notification["settings"]
    receiver.statuses = [503]
    event = concern("ZZN06", "serious")
    await publish(amqp, settings, event)
    await eventually(lambda: _async(len(receiver.posts) >= 2), what="post retried")
    first, second = receiver.posts[:2]
    assert first[2] == second[2] or json.loads(first[2]) == json.loads(second[2])
    path, headers, body = second
    assert path == "/hooks/quality"
    assert headers["Content-Type"] == "application/json"
    timestamp, signature = headers["X-Carewatch-Timestamp"], headers["X-Carewatch-Signature"]
    assert signature.startswith("sha256=")
    assert verify(SECRET, timestamp, body, signature)
    assert not verify("another secret", timestamp, body, signature)
    doc = json.loads(body)
    assert doc["text"] == "New serious concern at Test Trust ZZN06 (ZZN06): Discharge"
    assert doc["attachments"][0]["color"] == "#d5281b"
    assert doc["carewatch"]["payload"]["concern_id"] == str(event.concern_id)
    assert headers["X-Carewatch-Delivery"] == first[1]["X-Carewatch-Delivery"]
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM notification.notifications WHERE channel = 'webhook'"
        " AND payload->>'concern_id' = $1 AND status = 'sent'", str(event.concern_id)),
        what="webhook notification marked sent")
    assert (row["status"], row["attempts"], row["recipient"]) == ("sent", 2, "ntest-team")
    assert headers["X-Carewatch-Delivery"] == str(row["notification_id"])


async def _async(value: Any) -> Any:
    return value


# -- silences ----------------------------------------------------------------------------------
async def test_silence_suppresses_and_records_then_expires(
        notification: dict[str, Any], amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool, clock: FakeClock) -> None:
    inbox, settings = notification["inbox"], notification["settings"]
    clock.reset()
    pool = notification["runtime"].pool
    as_alice = {"CAREWATCH_TOKEN": await token_for(pool, "alice", "quality_lead")}
    as_bob = {"CAREWATCH_TOKEN": await token_for(pool, "bob", "operator")}
    as_lay = {"CAREWATCH_TOKEN": await token_for(pool, "lay", "lay_member")}
    code, out = await carewatch(settings, "silences", "add", "--provider", "ZZN07",
                                "--for", "1h", "--reason", "a lay member may not", env=as_lay)
    assert code == 3 and "holds none of" in out, out
    code, out = await carewatch(settings, "silences", "add", "--provider", "ZZN07",
                                "--for", "1h", "--reason", "provider data migration",
                                "--json", env=as_alice)
    assert code == 0, out
    silence_id = json.loads(out)["silence_id"]

    serious = concern("ZZN07", "serious")
    low = [concern("ZZN07") for _ in range(2)]
    tag = uuid.uuid4().hex[:8]
    fields = meeting("ZZN07", tag)
    await publish(amqp, settings, serious, *low, MeetingScheduled(**fields))
    # A meeting is not silenceable: it goes.
    await mail(inbox, f"pat.{tag}@provider.example", 1)
    suppressed = await eventually(lambda: db.fetchrow(
        "SELECT * FROM notification.notifications WHERE payload->>'concern_id' = $1",
        str(serious.concern_id)), what="serious concern recorded")
    assert suppressed["status"] == "suppressed"
    assert str(suppressed["silence_id"]) == silence_id
    contact = "quality.zzn07@provider.example"
    await eventually(lambda: _versions(db, contact, 2), what="grouped")
    clock.advance(seconds=61)
    group = await eventually(lambda: db.fetchrow(
        "SELECT * FROM notification.notifications WHERE recipient = $1 AND kind = 'group'",
        contact), what="group recorded")
    assert group["status"] == "suppressed" and str(group["silence_id"]) == silence_id
    await quiet()
    assert await _about(inbox, "serious.zzn@icb.example", serious.concern_id) == []
    assert inbox.to(contact) == []

    code, out = await carewatch(settings, "silences", "list", "--json")
    [listed] = [s for s in json.loads(out) if s["silence_id"] == silence_id]
    assert listed["created_by"] == "alice" and listed["reason"] == "provider data migration"
    assert listed["suppressed"] == 2

    code, out = await carewatch(settings, "silences", "expire", silence_id[:8], env=as_bob)
    assert code == 0, out
    code, out = await carewatch(settings, "silences", "list", "--json")
    assert silence_id not in out
    code, out = await carewatch(settings, "silences", "list", "--all", "--json")
    [ended] = [s for s in json.loads(out) if s["silence_id"] == silence_id]
    assert ended["expired_by"] == "bob"

    again = concern("ZZN07", "serious")
    await publish(amqp, settings, again)
    msgs = await eventually(lambda: _about(inbox, "serious.zzn@icb.example", again.concern_id),
                            what="serious concern mailed after the silence")
    assert len(msgs) == 1
    clock.reset()


async def _about(inbox: Inbox, address: str, concern_id: uuid.UUID) -> list[EmailMessage]:
    return [m for m in inbox.to(address)
            if str(concern_id) in body_text(m)]


async def test_metrics_count_notifications_by_status(notification: dict[str, Any]) -> None:
    import httpx

    port = notification["runtime"].http.port
    operator = bearer(await token_for(notification["runtime"].pool, "operator@tests", "operator"))
    async with httpx.AsyncClient(headers=operator) as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for status in ("pending", "sent", "failed", "suppressed"):
        assert f'carewatch_notifications{{service="notification",status="{status}"}}' in metrics
