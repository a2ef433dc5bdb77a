"""Queue and exchange names and arguments (shared/topology.py); no broker needed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.topology import Subscription, Topology


def all_names(t: Topology, subs: list[Subscription]) -> set[str]:
    names = {t.events_exchange, t.submissions_exchange, t.dead_letter_exchange,
             t.unrouted_exchange, t.unrouted_queue}
    for sub in subs:
        names |= {sub.queue, sub.dead_letter_queue}
    return names


def subscriptions(t: Topology) -> list[Subscription]:
    return [t.submissions_subscription(),
            t.event_subscription("quality_monitor", "feedback.accepted.v1"),
            t.event_subscription("escalation", "concern.raised.v1"),
            t.event_subscription("notification", "meeting.scheduled.v1")]


def test_exchange_names_are_namespaced() -> None:
    t = Topology("cw1")
    assert (t.events_exchange, t.submissions_exchange, t.dead_letter_exchange,
            t.unrouted_exchange, t.unrouted_queue) == (
        "cw1.events", "cw1.submissions", "cw1.dlx", "cw1.unrouted", "cw1.unrouted")


@pytest.mark.parametrize("sub, queue, exchange, routing_key", [
    (lambda t: t.event_subscription("escalation", "concern.raised.v1"),
     "cw1.escalation.concern.raised.v1", "cw1.events", "concern.raised.v1.#"),
    (lambda t: t.event_subscription("escalation", "feedback.accepted.v1", "insight_visit"),
     "cw1.escalation.feedback.accepted.v1", "cw1.events", "feedback.accepted.v1.insight_visit"),
    (lambda t: t.submissions_subscription(), "cw1.intake.submissions", "cw1.intake.routine",
     ""),
    (lambda t: t.submission_lanes({"complaint", "gp_alert"})[0],
     "cw1.intake.submissions.urgent", "cw1.intake.lanes", "submission.complaint.*"),
    (lambda t: t.subscription("notification", "cw1.events", "meeting.#", "meetings"),
     "cw1.notification.meetings", "cw1.events", "meeting.#"),
])
def test_subscription_names(sub: Callable[[Topology], Subscription], queue: str, exchange: str,
                            routing_key: str) -> None:
    s = sub(Topology("cw1"))
    assert (s.queue, s.exchange, s.routing_key) == (queue, exchange, routing_key)
    assert s.dead_letter_queue == queue + ".dlq"


@pytest.mark.parametrize("delivery_limit", [3, 5])
def test_queue_arguments(delivery_limit: int) -> None:
    t = Topology("cw1", delivery_limit=delivery_limit)
    for s in subscriptions(t):
        assert s.arguments["x-queue-type"] == "quorum"
        assert s.arguments["x-dead-letter-exchange"] == "cw1.dlx"
        assert s.arguments["x-dead-letter-routing-key"] == s.queue
        assert s.arguments["x-delivery-limit"] == delivery_limit
        assert s.arguments["x-dead-letter-strategy"] == "at-least-once"
        assert s.arguments["x-overflow"] == "reject-publish"


def test_rabbit_queue_carries_the_same_arguments() -> None:
    t = Topology("cw1")
    s = t.event_subscription("escalation", "concern.raised.v1")
    queue = t.rabbit_queue(s)
    assert queue.name == s.queue
    assert queue.durable
    assert queue.arguments is not None
    for key, value in s.arguments.items():
        assert queue.arguments[key] == value


def test_only_the_events_exchange_has_an_alternate_exchange() -> None:
    t = Topology("cw1")
    assert t.rabbit_exchange(t.events_exchange).arguments == {"alternate-exchange": "cw1.unrouted"}
    assert not t.rabbit_exchange(t.submissions_exchange).arguments


def test_two_namespaces_share_no_name() -> None:
    a, b = Topology("cwtest_a"), Topology("cwtest_b")
    names_a, names_b = all_names(a, subscriptions(a)), all_names(b, subscriptions(b))
    assert names_a.isdisjoint(names_b)
    assert all(n.startswith("cwtest_a.") for n in names_a)
    assert all(n.startswith("cwtest_b.") for n in names_b)


def test_names_within_a_namespace_are_unique() -> None:
    t = Topology("cw1")
    subs = subscriptions(t)
    queues = [s.queue for s in subs] + [s.dead_letter_queue for s in subs]
    assert len(set(queues)) == len(queues)


def test_intake_lanes_take_the_urgent_kinds_apart_and_everything_else_to_the_routine_queue(
        ) -> None:
    t = Topology("cw1")
    urgent, routine = t.submission_lanes({"gp_alert", "complaint"})
    assert urgent.routing_keys == ("submission.complaint.*", "submission.gp_alert.*")
    assert urgent.lane == "urgent" and routine.lane == ""
    # The routine queue is fed by the lanes exchange's alternate exchange: unknown kinds and
    # odd routing keys still reach intake, to be quarantined with a reason.
    assert t.rabbit_exchange(t.intake_lanes_exchange).arguments == {
        "alternate-exchange": t.intake_routine_exchange}
    assert routine.retired_bindings == (("cw1.submissions", "submission.#"),)
