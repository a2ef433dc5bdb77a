"""The handler table's direct path: a subscriber's deliveries go straight to the consumer,
past FastStream's per-message path (context scopes, middlewares, FastDepends), yet still
under the subscriber's graceful-stop accounting, and nothing left unsettled on an error."""

from __future__ import annotations

import asyncio
from typing import Any

from faststream._internal.endpoint.subscriber.utils import MultiLock

from shared.settings import Settings
from shared.subscribing import HandlerTable, make_broker
from shared.topology import Topology


class FakeDelivery:
    """The aio-pika delivery attributes the parser and the direct path read."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers: dict[str, Any] = {"x-delivery-count": 0}
        self.reply_to = None
        self.content_type = "application/json"
        self.message_id = "m-1"
        self.correlation_id = None
        self.routing_key = "submission.complaint"
        self.locked = False
        self.nacked: list[bool] = []

    async def nack(self, requeue: bool = True) -> None:
        self.locked = True
        self.nacked.append(requeue)


class FakeConsumer:
    """Records what it is asked to settle; settles (locks) the delivery unless told not to."""

    def __init__(self, fail: Exception | None = None, settle: bool = True) -> None:
        self.settled: list[Any] = []
        self.fail = fail
        self.settles = settle

    async def settle(self, message: Any, sub: Any, handle: Any, failure: str,
                     **context: Any) -> None:
        self.settled.append((message, sub, await handle(), context))
        if self.settles:
            message.raw_message.locked = True
        if self.fail:
            raise self.fail


def table(consumer: FakeConsumer) -> tuple[HandlerTable, Any]:
    settings = Settings()
    topology = Topology("unit")
    broker = make_broker("intake", settings)
    handlers = HandlerTable("intake", settings, topology, broker, consumer)  # type: ignore[arg-type]
    sub = topology.submissions_subscription()

    async def handle(item: bytes) -> str:
        return f"admitted {item!r}"

    handlers.on_messages(sub, lambda m: m.body, handle, title="intake:submission",
                         description="submissions", context=lambda item: {"n": len(item)})
    (subscriber,) = broker.subscribers
    return handlers, subscriber


async def test_a_delivery_goes_straight_to_the_consumer() -> None:
    consumer = FakeConsumer()
    handlers, subscriber = table(consumer)
    subscriber.running = True
    raw = FakeDelivery(b"{}")
    await subscriber.consume(raw)
    ((message, sub, outcome, context),) = consumer.settled
    assert message.raw_message is raw and message.body == b"{}"
    assert message.message_id == "m-1" and message.headers["x-delivery-count"] == 0
    assert sub is handlers.subscriptions[0]
    assert outcome == "admitted b'{}'" and context == {"n": 2}
    assert raw.nacked == []  # the consumer settled it


async def test_an_error_after_settling_is_not_settled_again() -> None:
    consumer = FakeConsumer(fail=RuntimeError("handler failed"))
    _, subscriber = table(consumer)
    subscriber.running = True
    raw = FakeDelivery(b"{}")
    await subscriber.consume(raw)  # logged and nacked by the consumer, not raised
    assert len(consumer.settled) == 1 and raw.nacked == []


async def test_an_error_before_settling_returns_the_delivery_to_its_queue() -> None:
    consumer = FakeConsumer(fail=RuntimeError("lost connection"), settle=False)
    _, subscriber = table(consumer)
    subscriber.running = True
    raw = FakeDelivery(b"{}")
    await subscriber.consume(raw)
    assert raw.nacked == [True]


async def test_a_stopped_subscriber_takes_no_delivery() -> None:
    consumer = FakeConsumer()
    _, subscriber = table(consumer)
    subscriber.running = False
    raw = FakeDelivery(b"{}")
    await subscriber.consume(raw)
    assert consumer.settled == [] and raw.nacked == []  # unacked: back to its queue on close


async def test_the_graceful_stop_waits_for_a_delivery_in_hand() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    class Slow(FakeConsumer):
        async def settle(self, message: Any, sub: Any, handle: Any, failure: str,
                         **context: Any) -> None:
            entered.set()
            await release.wait()
            await super().settle(message, sub, handle, failure, **context)

    consumer = Slow()
    _, subscriber = table(consumer)
    subscriber.running = True
    subscriber.lock = MultiLock()
    task = asyncio.create_task(subscriber.consume(FakeDelivery(b"{}")))
    await asyncio.wait_for(entered.wait(), 10)
    assert subscriber.lock.qsize == 1  # counted in hand: broker.stop waits for it
    release.set()
    await task
    assert subscriber.lock.qsize == 0
