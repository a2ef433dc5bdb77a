"""The urgent lane: a serious risk does not wait behind routine volume, over the real broker
and database (quality-monitor's two queues; the outbox relay's priority)."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import asyncpg
import pytest

from services.catalogue import builder
from shared.events import FeedbackAccepted
from shared.settings import Settings
from tests.helpers import eventually, example, publish_submission

pytestmark = pytest.mark.integration
ROUTINE = 3000


def test_feedback_kinds_that_report_risk_take_the_urgent_lane() -> None:
    assert FeedbackAccepted.urgent_suffixes == {"complaint", "safeguarding_concern", "gp_alert"}
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
        channel = await amqp.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{settings.namespace}.submissions")
        fft = {**example("fft-response.json")["body"], "ods_code": "RJ7"}
        for start in range(0, ROUTINE, 500):
            await asyncio.gather(*(exchange.publish(
                aio_pika.Message(json.dumps(
                    {**fft, "record_id": f"LANE-{run}-{i}"}).encode(), user_id="guest",
                    content_type="application/json", message_id=f"LANE-{run}-{i}",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="submission.fft_response.v1") for i in range(start, start + 500)))
        await channel.close()
        serious = {**example("serious-complaint.json")["body"], "ods_code": "RJ7",
                   "record_id": f"LANE-{run}-serious"}
        await publish_submission(amqp, settings.namespace, serious)

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
        assert routine_done < ROUTINE / 2, \
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
