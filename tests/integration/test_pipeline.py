"""The foundation flow through all four services over the real broker and database.

The services run in this process (the e2e suite runs them as separate processes).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg
import pytest
from icalendar import Calendar

from services.catalogue import SERVICES, builder
from services.escalation.calendar import is_working_day, working_days_after
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import (
    Inbox,
    bearer,
    calendar_part,
    eventually,
    example,
    publish_submission,
    smtp_server,
    token_for,
)

pytestmark = pytest.mark.integration
LONDON = ZoneInfo("Europe/London")


@pytest.fixture(scope="module")
async def pipeline(settings: Settings) -> AsyncIterator[tuple[dict[str, ServiceRuntime], Inbox]]:
    controller, inbox = smtp_server(settings.smtp_port)
    runtimes = {name: builder(name)(settings) for name in SERVICES}
    for runtime in runtimes.values():
        await runtime.start()
    yield runtimes, inbox
    for runtime in runtimes.values():
        await runtime.stop()
    controller.stop()


def unique_record(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "record_id": f"{body['record_id']}-{uuid.uuid4().hex[:8]}"}


async def feedback_row(db: asyncpg.Pool, ods: str, record_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM intake.feedback WHERE ods_code = $1"
                             " AND provider_record_id = $2", ods, record_id)


async def test_serious_complaint_books_a_meeting_and_emails_an_invitation(
        pipeline: Any, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    _, inbox = pipeline
    # A provider of its own: concerns are per provider + rule + theme across the session.
    body = unique_record({**example("serious-complaint.json")["body"], "ods_code": "RRV"})
    published_at = datetime.now(LONDON)
    await publish_submission(amqp, settings.namespace, body)

    fb = await eventually(lambda: feedback_row(db, body["ods_code"], body["record_id"]),
                          what="feedback accepted")
    # Personal data never leaves intake: the stored and published text is redacted.
    assert "943 476 5919" not in fb["content"]["description"]
    assert "[NHS NUMBER]" in fb["content"]["description"]

    concern = await eventually(lambda: db.fetchrow(
        "SELECT * FROM monitor.concerns WHERE evidence @> $1::jsonb",
        [{"feedback_id": str(fb["feedback_id"])}]), what="concern raised")
    assert concern["severity"] == "serious"
    assert concern["rule"] == "immediate_serious_risk"
    assert set(concern["figures"]["triggers"]) == {"risk_score", "harm_in_text"}
    assert "fractured hip" in concern["evidence"][0]["matched"]

    meeting = await eventually(lambda: db.fetchrow(
        "SELECT * FROM escalation.meetings WHERE concern_id = $1", concern["concern_id"]),
        what="meeting booked")
    start = meeting["starts_at"].astimezone(LONDON)
    assert is_working_day(start.date())
    assert start.time() >= datetime.strptime("09:00", "%H:%M").time()
    assert meeting["ends_at"].astimezone(LONDON).time() <= datetime.strptime("17:00", "%H:%M").time()
    assert start.date() <= working_days_after(published_at.date(), 2)
    assert not meeting["breach"]

    provider_contact = f"quality.{body['ods_code'].lower()}@provider.example"
    for address in (settings.quality_team_email, provider_contact):
        msgs = await eventually(partial(_invites, inbox, address, meeting["meeting_id"]),
                                what=f"invitation to {address}")
        assert len(msgs) == 1
        cal = Calendar.from_ical(calendar_part(msgs[0]))
        assert str(cal["method"]) == "REQUEST"
        event = cal.walk("VEVENT")[0]
        assert str(event["uid"]) == f"meeting-{meeting['meeting_id']}@carewatch"
        assert event.decoded("dtstart") == meeting["starts_at"]
        assert cal.walk("VTIMEZONE")[0]["tzid"] == "Europe/London"
        attendees = {str(a).removeprefix("mailto:") for a in event.get("attendee")}
        assert provider_contact in attendees
    log = await eventually(lambda: db.fetch(
        "SELECT d.outcome FROM notification.deliveries d JOIN notification.notifications n"
        " USING (notification_id) WHERE n.recipient = $1 AND n.payload->>'meeting_id' = $2",
        provider_contact, str(meeting["meeting_id"])), what="delivery logged")
    assert [r["outcome"] for r in log] == ["sent"]


async def _invites(inbox: Inbox, address: str, meeting_id: uuid.UUID) -> list[Any]:
    """This meeting's invitations to ``address`` (alerts and other mail are skipped)."""
    return [m for m in inbox.to(address)
            if any(p.get_content_type() == "text/calendar" for p in m.walk())
            and str(meeting_id).encode() in calendar_part(m)]


