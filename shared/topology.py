"""Exchanges, queues and bindings: one definition used by the services, the CLI and tests.

Every name starts with the configured namespace, so isolated stacks (a test session, a
second environment) share one broker without colliding.

- ``{ns}.events``       topic exchange for domain events; routing key = event type.
- ``{ns}.submissions``  topic exchange for provider submissions (``submission.<kind>.v<n>``).
- ``{ns}.dlx``          direct dead-letter exchange; each queue dead-letters with its own name
                        as routing key into ``<queue>.dlq``.
- ``{ns}.unrouted``     alternate exchange of ``{ns}.events``: an event nobody subscribes to
                        is kept in the ``{ns}.unrouted`` queue instead of vanishing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import aio_pika
from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

URGENT_SUFFIX = ".urgent"

# Who publishes each event type: the one place that says it. The broker's topic permissions
# (deploy/rabbitmq/definitions.json, from ``topic_permissions``) let each service's broker
# user write only its own routing keys, and every consumer dead-letters an event whose
# broker-validated ``user_id`` is not its owner's (``sender_refusal``).
EVENT_OWNERS: dict[str, str] = {
    "feedback.accepted.v1": "intake",
    "feedback.accepted_batch.v1": "intake",
    "feedback.rejected.v1": "intake",
    "concern.raised.v1": "quality_monitor",
    "concern.updated.v1": "quality_monitor",  # no longer published (v2); still accepted
    "concern.updated.v2": "quality_monitor",
    "concern.resolved.v1": "quality_monitor",
    "report.published.v1": "quality_monitor",
    "meeting.scheduled.v1": "escalation",
    "meeting.rescheduled.v1": "escalation",
    "meeting.cancelled.v1": "escalation",
    "action.due_soon.v1": "escalation",
    "action.overdue.v1": "escalation",
    "concern.escalated.v1": "escalation",
    "visit.scheduled.v1": "escalation",
    "concern.closed.v1": "escalation",
    "meeting.slot_proposed.v1": "escalation",
    "notification.failed.v1": "notification",
    "meeting.reply.v1": "notification",
}
# The operator's broker user (``carewatch dlq replay`` republishes as it) may send any event.
ADMIN = "admin"


def broker_user(service: str, broker_users: dict[str, str]) -> str:
    """The RabbitMQ user a service (or ``admin``) connects and publishes as:
    ``broker_users[service]``, else ``broker_users["*"]`` (one user for all, in development),
    else ``carewatch-<service>`` (deploy/rabbitmq/definitions.json)."""
    return broker_users.get(service) or broker_users.get("*") or \
        f"carewatch-{service.replace('_', '-')}"


def sender_refusal(event_type: str, user_id: str | None,
                   broker_users: dict[str, str]) -> str | None:
    """Why an event may not be taken from this sender (None: it may): only the broker user
    of the event type's owner, or the operator's, publishes it."""
    owner = EVENT_OWNERS.get(event_type)
    if owner is None:
        return f"sender: no service owns event type {event_type!r}"
    allowed = {broker_user(owner, broker_users), broker_user(ADMIN, broker_users)}
    if user_id not in allowed:
        return (f"sender: {event_type} is published by {owner} (broker user"
                f" {broker_user(owner, broker_users)!r}); this one came from"
                f" {user_id!r}" if user_id else
                f"sender: {event_type} is published by {owner}; this one has no user_id")
    return None


# Services that consume events but own none: their topic permission writes nothing ("^$").
PUBLISHES_NOTHING = ("workspace",)


def owned_keys_pattern(service: str) -> str:
    """The routing keys a service may write on the events exchange (a regex for RabbitMQ's
    topic permissions): its event types, with or without a routing suffix."""
    types = sorted(t for t, owner in EVENT_OWNERS.items() if owner == service)
    if not types:
        return "^$"
    return "^(" + "|".join(t.replace(".", "\\.") for t in types) + ")(\\..+)?$"


def topic_permissions(namespace: str, vhost: str = "/") -> list[dict[str, str]]:
    """The topic permissions of deploy/rabbitmq/definitions.json: each service writes only
    the routing keys of the events it owns on the events exchange."""
    services = sorted(set(EVENT_OWNERS.values()) | set(PUBLISHES_NOTHING))
    return [{"user": broker_user(service, {}), "vhost": vhost,
             "exchange": f"{namespace}.events", "write": owned_keys_pattern(service),
             "read": ".*"} for service in services]


@dataclass(frozen=True)
class Subscription:
    """A service's durable quorum queue for one routing key on one exchange."""

    service: str
    exchange: str
    routing_key: str
    queue: str
    arguments: dict[str, Any] = field(default_factory=dict)
    # Further bindings of the same queue on the same exchange (a lane's routing keys).
    extra_routing_keys: tuple[str, ...] = ()
    # Bindings (exchange, routing key) an earlier version of carewatch made for this queue:
    # removed when it is declared.
    retired_bindings: tuple[tuple[str, str], ...] = ()

    @property
    def routing_keys(self) -> tuple[str, ...]:
        return (self.routing_key, *self.extra_routing_keys)

    @property
    def lane(self) -> str:
        """``urgent`` for an urgent lane's queue (see ``Topology.event_lanes``), else ``""``."""
        return "urgent" if self.queue.endswith(URGENT_SUFFIX) else ""

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"


