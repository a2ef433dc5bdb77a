"""intake: the front door for provider feeds.

Consumes: provider submissions on ``{ns}.submissions`` (routing key ``submission.<kind>.v1``).
Publishes: ``feedback.accepted.v1``, ``feedback.rejected.v1`` (through the outbox).
Stores: schema ``intake`` (providers, feeds, feedback, quarantine).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from faststream.rabbit import RabbitMessage

from services.intake import store
from services.intake.validation import Parsed, parse, submission_id
from shared.events import FeedbackAccepted, FeedbackRejected, RejectionReason
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.topology import Subscription, Topology

log = logging.getLogger(__name__)
NAME = "intake"


def subscriptions(topology: Topology) -> list[Subscription]:
    return [topology.submissions_subscription()]


def build(settings: Settings) -> ServiceRuntime:
    runtime = ServiceRuntime(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
    sub = runtime.add_subscription(runtime.topology.submissions_subscription())

    @runtime.broker.subscriber(
        runtime.topology.rabbit_queue(sub),
        runtime.topology.rabbit_exchange(sub.exchange),
        title="intake:submission",
        description="A provider feed's submission: one JSON object whose `kind` selects the"
                    " schema. Authenticated by the AMQP `user_id` property.",
    )
    async def on_submission(message: RabbitMessage) -> None:
        raw = message.raw_message
        with runtime.measure(sub) as outcome:
            try:
                outcome["outcome"], _ = await admit(
                    runtime, body=message.body, feed_user=raw.user_id,
                    message_id=message.message_id or None, routing_key=raw.routing_key,
                    content_type=message.content_type or None,
                    redelivered=bool(raw.redelivered))
            except Exception as exc:
                await runtime.record_failure(message, sub, repr(exc))
                log.exception("intake failed on message %s", message.message_id)
                raise

    return runtime


async def admit(runtime: ServiceRuntime, *, body: bytes, feed_user: str | None,
                message_id: str | None, routing_key: str | None,
                content_type: str | None, redelivered: bool = False) -> tuple[str, uuid.UUID]:
    """Accept, de-duplicate or quarantine one submission. Returns (outcome, submission id):
    outcome is ``accepted``, ``duplicate`` or ``rejected``."""
    sid = submission_id(feed_user, message_id, body)
    parsed = parse(body, content_type)
    async with runtime.pool.acquire() as conn, conn.transaction():
        reasons: list[RejectionReason]
        if isinstance(parsed, Parsed):
            sub = parsed.submission
            provider = await store.provider_for_feed(conn, feed_user, sub.ods_code)
            if not isinstance(provider, RejectionReason):
                feedback_id = uuid.uuid4()
                outbox = runtime.outbox(conn, sid)
                if not await store.insert_feedback(
                        conn, feedback_id=feedback_id, submission_id=sid,
                        ods_code=sub.ods_code, record_id=sub.record_id, kind=sub.kind,
                        version=sub.version, occurred_on=sub.occurred_on(), theme=sub.theme(),
                        content=parsed.content, redactions=parsed.redactions,
                        feed_user=feed_user, count_duplicate=not redelivered):
                    return "duplicate", sid
                await outbox.add(FeedbackAccepted(
                    feedback_id=feedback_id, submission_id=sid, provider=provider,
                    kind=sub.kind, provider_record_id=sub.record_id,
                    occurred_on=sub.occurred_on(), theme=sub.theme(), site_code=sub.site_code,
                    content=parsed.content))
                return "accepted", sid
            reasons = [provider]
            ods, kind, record = sub.ods_code, sub.kind, sub.record_id
        else:
            reasons, ods, kind, record = parsed, None, None, None
        if await store.quarantine(conn, submission_id=sid, feed_user=feed_user,
                                  routing_key=routing_key, message_id=message_id,
                                  content_type=content_type, body=body, reasons=reasons):
            await runtime.outbox(conn, sid).add(FeedbackRejected(
                submission_id=sid, feed_user=feed_user, ods_code=ods, kind=kind,
                provider_record_id=record, reasons=reasons))
            log.info("submission %s from %s rejected: %s", sid, feed_user,
                     "; ".join(f"{r.loc or '<message>'}: {r.msg}" for r in reasons))
        return "rejected", sid
