"""Verified senders (issue 14, item 2), against the real broker: a service's broker user may
write only the routing keys of the events it owns (topic permissions), may not put another
user's name in ``user_id`` (the broker checks it), and an event that still gets through from
someone else (a user with broad permissions) is dead-lettered by its consumer, with the
reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial

import aio_pika
import aiormq
import asyncpg
import pytest

from services.quality_monitor.app import build
from shared.events import ConcernClosed
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.topology import owned_keys_pattern
from tests.helpers import eventually
from tests.integration.test_escalation import provider
from tests.security.attacks import Attack
from tests.security.conftest import BrokerUsers, isolated


@pytest.fixture(scope="module")
async def monitor(settings: Settings) -> AsyncIterator[ServiceRuntime]:
    """quality_monitor, the consumer of concern.closed.v1 (a forged one resolves a concern
    and so cancels its meeting), in a stack of its own."""
    async with isolated(settings, "snd") as s:
        runtime = build(s)
        await runtime.start()
        yield runtime
        await runtime.stop()


def closed_event() -> tuple[bytes, str, str]:
    event = ConcernClosed(concern_id=uuid.uuid4(), provider=provider("RJ1"),
                          closed_by="attacker", reason="forged", closed_at=datetime.now(UTC))
    envelope = event.envelope("carewatch/escalation")
    return envelope.to_bytes(), str(envelope.id), event.routing_key()


async def publish_as(amqp_url: str, user: str, password: str, exchange: str, body: bytes,
                     message_id: str, routing_key: str, user_id: str | None) -> str | None:
    """Publish once, confirmed; returns the broker's refusal, or None if it took it."""
    host = amqp_url.split("@", 1)[1]
    connection = await aio_pika.connect(f"amqp://{user}:{password}@{host}")
    try:
        channel = await connection.channel(publisher_confirms=True)
        ex = await channel.get_exchange(exchange, ensure=False)
        await ex.publish(aio_pika.Message(body, message_id=message_id, user_id=user_id,
                                          content_type="application/json"), routing_key)
        return None
    except (aiormq.exceptions.ChannelClosed, aio_pika.exceptions.AMQPError) as exc:
        return repr(exc)
    finally:
        await connection.close()


async def test_a_service_cannot_publish_another_services_events(
        monitor: ServiceRuntime, broker_users: BrokerUsers,
        attack: Callable[[str], Attack]) -> None:
    a = attack("notification's broker user publishing concern.closed.v1")
    ns = monitor.settings.namespace
    events = f"{ns}.events"
    # notification's permissions, as deploy/rabbitmq/definitions.json gives them.
    name, password = await broker_users.add(
        "notification", configure=rf"^{ns}\.(notification\..+|events|dlx|unrouted)$",
        write=rf"^{ns}\.(notification\..+|events|dlx|unrouted)$",
        read=rf"^{ns}\.(notification\..+|events|dlx|unrouted)$",
        topic={events: (owned_keys_pattern("notification"), ".*")})
    pool: asyncpg.Pool = monitor.pool
    for user_id in (name, "guest", "carewatch-escalation", None):
        body, message_id, key = closed_event()
        refusal = await publish_as(monitor.settings.amqp_url, name, password, events, body,
                                   message_id, key, user_id)
        handled = await pool.fetchval("SELECT true FROM monitor.inbox WHERE event_id = $1",
                                      uuid.UUID(message_id))
        a.record(refused=refusal is not None and ("ACCESS_REFUSED" in refusal
                                                  or "PRECONDITION_FAILED" in refusal),
                 leaked=refusal is None or bool(handled), what=f"user_id={user_id}: {refusal}")
    # Its own event type goes (the permissions are not simply closed).
    assert await publish_as(monitor.settings.amqp_url, name, password, events, b"{}",
                            uuid.uuid4().hex, "notification.failed.v1", name) is None
    a.finish()


async def test_an_event_from_anyone_but_its_owner_is_dead_lettered_with_the_reason(
        monitor: ServiceRuntime, broker_users: BrokerUsers,
        attack: Callable[[str], Attack]) -> None:
    a = attack("event from a broker user that does not own its type")
    ns = monitor.settings.namespace
    events = f"{ns}.events"
    # A user the broker lets write anything (as with the old, empty topic permissions).
    name, password = await broker_users.add("broad", configure="^$", write=".*", read="^$")
    pool: asyncpg.Pool = monitor.pool
    for _ in range(3):
        body, message_id, key = closed_event()
        refusal = await publish_as(monitor.settings.amqp_url, name, password, events, body,
                                   message_id, key, name)
        assert refusal is None, refusal  # the broker takes it: the consumer must refuse it
        error = await eventually(partial(
            pool.fetchval, "SELECT error FROM monitor.delivery_failures WHERE message_id = $1",
            message_id),
            what="the consumer's verdict")
        handled = await pool.fetchval("SELECT true FROM monitor.inbox WHERE event_id = $1",
                                      uuid.UUID(message_id))
        a.record(refused="sender: concern.closed.v1 is published by escalation" in error,
                 leaked=bool(handled), what=error)
    # Dead-lettered (kept, with the reason above), not dropped.
    dlq = next(s.dead_letter_queue for s in monitor.subscriptions
               if s.routing_key.startswith("concern.closed.v1"))
    connection = await aio_pika.connect(monitor.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for _ in range(50):
            depth = (await channel.declare_queue(dlq, passive=True)).declaration_result
            if (depth.message_count or 0) >= 3:
                break
            await asyncio.sleep(0.1)
        assert (depth.message_count or 0) >= 3
    a.finish()
