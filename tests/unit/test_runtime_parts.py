"""The service runtime as the parts it composes (shared/runtime.py over subscribing,
consuming, lifecycle, operations and metrics), without a broker or a database: the parts share
one handler table and one pool, readiness reads the lifecycle, and the consumer settles a
delivery the one way (routine work waits for every consumer; handled: acked and counted;
failed: recorded, nacked and counted; unreadable: recorded, rejected and counted).

The same paths against RabbitMQ and PostgreSQL: tests/integration/test_acks.py,
test_lanes.py, test_outbox_relay.py and every service's integration tests."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faststream.exceptions import RejectMessage

from shared.events import ConcernClosed
from shared.groupcommit import UrgentFirst
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.topology import URGENT_SUFFIX, Subscription
from tests.unit.builders import provider

NAME = "unit_service"


class FakePool:
    """What the consumer and the operator's view ask of a pool: statements kept."""

    def __init__(self) -> None:
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.executed.append((sql, args))
        return "INSERT 0 1"

    async def fetchval(self, sql: str, *args: Any, timeout: float | None = None) -> Any:
        return True


class FakeAcks:
    """The consumer's acks (shared/acks.py), in the order they were given."""

    def __init__(self) -> None:
        self.given: list[tuple[str, object]] = []

    async def ack(self, message: object) -> None:
        self.given.append(("ack", message))

    async def nack(self, message: object) -> None:
        self.given.append(("nack", message))

    async def reject(self, message: object) -> None:
        self.given.append(("reject", message))


@pytest.fixture
def runtime() -> ServiceRuntime:
    built = ServiceRuntime(NAME, "unit", Settings(), Path(__file__).parent)
    built._pool = FakePool()  # type: ignore[assignment]
    built.consumer.acks = FakeAcks()  # type: ignore[assignment]
    return built


def delivery(body: bytes = b"{}", redelivered: int | None = None) -> Any:
    headers = {} if redelivered is None else {"x-delivery-count": redelivered}
    return SimpleNamespace(body=body, headers=headers, message_id=f"m-{uuid.uuid4().hex[:8]}",
                           raw_message=SimpleNamespace(user_id=None))


def routine(queue: str = "unit.routine") -> Subscription:
    return Subscription(NAME, "unit.events", "x.v1.#", queue)


def counted(runtime: ServiceRuntime, queue: str, outcome: str) -> float:
    return runtime.metrics.registry.get_sample_value(
        "carewatch_messages_total", {"service": NAME, "queue": queue, "outcome": outcome}) or 0.0


def given(runtime: ServiceRuntime) -> list[tuple[str, object]]:
    acks = runtime.consumer.acks
    assert isinstance(acks, FakeAcks)
    return acks.given


def test_the_parts_share_the_handler_table_and_the_pool(runtime: ServiceRuntime) -> None:
    async def on_closed(conn: object, event: ConcernClosed, outbox: object) -> None:
        """Closed."""

    runtime.on_event(ConcernClosed, on_closed)  # type: ignore[arg-type]
    [sub] = runtime.subscriptions
    assert sub.routing_key == "concern.closed.v1.#"
    # One list, as the handler table grows: the lifecycle declares it, operations read it.
    for part in (runtime.handlers, runtime.lifecycle, runtime.operations):
        assert part.subscriptions is runtime.subscriptions
    assert runtime.pool is runtime.lifecycle.pool is runtime.consumer._pool()
    assert runtime.operations._pool() is runtime.pool
    runtime._pool = None
    with pytest.raises(RuntimeError, match="pool is not open"):
        runtime.consumer._pool()


async def test_readiness_reads_the_lifecycle(runtime: ServiceRuntime) -> None:
    async def down(timeout: float | None = None) -> bool:
        raise ConnectionError("no broker")

    runtime.broker.ping = down  # type: ignore[method-assign]
    assert await runtime.operations.readiness() == {
        "consuming": False, "database": True, "broker": False, "relay": False}
    runtime.lifecycle.ready = True
    assert (await runtime.operations.readiness())["consuming"] is True


async def test_a_handled_delivery_is_acked_and_counted(runtime: ServiceRuntime) -> None:
    runtime.consumer.all_started()
    message = delivery()

    async def handle() -> str:
        assert given(runtime) == []  # acked after the work, never before
        return "duplicate"

    await runtime.consumer.settle(message, routine(), handle, "failed")
    assert given(runtime) == [("ack", message.raw_message)]
    assert counted(runtime, "unit.routine", "duplicate") == 1
    assert counted(runtime, "unit.routine", "handled") == 0
    assert runtime.metrics.registry.get_sample_value(
        "carewatch_handler_seconds_count", {"service": NAME, "queue": "unit.routine"}) == 1


async def test_a_failed_delivery_is_recorded_then_nacked_and_counted(
        runtime: ServiceRuntime) -> None:
    runtime.consumer.all_started()
    message = delivery(redelivered=2)

    async def handle() -> str:
        raise ValueError("the handler broke")

    with pytest.raises(ValueError, match="the handler broke"):
        await runtime.consumer.settle(message, routine(), handle, "failed")
    assert given(runtime) == [("nack", message.raw_message)]
    pool = runtime.pool
    assert isinstance(pool, FakePool)
    [(sql, args)] = pool.executed
    assert "delivery_failures" in sql
    assert args == (message.message_id, "unit.routine", 3, "ValueError('the handler broke')")
    assert counted(runtime, "unit.routine", "failed") == 1


