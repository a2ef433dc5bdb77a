"""Replies that cannot hurt (issue 14, item 4), against the real broker and database: a
``reply_to`` naming any queue but the feed's own reply queue is refused with a reason and
nothing reaches that queue; replies the broker refuses (intake's broker user with the shipped
permissions, no write on the default exchange) hold up no other event, readiness stays true,
and shutdown is quick and leaves no transaction holding row locks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

import aio_pika
import asyncpg
import httpx
import pytest

from services.intake.app import build
from shared import identity
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import bearer, eventually, token_for
from tests.integration.test_intake_support import body_bytes, example_message
from tests.security.attacks import Attack
from tests.security.conftest import BrokerUsers, isolated
from tests.security.data_stack import fresh_id


@dataclass
class Intake:
    runtime: ServiceRuntime
    settings: Settings
    amqp: aio_pika.abc.AbstractRobustConnection


@pytest.fixture(scope="module")
async def intake(settings: Settings) -> AsyncIterator[Intake]:
    async with isolated(settings, "rpl") as s:
        ns = s.namespace
        # intake's broker user with the permissions shipped before issue 14 (no write on the
        # default exchange): every reply it sends is refused by the broker.
        users = BrokerUsers()
        name, password = await users.add(
            "intake", configure=rf"^{ns}\.(intake\..+|events|submissions|dlx|unrouted)$",
            write=rf"^{ns}\.(intake\..+|events|dlx|unrouted)$",
            read=rf"^{ns}\.(intake\..+|events|dlx|unrouted|submissions)$")
        host = s.amqp_url.split("@", 1)[1]
        own = s.model_copy(update={"amqp_url": f"amqp://{name}:{password}@{host}"})
        runtime = build(own)
        await runtime.start()
        amqp = await aio_pika.connect_robust(s.amqp_url)
        try:
            yield Intake(runtime, s, amqp)
        finally:
            await amqp.close()
            if runtime.lifecycle.ready:
                await runtime.stop()
            await users.delete_all()


async def publish(i: Intake, body: bytes, reply_to: str | None, kind: str) -> str:
    """As the feed ``guest`` (registered for every provider)."""
    message_id = uuid.uuid4().hex
    channel = await i.amqp.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(f"{i.settings.namespace}.submissions")
        await exchange.publish(aio_pika.Message(
            body, message_id=message_id, user_id="guest", reply_to=reply_to,
            content_type="application/json"), f"submission.{kind}.v1", mandatory=True)
    finally:
        await channel.close()
    return message_id


def fresh(name: str) -> tuple[bytes, str]:
    body = example_message(name)["body"]
    if isinstance(body, dict):
        body = {**body, "record_id": fresh_id("sec")}
    return body_bytes(body), json.loads(body_bytes(body)).get("kind", "unknown")


async def test_reply_to_any_queue_but_the_feeds_own_is_refused(
        intake: Intake, attack: Callable[[str], Attack]) -> None:
    a = attack("reply_to naming another queue")
    ns = intake.settings.namespace
    channel = await intake.amqp.channel()
    victims = [await channel.declare_queue(name, auto_delete=True) for name in (
        f"otherdeployment_{uuid.uuid4().hex[:6]}.intake.submissions",  # another deployment's
        f"{ns}.replies.another-feed",  # another feed's reply queue
        f"feed-victim-{uuid.uuid4().hex[:6]}",  # anybody's queue
    )]
    victims.append(await channel.declare_queue(exclusive=True))  # a server-named amq.gen-*
    targets = [q.name for q in victims] + [f"{ns}.intake.submissions", f"{ns}.events"]
    pool: asyncpg.Pool = intake.runtime.pool
    for target in targets:
        for example in ("invalid-complaint", "compliment"):
            body, kind = fresh(example)
            mid = await publish(intake, body, target, kind)
            reasons = await eventually(partial(
                pool.fetchval, "SELECT reasons FROM intake.quarantine WHERE message_id = $1", mid),
                what="the refusal")
            a.record(refused=any(r["loc"] == "reply_to" and "own reply queue" in r["msg"]
                                 for r in reasons),
                     leaked=False, what=str(reasons))
    await eventually(lambda: _outbox_settled(pool), what="intake's outbox settled")
    for q in victims:
        depth = (await channel.declare_queue(q.name, passive=True)).declaration_result
        a.record(refused=True, leaked=bool(depth.message_count),
                 what=f"{q.name} received {depth.message_count}")
    await channel.close()
    a.finish()


async def _outbox_settled(pool: asyncpg.Pool) -> bool:
    """Nothing left that the relay has not tried."""
    return await pool.fetchval(
        "SELECT count(*) FROM intake.outbox WHERE attempts = 0") == 0


async def test_replies_the_broker_refuses_hold_up_nothing_and_shutdown_is_prompt(
        intake: Intake, attack: Callable[[str], Attack]) -> None:
    a = attack("replies the broker refuses, then the events behind them, then SIGTERM")
    ns = intake.settings.namespace
    pool: asyncpg.Pool = intake.runtime.pool
    channel = await intake.amqp.channel()
    tap = await channel.declare_queue(exclusive=True)
    await tap.bind(f"{ns}.events", routing_key="feedback.accepted.v1.#")
    # The feed's own reply queue: allowed by intake, refused by the broker (permissions).
    poisoned = [await publish(intake, fresh("invalid-complaint")[0], f"{ns}.replies.guest",
                              "complaint") for _ in range(30)]
    good = [await publish(intake, body, None, kind)
            for body, kind in (fresh("compliment") for _ in range(20))]
    seen: set[str] = set()

    async def all_good_published() -> bool:
        while (msg := await tap.get(fail=False, no_ack=True)) is not None:
            seen.add(json.loads(msg.body)["data"]["feedback_id"])
        wanted = {str(r["feedback_id"]) for r in await pool.fetch(
            "SELECT feedback_id FROM intake.feedback")}
        return len(wanted) >= len(good) and wanted <= seen

    try:
        await eventually(all_good_published, timeout=60, what="the events behind the replies")
        held = 0
    except AssertionError:
        held = len(good)
    refused = await pool.fetchval(
        "SELECT count(*) FROM intake.outbox WHERE attempts > 0 AND routing_key = $1",
        f"{ns}.replies.guest")
    for n in range(len(poisoned)):
        a.record(refused=n < refused, leaked=n < held,
                 what="an accepted event held behind refused replies")
    operator = await token_for(pool, "ops@sec.test", identity.OPERATOR)
    async with httpx.AsyncClient(headers=bearer(operator)) as client:
        ready = await client.get(f"http://127.0.0.1:{intake.runtime.http.port}/ready")
    a.record(refused=ready.status_code == 200, leaked=ready.json()["checks"]["relay"] is False,
             what=f"readiness {ready.text}")
    await channel.close()

    # SIGTERM while replies are still being refused: prompt, and no lock left behind.
    db = intake.settings.database_url.rsplit("/", 1)[1]
    started = time.monotonic()
    await intake.runtime.stop()
    took = time.monotonic() - started
    async with _admin(intake.settings) as admin:
        idle = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            " AND state LIKE 'idle in transaction%'", db)
    a.record(refused=took < intake.settings.graceful_timeout + 5,
             leaked=took > 2 * intake.settings.graceful_timeout + 10 or bool(idle),
             what=f"shutdown took {took:.1f}s, {idle} idle in transaction")
    print(f"  shutdown took {took:.1f}s (graceful timeout {intake.settings.graceful_timeout}s);"
          f" {refused} refused replies counted; {len(seen)} accepted events published")
    a.finish()


class _admin:
    def __init__(self, settings: Settings) -> None:
        self.dsn = settings.database_url.rsplit("/", 1)[0] + "/postgres"

    async def __aenter__(self) -> asyncpg.Connection:
        self.conn = await asyncpg.connect(self.dsn)
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()