async def test_same_record_twice_gives_one_concern_one_meeting_one_email(
        pipeline: Any, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    _, inbox = pipeline
    body = unique_record({**example("safeguarding-concern.json")["body"], "ods_code": "RJZ"})
    await publish_submission(amqp, settings.namespace, body)
    await publish_submission(amqp, settings.namespace, body)  # a resend, new message id

    fb = await eventually(lambda: feedback_row(db, "RJZ", body["record_id"]))
    await eventually(lambda: db.fetchval(
        "SELECT duplicates FROM intake.feedback WHERE feedback_id = $1", fb["feedback_id"]),
        what="second copy counted as a duplicate")
    meeting = await eventually(lambda: db.fetchrow(
        "SELECT m.* FROM escalation.meetings m JOIN escalation.concern_evidence e"
        " USING (concern_id) WHERE e.feedback_id = $1", fb["feedback_id"]))
    await eventually(lambda: _invites(inbox, "quality.rjz@provider.example", meeting["meeting_id"]))
    concerns = await db.fetchval(
        "SELECT count(*) FROM monitor.concerns WHERE evidence @> $1::jsonb",
        [{"feedback_id": str(fb["feedback_id"])}])
    assert concerns == 1
    assert await db.fetchval(
        "SELECT count(*) FROM escalation.meetings WHERE ods_code = 'RJZ' AND concern_id IN"
        " (SELECT concern_id FROM escalation.concern_evidence WHERE feedback_id = $1)",
        fb["feedback_id"]) == 1
    assert len(await _invites(inbox, "quality.rjz@provider.example", meeting["meeting_id"])) == 1


async def test_invalid_submission_is_quarantined_with_reasons_and_announced(
        pipeline: Any, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    _, inbox = pipeline
    sent_before = len(inbox.messages)
    body = unique_record(example("invalid-complaint.json")["body"])
    await publish_submission(amqp, settings.namespace, body)

    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM intake.quarantine WHERE body::text LIKE '%' || $1 || '%'"
        " OR convert_from(body, 'UTF8') LIKE '%' || $1 || '%'", body["record_id"]),
        what="quarantine row")
    locs = {r["loc"] for r in row["reasons"]}
    assert {"subject_area", "received_on", "description", "risk.consequence"} <= locs
    assert all(r["msg"] and r["type"] for r in row["reasons"])
    # Announced as feedback.rejected: notification keeps it for the feed's digest.
    await eventually(lambda: db.fetchrow(
        "SELECT * FROM notification.rejections WHERE submission_id = $1", row["submission_id"]),
        what="feedback.rejected consumed")
    assert await db.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE provider_record_id = $1", body["record_id"]) == 0
    # No e-mail about it. (Mail for the earlier tests' meetings may still be arriving, so
    # the check is on what the messages say, not on how many there are.)
    await asyncio.sleep(1.0)
    about_it = [m for _, m in inbox.messages[sent_before:]
                if body["record_id"] in _text(m) or str(row["submission_id"]) in _text(m)]
    assert about_it == []


def _text(message: Any) -> str:
    """A message's subject and decoded text parts (and calendar), as a reader would see them."""
    parts = [str(part.get_content()) for part in message.walk()
             if part.get_content_maintype() == "text"]
    return "\n".join([str(message["Subject"]), *parts])


@pytest.mark.parametrize("raw, content_type, expected_type", [
    (b"\xff\xfe not utf-8", "application/json", "json_invalid"),
    (b"[" * 10_000, "application/json", "json_invalid"),
    (b'{"kind": "tweet"}', "application/json", "union_tag_invalid"),
    (b"<xml/>", "application/xml", "content_type"),
])
async def test_hostile_bodies_are_quarantined_not_crashing(
        pipeline: Any, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection, raw: bytes, content_type: str,
        expected_type: str) -> None:
    marker = uuid.uuid4().hex
    await publish_submission(amqp, settings.namespace, raw, message_id=marker,
                             content_type=content_type)
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM intake.quarantine WHERE message_id = $1", marker))
    assert expected_type in {r["type"] for r in row["reasons"]}