async def test_routine_work_waits_for_every_consumer_and_the_urgent_lane_never(
        runtime: ServiceRuntime) -> None:
    ran: list[str] = []

    def work(lane: str) -> Any:
        async def handle() -> str:
            ran.append(lane)
            return "handled"
        return handle

    waiting = asyncio.create_task(
        runtime.consumer.settle(delivery(), routine(), work("routine"), "failed"))
    urgent = Subscription(NAME, "unit.events", "x.v1.serious", f"unit.x{URGENT_SUFFIX}")
    await runtime.consumer.settle(delivery(), urgent, work("urgent"), "failed")
    await asyncio.sleep(0)
    assert ran == ["urgent"] and not waiting.done()
    runtime.consumer.all_started()
    await asyncio.wait_for(waiting, 5)
    assert ran == ["urgent", "routine"]


async def test_an_urgent_delivery_is_in_hand_until_settled_and_a_routine_one_never(
        runtime: ServiceRuntime) -> None:
    """Routine batches give way while an urgent delivery is in hand (UrgentFirst): from its
    handling until it is settled, whatever its outcome."""
    runtime.consumer.all_started()
    seen: list[tuple[str, bool]] = []

    def work(lane: str, fail: bool = False) -> Any:
        async def handle() -> str:
            seen.append((lane, runtime.consumer.priority.busy))
            if fail:
                raise RuntimeError("handler failed")
            return "handled"
        return handle

    urgent = Subscription(NAME, "unit.events", "x.v1.serious", f"unit.x{URGENT_SUFFIX}")
    await runtime.consumer.settle(delivery(), urgent, work("urgent"), "failed")
    assert not runtime.consumer.priority.busy
    with pytest.raises(RuntimeError):
        await runtime.consumer.settle(delivery(), urgent, work("urgent", fail=True), "failed")
    assert not runtime.consumer.priority.busy
    await runtime.consumer.settle(delivery(), routine(), work("routine"), "failed")
    assert seen == [("urgent", True), ("urgent", True), ("routine", False)]


async def test_an_unreadable_event_is_recorded_rejected_and_counted(
        runtime: ServiceRuntime) -> None:
    runtime.consumer.all_started()
    closed = ConcernClosed(concern_id=uuid.uuid4(), provider=provider(), closed_by="user:lead",
                           reason="done", closed_at=datetime(2026, 12, 1, tzinfo=UTC))
    wrong_type = closed.envelope("carewatch/escalation").model_copy(update={"type": "x.v1"})
    handled: list[object] = []

    async def handler(batch: object, event: object, outbox: object) -> None:
        handled.append(event)

    sub = routine("unit.closed")
    for body in (b"not json", wrong_type.to_bytes()):
        with pytest.raises(RejectMessage):
            await runtime.consumer.consume_event(
                delivery(body), sub, ConcernClosed, handler,  # type: ignore[arg-type]
                runtime.consumer.commits)
    assert [kind for kind, _ in given(runtime)] == ["reject", "reject"]
    pool = runtime.pool
    assert isinstance(pool, FakePool)
    errors = [args[3] for _, args in pool.executed]
    assert [e.startswith("poison: ") for e in errors] == [True, True]
    assert "expected concern.closed.v1, got x.v1" in errors[1]
    assert counted(runtime, "unit.closed", "rejected") == 2 and not handled


# -- the urgent lane's precedence (shared/groupcommit.py's UrgentFirst) ----------------------------
async def test_routine_work_goes_on_at_once_when_no_urgent_work_is_in_hand() -> None:
    priority = UrgentFirst(max_wait=60)
    turn = asyncio.create_task(priority.give_way())
    await asyncio.sleep(0)
    assert turn.done()


async def test_routine_work_waits_until_the_last_urgent_delivery_in_hand_is_done() -> None:
    priority = UrgentFirst(max_wait=60)
    with priority.urgent():
        with priority.urgent():
            turn = asyncio.create_task(priority.give_way())
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert priority.busy and not turn.done(), "one urgent delivery is still in hand"
    await asyncio.wait_for(turn, 5)
    assert not priority.busy


async def test_an_urgent_lane_that_never_empties_slows_routine_work_but_never_stops_it() -> None:
    priority = UrgentFirst(max_wait=0.01)
    with priority.urgent():
        await asyncio.wait_for(priority.give_way(), 5)  # returns with the urgent still in hand
        assert priority.busy


async def test_routine_work_goes_on_while_the_urgent_work_waits_for_a_connection() -> None:
    """A routine batch stopped between items holds a pool connection: while the urgent work
    waits for one, routine work must go on (to its commit, which gives its connection back)."""
    priority = UrgentFirst(max_wait=60)
    with priority.urgent():
        with priority.connecting():
            await asyncio.wait_for(priority.give_way(), 5)
        turn = asyncio.create_task(priority.give_way())
        await asyncio.sleep(0)
        assert not turn.done(), "the urgent work has its connection: routine work waits again"
        with priority.connecting():
            await asyncio.wait_for(turn, 5)
