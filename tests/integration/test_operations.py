"""The operator's tools against the real broker and database, run as the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import date

import aio_pika
import asyncpg
import pytest

from services.catalogue import builder
from shared.envelope import CONTENT_TYPE
from shared.events import FeedbackAccepted, ProviderRef
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import carewatch, eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def monitor(settings: Settings) -> AsyncIterator[ServiceRuntime]:
    runtime = builder("quality_monitor")(settings)
    await runtime.start()
    yield runtime
    await runtime.stop()


def queue_name(settings: Settings) -> str:
    return f"{settings.namespace}.quality_monitor.feedback.accepted.v1"


async def test_status_shows_consumers_and_backlogs(monitor: ServiceRuntime,
                                                   settings: Settings) -> None:
    code, out = await carewatch(settings, "status", "--json")
    assert code == 0, out
    status = json.loads(out)
    row = next(q for q in status["queues"] if q["queue"] == queue_name(settings))
    assert row["consumers"] == 1
    assert {o["service"] for o in status["outbox"]} == {
        "intake", "quality_monitor", "escalation", "notification", "workspace"}


async def test_dead_letters_are_shown_with_reason_and_replayed(
        monitor: ServiceRuntime, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    poison_id = str(uuid.uuid4())
    events = await channel.get_exchange(f"{settings.namespace}.events")
    await events.publish(aio_pika.Message(b"not json at all", message_id=poison_id),
                         routing_key="feedback.accepted.v1", mandatory=True)

    async def shown() -> dict[str, object] | None:
        code, out = await carewatch(settings, "dlq", "show", queue_name(settings), "--json")
        assert code == 0, out
        return next((m for m in json.loads(out) if m["message_id"] == poison_id), None)

    message = await eventually(shown, timeout=20, what="poison message in the DLQ")
    assert message["dead_lettered_because"] == "rejected"
    assert message["queue"] == queue_name(settings)
    assert "poison" in message["handler_errors"][0]["error"]  # type: ignore[index]

    # A good event that had been dead-lettered (say, while the database was down) is replayed.
    feedback_id = uuid.uuid4()
    event = FeedbackAccepted(
        feedback_id=feedback_id, submission_id=uuid.uuid4(), kind="compliment",
        provider=ProviderRef(ods_code="RKE", name="Whittington Health NHS Trust",
                             provider_type="acute", quality_contact_email="q@provider.example"),
        provider_record_id="replay-1", occurred_on=date(2026, 11, 1), theme="Ward 4",
        content={"description": "Thank you"})
    envelope = event.envelope("carewatch/intake")
    await channel.default_exchange.publish(
        aio_pika.Message(envelope.to_bytes(), message_id=str(envelope.id),
                         content_type=CONTENT_TYPE),
        routing_key=f"{queue_name(settings)}.dlq", mandatory=True)
    code, out = await carewatch(settings, "dlq", "replay", queue_name(settings),
                                "--message-id", str(envelope.id))
    assert code == 0 and "replayed 1" in out, out
    await eventually(lambda: db.fetchval(
        "SELECT true FROM monitor.feedback WHERE feedback_id = $1", feedback_id),
        what="replayed event handled")
    code, out = await carewatch(settings, "dlq", "replay", queue_name(settings),
                                "--message-id", str(uuid.uuid4()))
    assert code == 1 and "is not in" in out
    await channel.close()


async def test_unknown_queue_is_a_clear_error(settings: Settings) -> None:
    code, out = await carewatch(settings, "dlq", "show", "no.such.queue")
    assert code == 2
    assert "no such queue" in out