class Topology:
    """Names and arguments derived from one namespace."""

    def __init__(self, namespace: str, delivery_limit: int = 5) -> None:
        self.namespace = namespace
        self.delivery_limit = delivery_limit
        self.events_exchange = f"{namespace}.events"
        self.submissions_exchange = f"{namespace}.submissions"
        self.dead_letter_exchange = f"{namespace}.dlx"
        self.unrouted_exchange = f"{namespace}.unrouted"
        self.unrouted_queue = f"{namespace}.unrouted"
        # intake's lanes: every submission goes on from the submissions exchange to the
        # lanes exchange; the urgent kinds' bindings there take theirs, and whatever no
        # binding takes (routine kinds, and kinds nobody knows) goes to the routine one.
        self.intake_lanes_exchange = f"{namespace}.intake.lanes"
        self.intake_routine_exchange = f"{namespace}.intake.routine"

    # -- definitions -------------------------------------------------------------------
    def subscription(self, service: str, exchange: str, routing_key: str,
                     purpose: str | None = None) -> Subscription:
        name = f"{self.namespace}.{service}.{purpose or routing_key}"
        arguments = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": name,
            # A poison message is dead-lettered after this many deliveries, never loops.
            "x-delivery-limit": self.delivery_limit,
            # Dead-letter at least once: the message stays until the DLQ has confirmed it.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        return Subscription(service, exchange, routing_key, name, arguments)

    def event_subscription(self, service: str, event_type: str,
                           suffix: str = "#") -> Subscription:
        """The service's queue for ``event_type``, bound to ``<type>.#`` (every routing-key
        suffix, and none) or to ``<type>.<suffix>`` alone."""
        return self.subscription(service, self.events_exchange, f"{event_type}.{suffix}",
                                 event_type)

    def event_lanes(self, service: str, event_type: str, suffixes: tuple[str, ...],
                    urgent: frozenset[str]) -> tuple[Subscription, Subscription]:
        """Two queues for an event type whose routing keys carry a suffix: the urgent lane
        (``<type>.urgent``, bound to ``<type>.<s>`` for each urgent suffix) and the routine
        one (``<type>``, bound to the bare type and to every other suffix). A consumer
        serves the urgent queue on its own, so those events never wait behind the rest.

        Before the lanes, the routine queue (the same name) was bound to ``<type>.#``: that
        binding is retired, or urgent events would reach both queues."""
        routine = self.subscription(service, self.events_exchange, event_type, event_type)
        routine = replace(routine, extra_routing_keys=tuple(
            f"{event_type}.{s}" for s in suffixes if s not in urgent),
            retired_bindings=((self.events_exchange, f"{event_type}.#"),))
        keys = [f"{event_type}.{s}" for s in suffixes if s in urgent]
        lane = self.subscription(service, self.events_exchange, keys[0],
                                 f"{event_type}{URGENT_SUFFIX}")
        return replace(lane, extra_routing_keys=tuple(keys[1:])), routine

    def submissions_subscription(self) -> Subscription:
        """intake's routine queue: every submission that is not of an urgent kind, unknown
        kinds and odd routing keys included (they are quarantined with a reason)."""
        return replace(
            self.subscription("intake", self.intake_routine_exchange, "", "submissions"),
            # Before the lanes, the queue took every submission straight from the exchange.
            retired_bindings=((self.submissions_exchange, "submission.#"),))

    def submission_lanes(self, urgent_kinds: Iterable[str]) -> tuple[Subscription, Subscription]:
        """intake's urgent lane (``submissions.urgent``, bound to ``submission.<kind>.*``
        for each urgent kind) and its routine queue (the rest)."""
        keys = [f"submission.{kind}.*" for kind in sorted(urgent_kinds)]
        lane = self.subscription("intake", self.intake_lanes_exchange, keys[0],
                                 f"submissions{URGENT_SUFFIX}")
        return replace(lane, extra_routing_keys=tuple(keys[1:])), self.submissions_subscription()

    # -- FastStream objects -------------------------------------------------------------
    def rabbit_exchange(self, name: str) -> RabbitExchange:
        if name == self.events_exchange:
            return RabbitExchange(name, type=ExchangeType.TOPIC, durable=True,
                                  arguments={"alternate-exchange": self.unrouted_exchange})
        if name == self.intake_lanes_exchange:
            return RabbitExchange(name, type=ExchangeType.TOPIC, durable=True,
                                  arguments={"alternate-exchange": self.intake_routine_exchange})
        if name == self.intake_routine_exchange:
            return RabbitExchange(name, type=ExchangeType.FANOUT, durable=True)
        return RabbitExchange(name, type=ExchangeType.TOPIC, durable=True)

    def rabbit_queue(self, sub: Subscription) -> RabbitQueue:
        return RabbitQueue(  # type: ignore[call-overload, no-any-return]
            sub.queue,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments=sub.arguments,
            routing_key=sub.routing_key,
        )

    # -- declaration --------------------------------------------------------------------
    async def declare(self, channel: aio_pika.abc.AbstractChannel,
                      subscriptions: list[Subscription]) -> None:
        """Declare exchanges, the dead-letter plumbing and the given subscriptions
        (idempotent; arguments must match what the services declare)."""
        unrouted_x = await channel.declare_exchange(
            self.unrouted_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        unrouted_q = await channel.declare_queue(
            self.unrouted_queue, durable=True, arguments={"x-queue-type": "quorum"})
        await unrouted_q.bind(unrouted_x)
        await channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True,
            arguments={"alternate-exchange": self.unrouted_exchange})
        await channel.declare_exchange(
            self.submissions_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        if any(sub.exchange in (self.intake_lanes_exchange, self.intake_routine_exchange)
               for sub in subscriptions):  # only intake may declare its lanes
            await channel.declare_exchange(
                self.intake_routine_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
            lanes = await channel.declare_exchange(
                self.intake_lanes_exchange, aio_pika.ExchangeType.TOPIC, durable=True,
                arguments={"alternate-exchange": self.intake_routine_exchange})
            await lanes.bind(self.submissions_exchange, routing_key="#")
        for sub in subscriptions:
            dlq = await channel.declare_queue(
                sub.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
            await dlq.bind(dlx, routing_key=sub.queue)
            queue = await channel.declare_queue(sub.queue, durable=True, arguments=sub.arguments)
            for routing_key in sub.routing_keys:
                await queue.bind(sub.exchange, routing_key=routing_key)
            # After the new bindings, so no message in between is missed: one in between
            # may reach both of a pair of lanes (the inbox, or intake's receipts, then
            # tell the second copy), never neither.
            for exchange, routing_key in sub.retired_bindings:  # a no-op where not bound
                await queue.unbind(exchange, routing_key=routing_key)

    async def delete_all(self, channel: aio_pika.abc.AbstractChannel,
                         subscriptions: list[Subscription]) -> None:
        """Remove everything of this namespace (tests clean up with it)."""
        for sub in subscriptions:
            for name in (sub.queue, sub.dead_letter_queue):
                await channel.queue_delete(name)
        await channel.queue_delete(self.unrouted_queue)
        for name in (self.events_exchange, self.intake_lanes_exchange,
                     self.intake_routine_exchange, self.submissions_exchange,
                     self.dead_letter_exchange, self.unrouted_exchange):
            await channel.exchange_delete(name)
