"""Bulk messages (``submission.bulk.v1``, ``BulkSubmissionV1``) through the real broker and
database, intake and quality-monitor running: a bulk message of FFT responses is stored in one
go, its invalid items quarantined each with its reasons, its duplicates dropped, a redelivered
copy stored once (each item a replay), its accepted items carried to quality-monitor in one
``feedback.accepted_batch`` event (a copy of which is dropped by its inbox), its responses
counted in the monthly series, and a serious harm in one comment raising its concern.

ODS codes used here and by no other integration test: RKL, RQY (setting: dental)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.quality_monitor.measures import load_fft_months
from services.quality_monitor.series import month_of, shift_month
from shared.envelope import CONTENT_TYPE
from shared.groupcommit import Batch
from shared.settings import Settings
from shared.submissions import BULK_ROUTING_KEY
from tests.helpers import eventually, publish_submission
from tests.integration import test_monitor as monitor_tests
from tests.unit.builders import example_body

pytestmark = pytest.mark.integration
stack = monitor_tests.stack  # intake and quality-monitor, a driven clock

CODES = ("RKL", "RQY")
SETTING = "dental"
ANSWERS = ("very_good", "good", "neither_good_nor_poor", "poor", "very_poor", "dont_know")
HARM = "My father fell on the ward at night and suffered a fractured hip; he died a week later."


def response(run: str, n: int, code: str, day: str, **changes: Any) -> dict[str, Any]:
    return {"kind": "fft_response", "version": 1, "ods_code": code,
            "record_id": f"B-{run}-{n}", "responded_on": day, "setting": SETTING,
            "answer": ANSWERS[n % len(ANSWERS)]} | changes


def envelope(items: list[Any]) -> dict[str, Any]:
    return {"kind": "bulk", "version": 1, "item_kind": "fft_response", "items": items}


async def watch(amqp: aio_pika.abc.AbstractConnection, settings: Settings,
                into: list[aio_pika.abc.AbstractIncomingMessage]) -> aio_pika.abc.AbstractChannel:
    """Keep every accepted FFT response event intake publishes, single or batch."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    for key in ("feedback.accepted_batch.v1.#", "feedback.accepted.v1.fft_response"):
        await queue.bind(f"{settings.namespace}.events", routing_key=key)

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            into.append(message)

    await queue.consume(keep)
    return channel


async def quarantined(db: asyncpg.Pool, message_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT message_id, routing_key, reasons, feed_user, status FROM intake.quarantine"
        " WHERE message_id LIKE $1 || '#%' ORDER BY message_id", message_id)


