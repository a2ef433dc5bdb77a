"""Batched acknowledgements against the real broker: a run of handled deliveries takes one
ack frame, a delivery still in progress holds back nothing for long, and a nack or reject in
the middle of a run is never covered by the run's ``multiple`` ack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from shared.acks import AckBatcher

pytestmark = pytest.mark.integration

Incoming = aio_pika.abc.AbstractIncomingMessage


@pytest.fixture
async def queue(amqp: aio_pika.abc.AbstractRobustConnection,
                settings) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    name = f"{settings.namespace}.acks_{uuid.uuid4().hex[:8]}"
    channel = await amqp.channel()
    # A classic queue: on a quorum queue, acks sent just before the channel closes may be
    # applied after the close returned the deliveries (seen with plain aio-pika acks too),
    # so what is left there after the close would not tell which acks were sent.
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
    yield name
    await channel.queue_delete(name)
    await channel.close()


async def deliver(amqp: aio_pika.abc.AbstractRobustConnection, queue: str, n: int
                  ) -> tuple[aio_pika.abc.AbstractChannel, list[Incoming]]:
    """Publish n messages and take all n on a fresh channel, unacknowledged."""
    publisher = await amqp.channel()
    for i in range(n):
        await publisher.default_exchange.publish(aio_pika.Message(str(i).encode()), queue)
    await publisher.close()
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=n + 10)
    received: list[Incoming] = []
    got_all = asyncio.Event()

    async def on_message(message: Incoming) -> None:
        received.append(message)
        if len(received) == n:
            got_all.set()

    q = await channel.get_queue(queue)
    await q.consume(on_message)
    await asyncio.wait_for(got_all.wait(), 10)
    return channel, received


async def left_in(amqp: aio_pika.abc.AbstractRobustConnection, queue: str,
                  channel: aio_pika.abc.AbstractChannel) -> list[bytes]:
    """Close the consuming channel (its unacked deliveries return) and read what is left."""
    # A round trip on the channel first: the broker has read every ack sent before it.
    await channel.set_qos(prefetch_count=1)
    await channel.close()
    reader = await amqp.channel()
    q = await reader.get_queue(queue)
    left = []
    while (message := await q.get(no_ack=True, fail=False, timeout=5)) is not None:
        left.append(message.body)
    await reader.close()
    return sorted(left)


async def test_a_run_of_handled_deliveries_takes_one_ack_frame(amqp, queue) -> None:  # type: ignore[no-untyped-def]
    channel, received = await deliver(amqp, queue, 200)
    acks = AckBatcher()
    await asyncio.gather(*(acks.ack(m) for m in received))
    assert acks.acked == 200
    assert acks.frames == 1, "one basic.ack(multiple) for the whole run"
    assert await left_in(amqp, queue, channel) == [], "every delivery was acknowledged"


async def test_a_delivery_in_progress_delays_the_others_at_most_max_wait(amqp, queue) -> None:  # type: ignore[no-untyped-def]
    channel, received = await deliver(amqp, queue, 50)
    acks = AckBatcher(max_wait=0.05)
    slow = received[10]  # still in progress: the run stops below it
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(acks.ack(m) for m in received if m is not slow))
    waited = asyncio.get_running_loop().time() - started
    assert acks.acked == 49
    # 1..10 in one frame; 12..50 each alone, after max_wait
    assert acks.frames == 1 + 39
    assert waited >= 0.05
    assert await left_in(amqp, queue, channel) == [slow.body], \
        "only the delivery in progress returns to the queue"


async def test_a_nack_inside_a_run_is_not_covered_by_its_ack(amqp, queue) -> None:  # type: ignore[no-untyped-def]
    channel, received = await deliver(amqp, queue, 20)
    acks = AckBatcher()
    failed, poison = received[4], received[12]
    await acks.nack(failed, requeue=True)
    await acks.reject(poison)
    await asyncio.gather(*(acks.ack(m) for m in received if m not in (failed, poison)))
    assert acks.frames == 1, "the nack and the reject settled their own deliveries"
    assert not channel.is_closed, "no ack named a delivery that was already settled"
    left = await left_in(amqp, queue, channel)
    assert left == [failed.body], "the nacked one is back; the rejected one is gone"


async def test_deliveries_on_a_closed_channel_are_released_not_lost(amqp, queue) -> None:  # type: ignore[no-untyped-def]
    channel, received = await deliver(amqp, queue, 5)
    acks = AckBatcher()
    await channel.close()
    # The handlers return (their work is committed); the deliveries come back for another
    # consumer, whose inbox makes them no-ops.
    await asyncio.wait_for(asyncio.gather(*(acks.ack(m) for m in received)), 5)
    reader = await amqp.channel()
    q = await reader.declare_queue(queue, passive=True)
    assert q.declaration_result.message_count == 5
    await reader.close()
