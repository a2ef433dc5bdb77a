"""The handler table: a service's broker, and each queue it consumes with its handler.

A service module registers its handlers here through its runtime (``on_event``,
``on_batch_event``, ``on_messages``: one visible table per service); each becomes a FastStream
subscriber whose deliveries go straight to the consumer (shared/consuming.py), past
FastStream's per-message path (``HandlerTable._register``). The queues registered
are the service's ``subscriptions``: what the lifecycle declares at start (shared/lifecycle.py)
and the operator's view reads the dead letters of (shared/operations.py).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from aio_pika import IncomingMessage
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage
from faststream.rabbit.parser import AioPikaParser
from faststream.rabbit.subscriber import RabbitSubscriber

from shared.consuming import BatchEventHandler, Consumer, E, EventHandler
from shared.groupcommit import Batch, GroupCommit
from shared.outbox import Outbox
from shared.settings import Settings
from shared.topology import Subscription, Topology

log = logging.getLogger(__name__)

M = TypeVar("M")  # a message as a handler takes it


async def raw_body(message: RabbitMessage) -> bytes:
    """Hand handlers the body as received: carewatch parses and validates it itself, so that
    a malformed body is quarantined or dead-lettered with a reason, never dropped earlier."""
    return message.body


def make_broker(name: str, settings: Settings) -> RabbitBroker:
    """The service's broker: publisher confirms, returned messages raising, a handler's error
    requeued, bodies handed over raw."""
    return RabbitBroker(
        settings.amqp_url,
        default_channel=Channel(
            prefetch_count=settings.prefetch_count,
            publisher_confirms=True,
            on_return_raises=True,
        ),
        graceful_timeout=settings.graceful_timeout,
        # A handler error requeues; the quorum queue's delivery limit then dead-letters.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=raw_body,
        app_id=f"carewatch-{name}",
        logger=logging.getLogger(f"carewatch.{name}.broker"),
        # Per-message lines cost much of a hop's throughput (BENCHMARKS.md): keep them at
        # DEBUG.
        log_level=logging.DEBUG,
    )


def _described(text: str, sub: Subscription) -> str:
    """The handler's description, and for a queue with several bindings, all of them (the
    AsyncAPI address shows the first only)."""
    if not sub.extra_routing_keys:
        return inspect.cleandoc(text)  # as Python 3.13+ compiles docstrings, on every version
    return (f"{inspect.cleandoc(text)}\n\nThe {sub.lane or 'routine'} lane: queue `{sub.queue}`, bound to"
            f" {', '.join(f'`{k}`' for k in sub.routing_keys)}.")


class HandlerTable:
    """The queues one service consumes, each a subscriber of its broker."""

    def __init__(self, name: str, settings: Settings, topology: Topology, broker: RabbitBroker,
                 consumer: Consumer) -> None:
        self.name = name
        self.settings = settings
        self.topology = topology
        self.broker = broker
        self.consumer = consumer
        self.subscriptions: list[Subscription] = []

    def add_subscription(self, sub: Subscription) -> Subscription:
        self.subscriptions.append(sub)
        return sub

    def on_event(self, event_cls: type[E], handler: EventHandler[E], *,
                 description: str | None = None, suffix: str = "#") -> None:
        """Consume ``event_cls`` with a handler of the connection (see ``on_batch_event``)."""
        async def on_batch(batch: Batch, event: E, outbox: Outbox) -> None:
            await handler(batch.conn, event, outbox)

        self.on_batch_event(event_cls, on_batch, description=description or handler.__doc__,
                            suffix=suffix)

    def on_batch_event(self, event_cls: type[E], handler: BatchEventHandler[E], *,
                       description: str | None = None, suffix: str = "#",
                       channel: Channel | None = None) -> None:
        """Consume ``event_cls`` from this service's own quorum queue, once per event id.

        ``suffix`` narrows the binding to ``<type>.<suffix>`` (events whose routing key
        carries a suffix, such as ``feedback.accepted.v1.<kind>``). Consumed whole, an event
        with an urgent lane (``urgent_suffixes``) gets two queues, each with its own
        consumer and its own group commit, so an urgent event never waits behind a batch of
        routine ones. The handler takes its group commit's ``Batch``. ``channel``: a
        channel of its own (its prefetch), for events that each carry many items."""
        if suffix == "#" and event_cls.urgent_suffixes:
            urgent, routine = self.topology.event_lanes(
                self.name, event_cls.event_type, event_cls.routing_suffixes,
                event_cls.urgent_suffixes)
            self._subscribe(event_cls, handler, urgent, description,
                            self.consumer.urgent_commits,
                            Channel(prefetch_count=self.settings.prefetch_count))
            self._subscribe(event_cls, handler, routine, description, self.consumer.commits)
        else:
            self._subscribe(event_cls, handler, self.topology.event_subscription(
                self.name, event_cls.event_type, suffix), description, self.consumer.commits,
                channel)

    def _subscribe(self, event_cls: type[E], handler: BatchEventHandler[E], sub: Subscription,
                   description: str | None, commits: GroupCommit,
                   channel: Channel | None = None) -> None:
        self.add_subscription(sub)
        consumer = self.consumer

        async def handle(message: RabbitMessage) -> None:
            await consumer.consume_event(message, sub, event_cls, handler, commits)

        lane = f".{sub.lane}" if sub.lane else ""
        self._register(handle, f"on_{(event_cls.event_type + lane).replace('.', '_')}",
                       self.broker.subscriber(
                           self.topology.rabbit_queue(sub),
                           self.topology.rabbit_exchange(sub.exchange),
                           channel=channel,
                           title=f"{self.name}:{event_cls.event_type}{lane}",
                           description=_described(description or handler.__doc__ or "", sub),
                           # Events never get a framework reply, whatever reply_to they carry.
                           no_reply=True,
                       ))

    def on_messages(self, sub: Subscription, decode: Callable[[RabbitMessage], M],
                    handle: Callable[[M], Awaitable[str]], *, title: str, description: str,
                    context: Callable[[M], dict[str, Any]] = lambda _: {},
                    channel: Channel | None = None) -> None:
        """Consume ``sub``'s queue of messages that are not carewatch events (a provider
        feed's submissions): each message is decoded, handled (``handle`` returns the outcome
        counted) and settled like an event (``Consumer.settle``), within its ``context`` in
        the logs. A framework reply is never sent."""
        self.add_subscription(sub)
        consumer = self.consumer

        async def handle_message(message: RabbitMessage) -> None:
            decoded = decode(message)
            await consumer.settle(message, sub, lambda: handle(decoded),
                                  f"{self.name} failed on message {message.message_id}",
                                  **context(decoded))

        self._register(handle_message, f"on_{sub.queue.replace('.', '_').replace('-', '_')}",
                       self.broker.subscriber(
                           self.topology.rabbit_queue(sub),
                           self.topology.rabbit_exchange(sub.exchange),
                           channel=channel, title=title, description=description,
                           # Replies (if any) go through the outbox; no empty framework reply.
                           no_reply=True,
                       ))

    def _register(self, handle: Callable[[RabbitMessage], Awaitable[None]], name: str,
                  subscriber: RabbitSubscriber) -> None:
        """Make ``handle`` the consumer of ``subscriber``'s queue.

        The subscriber stays FastStream's: it declares and binds the queue, consumes it on
        its channel (prefetch), is documented in the AsyncAPI document, and its broker stops
        it gracefully (no new delivery taken, in-flight ones awaited). Its deliveries,
        though, skip FastStream's per-message path (context scopes, middlewares, FastDepends
        and its acknowledgement, a fifth of the busiest consumer's CPU: BENCHMARKS.md): the
        consumer (shared/consuming.py) settles every delivery itself, so ``direct`` hands
        each straight to ``handle``, as a ``RabbitMessage``."""
        async def consume() -> None:
            # Called through FastStream only where its own path runs (a test client). The
            # message comes from the context rather than as an injected parameter:
            # FastStream resolves an injected message in a worker thread, a hop per message.
            await handle(self.broker.context.get_local("message"))

        consume.__name__ = name
        subscriber(consume)
        parse = AioPikaParser().parse_message

        async def direct(raw: IncomingMessage) -> None:
            if not subscriber.running:  # stopping: the delivery returns to its queue unacked
                return
            with subscriber.lock:  # the broker's graceful stop waits for the deliveries in hand
                message = cast("RabbitMessage", await parse(raw))
                try:
                    await handle(message)
                except Exception:
                    # Settled and logged by the consumer (acked, nacked or dead-lettered);
                    # anything else is returned to its queue, as FastStream's NACK_ON_ERROR.
                    if not raw.locked:
                        log.exception("%s: %s failed before it was settled", self.name, name)
                        with contextlib.suppress(Exception):
                            await raw.nack(requeue=True)

        # RabbitSubscriber.start consumes its queue with ``self.consume``.
        setattr(subscriber, "consume", direct)  # noqa: B010

