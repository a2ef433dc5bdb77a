"""The urgent lane: a serious risk does not wait behind routine volume, over the real broker
and database (quality-monitor's two queues; the outbox relay's priority)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.catalogue import builder
from shared.events import FeedbackAccepted
from shared.settings import Settings
from shared.submissions import URGENT_KINDS
from shared.topology import Topology
from tests.helpers import eventually, example, publish_submission

pytestmark = pytest.mark.integration
ROUTINE = 3000


def test_feedback_kinds_that_report_risk_take_the_urgent_lane() -> None:
    assert FeedbackAccepted.urgent_suffixes == {"complaint", "safeguarding_concern", "gp_alert",
                                                "public_feedback"}
    assert FeedbackAccepted.urgent_suffixes < set(FeedbackAccepted.routing_suffixes)


async def test_a_serious_complaint_overtakes_a_routine_backlog(
        settings: Settings, db: asyncpg.Pool, amqp: aio_pika.abc.AbstractConnection) -> None:
    """With thousands of FFT responses queued for quality-monitor, a serious complaint that
    arrives after them is judged before they have been worked through."""
    intake = builder("intake")(settings)
    monitor = builder("quality_monitor")(settings)
    await intake.start()
    run = uuid.uuid4().hex[:8]
    try:
        serious = await publish_backlog_then_serious(amqp, settings.namespace, f"LANE-{run}")

        async def all_relayed() -> bool:
            # Every event is in quality-monitor's queues: the backlog is there before it starts.
            return await db.fetchval(
                "SELECT count(*) FROM intake.feedback f WHERE f.provider_record_id LIKE $1",
                f"LANE-{run}-%") == ROUTINE + 1 and await db.fetchval(
                "SELECT count(*) FROM intake.outbox") == 0

        await eventually(all_relayed, timeout=120, what="the stream accepted and relayed")
        await monitor.start()
        concern = await eventually(lambda: db.fetchrow(
            "SELECT c.* FROM monitor.concerns c JOIN intake.feedback f ON c.evidence @>"
            " jsonb_build_array(jsonb_build_object('feedback_id', f.feedback_id::text))"
            " WHERE f.provider_record_id = $1", serious["record_id"]), interval=0.02,
            timeout=60, what="the serious complaint's concern")
        routine_done = await _handled(db, run)
        assert concern["severity"] == "serious"
        assert routine_done < ROUTINE / 4, \
            f"the serious complaint waited for {routine_done} of {ROUTINE} routine items"
        await eventually(lambda: _at_least(db, run, ROUTINE + 1), timeout=120,
                         what="the routine backlog handled too")
    finally:
        await monitor.stop()
        await intake.stop()


async def _handled(db: asyncpg.Pool, run: str) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM monitor.feedback m JOIN intake.feedback f USING (feedback_id)"
        " WHERE f.provider_record_id LIKE $1", f"LANE-{run}-%")


async def _at_least(db: asyncpg.Pool, run: str, n: int) -> bool:
    return await _handled(db, run) >= n


async def test_declaring_the_lanes_retires_the_binding_of_the_queue_before_them(
        settings: Settings, amqp: aio_pika.abc.AbstractConnection) -> None:
    """A deployment from before the lanes has quality-monitor's routine queue bound to
    ``feedback.accepted.v1.#``: once declared again, an urgent event reaches the urgent
    queue only."""
    topology = Topology(f"{settings.namespace}_retire{uuid.uuid4().hex[:6]}")
    urgent, routine = topology.event_lanes(
        "quality_monitor", FeedbackAccepted.event_type, FeedbackAccepted.routing_suffixes,
        FeedbackAccepted.urgent_suffixes)
    channel = await amqp.channel()
    try:
        # What the earlier version declared: the same queue, bound to every suffix.
        before = topology.event_subscription("quality_monitor", FeedbackAccepted.event_type)
        assert before.queue == routine.queue
        await topology.declare(channel, [before])
        await topology.declare(channel, [urgent, routine])
        publisher = await amqp.channel(publisher_confirms=True)
        events = await publisher.get_exchange(topology.events_exchange)
        for kind in ("complaint", "fft_response"):  # each confirmed: routed and enqueued
            await events.publish(aio_pika.Message(kind.encode()), f"feedback.accepted.v1.{kind}")
        await publisher.close()

        assert await _taken(channel, urgent.queue) == [b"complaint"]
        assert await _taken(channel, routine.queue) == [b"fft_response"], \
            "the complaint did not reach the routine queue as well"
    finally:
        await topology.delete_all(channel, [urgent, routine])
        await channel.close()


async def test_intake_admits_a_serious_complaint_ahead_of_a_bulk_load(
        settings: Settings, db: asyncpg.Pool, amqp: aio_pika.abc.AbstractConnection) -> None:
    """With thousands of FFT responses queued for intake, a serious complaint published after
    them is admitted before they have been worked through (judged by the order of intake's
    transactions, as PostgreSQL recorded them)."""
    intake = builder("intake")(settings)
    await intake.lifecycle.declare_topology()  # the queues exist, nobody consumes them yet
    run = uuid.uuid4().hex[:8]
    serious = await publish_backlog_then_serious(amqp, settings.namespace, f"BULK-{run}")
    await intake.start()
    try:
        await eventually(lambda: _at_least_admitted(db, run, ROUTINE + 1), timeout=120,
                         what="the bulk load and the complaint admitted")
        ahead = await db.fetchval(
            "SELECT count(*) FROM intake.feedback f, intake.feedback c"
            " WHERE c.provider_record_id = $1 AND f.provider_record_id LIKE $2"
            " AND f.kind = 'fft_response' AND f.received_at < c.received_at",
            serious["record_id"], f"BULK-{run}-%")
        assert ahead < ROUTINE / 4, f"the complaint was admitted after {ahead} of {ROUTINE}"
    finally:
        await intake.stop()


async def _at_least_admitted(db: asyncpg.Pool, run: str, n: int) -> bool:
    return await db.fetchval("SELECT count(*) FROM intake.feedback WHERE provider_record_id"
                             " LIKE $1", f"BULK-{run}-%") >= n


async def test_declaring_intake_lanes_retires_the_queue_binding_from_before_them(
        settings: Settings, amqp: aio_pika.abc.AbstractConnection) -> None:
    """Before the lanes, intake's queue was bound to the submissions exchange by
    ``submission.#``. Declared again, a complaint reaches the urgent lane only, and a kind
    nobody knows still reaches the routine queue (to be quarantined with a reason)."""
    topology = Topology(f"{settings.namespace}_intake{uuid.uuid4().hex[:6]}")
    urgent, routine = topology.submission_lanes(URGENT_KINDS)
    channel = await amqp.channel()
    try:
        before = topology.subscription("intake", topology.submissions_exchange, "submission.#",
                                       "submissions")
        assert before.queue == routine.queue
        await topology.declare(channel, [before])
        await topology.declare(channel, [urgent, routine])
        publisher = await amqp.channel(publisher_confirms=True, on_return_raises=True)
        submissions = await publisher.get_exchange(topology.submissions_exchange)
        for key in ("submission.complaint.v1", "submission.fft_response.v1",
                    "submission.no_such_kind.v1", "odd"):
            await submissions.publish(aio_pika.Message(key.encode()), key, mandatory=True)
        await publisher.close()

        assert await _taken(channel, urgent.queue) == [b"submission.complaint.v1"]
        assert await _taken(channel, routine.queue) == [
            b"submission.fft_response.v1", b"submission.no_such_kind.v1", b"odd"]
    finally:
        await topology.delete_all(channel, [urgent, routine])
        await channel.close()


async def _taken(channel: aio_pika.abc.AbstractChannel, name: str) -> list[bytes]:
    """Every message in the queue, taken off it, in order."""
    queue = await channel.get_queue(name, ensure=False)
    bodies = []
    while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
        bodies.append(message.body)
    return bodies


async def publish_backlog_then_serious(amqp: aio_pika.abc.AbstractConnection, namespace: str,
                                       prefix: str) -> dict[str, Any]:
    """ROUTINE FFT responses for RJ7 (record ids ``<prefix>-<n>``), then a serious complaint
    (``<prefix>-serious``), which is returned."""
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{namespace}.submissions")
    fft = {**example("fft-response.json")["body"], "ods_code": "RJ7"}
    for start in range(0, ROUTINE, 500):
        await asyncio.gather(*(exchange.publish(
            aio_pika.Message(json.dumps({**fft, "record_id": f"{prefix}-{i}"}).encode(),
                             user_id="guest", content_type="application/json",
                             message_id=f"{prefix}-{i}",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="submission.fft_response.v1") for i in range(start, start + 500)))
    await channel.close()
    serious = {**example("serious-complaint.json")["body"], "ods_code": "RJ7",
               "record_id": f"{prefix}-serious"}
    await publish_submission(amqp, namespace, serious)
    return serious