async def test_submission_without_user_id_is_refused(
        pipeline: Any, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    body = unique_record(example("routine-complaint.json")["body"])
    marker = uuid.uuid4().hex
    await publish_submission(amqp, settings.namespace, body, user_id=None, message_id=marker)
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM intake.quarantine WHERE message_id = $1", marker))
    assert [r["type"] for r in row["reasons"]] == ["unauthenticated"]


async def test_forged_user_id_is_refused_by_the_broker(
        pipeline: Any, settings: Settings, amqp: aio_pika.abc.AbstractConnection) -> None:
    body = unique_record(example("routine-complaint.json")["body"])
    with pytest.raises(aio_pika.exceptions.ChannelClosed):
        await publish_submission(amqp, settings.namespace, body, user_id="feed-someone-else")


async def test_routine_complaint_raises_no_concern(
        pipeline: Any, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    body = unique_record(example("routine-complaint.json")["body"])
    await publish_submission(amqp, settings.namespace, body)
    fb = await eventually(lambda: feedback_row(db, body["ods_code"], body["record_id"]))
    await eventually(lambda: db.fetchval(
        "SELECT true FROM monitor.feedback WHERE feedback_id = $1", fb["feedback_id"]),
        what="monitor saw the feedback")
    assert await db.fetchval(
        "SELECT count(*) FROM monitor.concerns WHERE evidence @> $1::jsonb",
        [{"feedback_id": str(fb["feedback_id"])}]) == 0


async def test_an_equality_return_is_redacted_by_intake_and_kept_by_quality_monitor(
        pipeline: Any, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    """The equality_return kind through the real broker: intake accepts and redacts it,
    quality-monitor keeps it in monitor.equality_returns, raises nothing, and no service
    fails a delivery over it."""
    since = await db.fetchval("SELECT now()")
    body = unique_record(example("equality-return.json")["body"])
    body["summary"] += " Queries to the WRES lead on 07700 900982."
    await publish_submission(amqp, settings.namespace, body)
    fb = await eventually(lambda: feedback_row(db, body["ods_code"], body["record_id"]))
    assert fb["kind"] == "equality_return"
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM monitor.equality_returns WHERE feedback_id = $1", fb["feedback_id"]),
        what="monitor kept the return")
    assert (row["ods_code"], row["standard"], row["priority"], row["period"], row["status"],
            row["figure"]) == ("RJ1", "wres", "", "2026-10", "at_risk", 1.42)
    assert row["summary"].startswith("Indicator 2: white applicants are 1.42 times")
    assert "[PHONE]" in row["summary"] and "900982" not in row["summary"]
    assert await db.fetchval(
        "SELECT count(*) FROM monitor.concerns WHERE evidence @> $1::jsonb",
        [{"feedback_id": str(fb["feedback_id"])}]) == 0
    schemas = [r["table_schema"] for r in await db.fetch(
        "SELECT table_schema FROM information_schema.tables"
        " WHERE table_name = 'delivery_failures'")]
    assert {"intake", "monitor", "escalation", "notification"} <= set(schemas), schemas
    for schema in schemas:
        failed = await db.fetch(f'SELECT queue, error FROM "{schema}".delivery_failures'
                                " WHERE failed_at >= $1", since)
        assert not failed, (schema, failed)


async def test_poison_event_is_dead_lettered_with_its_reason(
        pipeline: Any, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{settings.namespace}.events")
    message_id = str(uuid.uuid4())
    await exchange.publish(aio_pika.Message(b'{"not": "an envelope"}', message_id=message_id),
                           routing_key="feedback.accepted.v1", mandatory=True)
    dlq = await channel.declare_queue(
        f"{settings.namespace}.quality_monitor.feedback.accepted.v1.dlq", passive=True)

    async def dead_lettered() -> aio_pika.abc.AbstractIncomingMessage | None:
        msg = await dlq.get(fail=False)
        if msg is not None and msg.message_id != message_id:
            await msg.nack(requeue=True)
            return None
        return msg

    msg = await eventually(dead_lettered, what="message in the DLQ")
    deaths = msg.headers["x-death"]
    assert isinstance(deaths, list) and isinstance(deaths[0], dict)
    assert deaths[0]["reason"] == "rejected"
    await msg.ack()
    failure = await db.fetchrow(
        "SELECT * FROM monitor.delivery_failures WHERE message_id = $1", message_id)
    assert failure["error"].startswith("poison:")
    await channel.close()


async def test_unrouted_event_is_kept_not_lost(
        settings: Settings, amqp: aio_pika.abc.AbstractConnection) -> None:
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange(f"{settings.namespace}.events")
    message_id = str(uuid.uuid4())
    await exchange.publish(aio_pika.Message(b"{}", message_id=message_id),
                           routing_key="nobody.listens.v1", mandatory=True)
    queue = await channel.declare_queue(f"{settings.namespace}.unrouted", passive=True)

    # Someone else's unrouted events are held (unacked) while looking, so each get returns
    # the next message whatever the queue does with a requeued one, then given back.
    held: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def ours() -> aio_pika.abc.AbstractIncomingMessage | None:
        while (msg := await queue.get(fail=False)) is not None:
            if msg.message_id == message_id:
                return msg
            held.append(msg)
        return None

    try:
        msg = await eventually(ours, what="our event in the unrouted queue")
    finally:
        for other in held:
            await other.nack(requeue=True)
    assert msg.routing_key == "nobody.listens.v1"
    await msg.ack()
    await channel.close()


async def test_each_service_reports_ready_and_exports_metrics(pipeline: Any) -> None:
    import httpx

    runtimes, _ = pipeline
    operator = bearer(await token_for(runtimes["intake"].pool, "operator@tests", "operator"))
    async with httpx.AsyncClient(headers=operator) as client:
        for runtime in runtimes.values():
            base = f"http://127.0.0.1:{runtime.http.port}"
            ready = await client.get(f"{base}/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"consuming": True, "database": True, "broker": True,
                                             "relay": True}
            metrics = (await client.get(f"{base}/metrics")).text
            assert "carewatch_outbox_backlog" in metrics
            assert "carewatch_dead_letter_messages" in metrics
    metrics = (await httpx.AsyncClient(headers=operator).get(
        f"http://127.0.0.1:{runtimes['intake'].http.port}/metrics")).text
    assert 'outcome="accepted"' in metrics and 'outcome="rejected"' in metrics