async def test_a_bulk_message_is_admitted_item_by_item_and_reaches_the_series(
        stack: monitor_tests.Stack, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    run = uuid.uuid4().hex[:8]
    month = shift_month(month_of(stack.today), -2)
    published: list[aio_pika.abc.AbstractIncomingMessage] = []
    watching = await watch(amqp, settings, published)
    valid = [response(run, n, CODES[n % 2], f"{month}-{1 + n % 28:02d}") for n in range(300)]
    valid[7]["comment"] = "Lovely staff. Ring me on 07700 900830 or a.patient@example.com"
    valid[11] = valid[11] | {"answer": "very_poor", "comment": HARM}
    invalid: list[Any] = [
        response(run, 900, "RKL", f"{month}-03", answer="superb"),   # not an answer
        response(run, 901, "ZZZ99", f"{month}-03"),                  # not a provider
        example_body("routine-complaint") | {"record_id": f"B-{run}-902"},  # another kind
        "a string, not a submission",
    ]
    copy = dict(valid[0])  # the same record twice in one message: a duplicate
    items = valid[:150] + invalid + [copy] + valid[150:]
    body = json.dumps(envelope(items)).encode()
    message_id = f"bulk-{run}"
    await publish_submission(amqp, settings.namespace, body, message_id=message_id,
                             routing_key=BULK_ROUTING_KEY)

    async def all_received() -> bool:
        return await db.fetchval("SELECT count(*) FROM intake.receipts r"
                                 " WHERE r.submission_id IN (SELECT submission_id FROM"
                                 " intake.feedback WHERE provider_record_id LIKE $1)"
                                 " OR r.submission_id IN (SELECT submission_id FROM"
                                 " intake.quarantine WHERE message_id LIKE $2)",
                                 f"B-{run}-%", f"{message_id}#%") >= len(valid) + len(invalid)
    await eventually(all_received, timeout=60, what="the bulk message's items admitted")

    # Stored once each, redacted.
    stored = await db.fetch("SELECT provider_record_id, content, duplicates FROM intake.feedback"
                            " WHERE provider_record_id LIKE $1", f"B-{run}-%")
    assert sorted(r["provider_record_id"] for r in stored) == sorted(
        b["record_id"] for b in valid)
    by_record = {r["provider_record_id"]: r for r in stored}
    redacted = by_record[valid[7]["record_id"]]["content"]["comment"]
    assert "07700" not in redacted and "example.com" not in redacted
    assert by_record[copy["record_id"]]["duplicates"] == 1
    # Each invalid item quarantined on its own, with its reasons, resubmittable as a single.
    rows = await quarantined(db, message_id)
    assert len(rows) == len(invalid)
    assert {r["routing_key"] for r in rows} == {"submission.fft_response.v1.bulk"}
    assert {r["feed_user"] for r in rows} == {"guest"} and {r["status"] for r in rows} == {"open"}
    types = sorted(r["reasons"][0]["type"] for r in rows)
    assert types == sorted(["enum", "unknown_provider", "wrong_kind", "dict_type"])

    # The same message again (same feed, message id and bytes): nothing more is stored.
    await publish_submission(amqp, settings.namespace, body, message_id=message_id,
                             routing_key=BULK_ROUTING_KEY)
    receipts = await db.fetchval("SELECT count(*) FROM intake.receipts")

    async def replayed() -> bool:  # a probe message after it, on the same lane
        return await db.fetchval("SELECT count(*) FROM intake.feedback"
                                 " WHERE provider_record_id = $1", f"B-{run}-probe") == 1
    await publish_submission(amqp, settings.namespace, envelope([response(
        run, 0, "RKL", f"{month}-05", record_id=f"B-{run}-probe")]),
        message_id=f"probe-{run}", routing_key=BULK_ROUTING_KEY)
    await eventually(replayed, timeout=60, what="the probe after the copy")
    assert await db.fetchval("SELECT count(*) FROM intake.receipts") == receipts + 1
    assert await db.fetchval("SELECT count(*) FROM intake.feedback WHERE provider_record_id"
                             " LIKE $1", f"B-{run}-%") == len(valid) + 1
    assert len(await quarantined(db, message_id)) == len(invalid)
    # As for a single submission sent again (not a broker redelivery: that counts nothing,
    # tests/unit/test_intake_bulk_message.py), each copy of the record counts once more.
    assert await db.fetchval("SELECT duplicates FROM intake.feedback WHERE provider_record_id"
                             " = $1", copy["record_id"]) == 3

    # quality-monitor: every response recorded, and counted in its provider's month.
    async def all_monitored() -> bool:
        return await db.fetchval("SELECT count(*) FROM monitor.feedback WHERE ods_code ="
                                 " ANY($1)", list(CODES)) >= len(valid) + 1
    await eventually(all_monitored, timeout=120, what="the responses in monitor.feedback")
    async with db.acquire() as conn:
        for code in CODES:
            months, _ = await load_fft_months(Batch(conn), code, SETTING, month)
            [found] = [m for m in months if m.period == month]
            expected = Counter(b["answer"] for b in valid if b["ods_code"] == code)
            if code == "RKL":
                expected["very_good"] += 1  # the probe
            assert {a: getattr(found.counts, a) for a in ANSWERS} == \
                {a: expected[a] for a in ANSWERS}

    # The accepted items went on in batch events (feedback.accepted_batch.v1), not one event
    # each: one for the message (its items stored then), one for the probe.
    sent = [m for m in published if f'"B-{run}-'.encode() in m.body]
    assert {m.routing_key for m in sent} == {"feedback.accepted_batch.v1.fft_response"}
    assert len(sent) == 2
    assert sum(len(json.loads(m.body)["data"]["items"]) for m in sent) == len(valid) + 1
    handled = await db.fetchval("SELECT count(*) FROM monitor.inbox WHERE event_id = ANY($1)"
                                " AND event_type = 'feedback.accepted_batch.v1'",
                                [uuid.UUID(m.message_id) for m in sent])
    assert handled == 2
    # A batch event delivered again is handled once (the inbox), not dead-lettered.
    queue = f"{settings.namespace}.quality_monitor.feedback.accepted_batch.v1"
    duplicates = stack.runtime.metrics.messages.labels("quality_monitor", queue, "duplicate")
    before = duplicates._value.get()
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{settings.namespace}.events")
    await exchange.publish(aio_pika.Message(sent[0].body, user_id="guest",
                                            message_id=sent[0].message_id,
                                            content_type=CONTENT_TYPE),
                           routing_key=sent[0].routing_key or "", mandatory=True)
    await channel.close()
    await watching.close()

    async def dropped() -> bool:
        return duplicates._value.get() > before
    await eventually(dropped, timeout=60, what="the copy of the batch event dropped")

    # The harm in one comment raised its concern, serious, evidenced by that response.
    async def harm_raised() -> list[Any]:
        return [e for e in stack.concern_events({valid[11]["ods_code"]}, "concern.raised.v1")
                if e.data["rule"] == "immediate_serious_risk"]
    [raised] = await eventually(harm_raised, timeout=60, what="the harm's concern")
    assert raised.data["severity"] == "serious"
    assert [e["kind"] for e in raised.data["evidence"]] == ["fft_response"]


async def test_an_unreadable_bulk_message_is_quarantined_whole(
        stack: monitor_tests.Stack, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    message_id = f"bulk-bad-{uuid.uuid4().hex[:8]}"
    await publish_submission(amqp, settings.namespace,
                             {"kind": "bulk", "item_kind": "complaint", "items": []},
                             message_id=message_id, routing_key=BULK_ROUTING_KEY)

    async def kept() -> asyncpg.Record | None:
        return await db.fetchrow("SELECT routing_key, reasons FROM intake.quarantine"
                                 " WHERE message_id = $1", message_id)
    row = await eventually(kept, timeout=60, what="the bulk message quarantined")
    assert row["routing_key"] == BULK_ROUTING_KEY
    assert {(r["loc"], r["type"]) for r in row["reasons"]} == {
        ("item_kind", "bulk_envelope"), ("items", "bulk_envelope")}
