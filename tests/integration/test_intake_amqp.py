"""intake over AMQP, against the real broker and database: every kind accepted, derived
figures, redaction, hostile input, replies to ``reply_to``, de-duplication, and a real
RabbitMQ user per feed showing that provider A cannot submit as provider B."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.intake import store
from services.intake.app import build
from services.intake.validation import parse, submission_id
from shared.db import create_pool
from shared.envelope import Envelope
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import delete_broker_user, eventually
from tests.integration.test_intake_support import (
    VALID_EXAMPLES,
    EventTap,
    body_bytes,
    example_message,
    isolated_intake,
)

pytestmark = pytest.mark.integration


class Stack:
    def __init__(self, settings: Settings, runtime: ServiceRuntime, pool: asyncpg.Pool,
                 amqp: aio_pika.abc.AbstractRobustConnection, tap: EventTap) -> None:
        self.settings, self.runtime, self.pool, self.amqp, self.tap = (
            settings, runtime, pool, amqp, tap)

    @property
    def exchange_name(self) -> str:
        return f"{self.settings.namespace}.submissions"

    async def publish(self, body: dict[str, Any] | bytes, *, user_id: str | None = "guest",
                      message_id: str | None = None, content_type: str | None = "application/json",
                      reply_to: str | None = None, correlation_id: str | None = None,
                      connection: aio_pika.abc.AbstractConnection | None = None) -> str:
        """Publish as a feed: confirms on, mandatory; returns the message id."""
        raw = body if isinstance(body, bytes) else body_bytes(body)
        kind = body.get("kind", "unknown") if isinstance(body, dict) else "unknown"
        message_id = message_id or uuid.uuid4().hex
        channel = await (connection or self.amqp).channel(publisher_confirms=True,
                                                          on_return_raises=True)
        try:
            exchange = await channel.get_exchange(self.exchange_name, ensure=True)
            await exchange.publish(
                aio_pika.Message(raw, content_type=content_type, user_id=user_id,
                                 message_id=message_id, reply_to=reply_to,
                                 correlation_id=correlation_id,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=f"submission.{kind}.v1", mandatory=True)
        finally:
            await channel.close()
        return message_id

    async def receipt(self, feed: str | None, message_id: str, body: bytes) -> asyncpg.Record:
        sid = submission_id(feed, message_id, body)
        return await eventually(lambda: self.pool.fetchrow(
            "SELECT r.*, q.reasons, q.body, q.body_size FROM intake.receipts r"
            " LEFT JOIN intake.quarantine q USING (submission_id) WHERE r.submission_id = $1",
            sid), what=f"receipt of {message_id}")


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with isolated_intake(settings, "amqp") as s:
        runtime = build(s)
        await runtime.start()
        pool = await create_pool(s.database_url, min_size=1, max_size=4)
        amqp = await aio_pika.connect_robust(s.amqp_url)
        tap = await EventTap.open(amqp, s)
        try:
            yield Stack(s, runtime, pool, amqp, tap)
        finally:
            await amqp.close()
            await pool.close()
            await runtime.stop()


def fresh(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, "record_id": f"{body['record_id']}-{uuid.uuid4().hex[:8]}", **changes}


# -- every kind ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VALID_EXAMPLES)
async def test_every_example_is_accepted_and_announced(stack: Stack, name: str) -> None:
    message = example_message(name)
    raw = body_bytes(message["body"])
    mid = await stack.publish(raw, message_id=message["properties"]["message_id"])
    receipt = await stack.receipt("guest", mid, raw)
    assert receipt["outcome"] == "accepted", receipt["reasons"]
    event = await eventually(lambda: stack.tap.find(
        "feedback.accepted.v1", feedback_id=receipt["feedback_id"]), what="feedback.accepted")
    assert event.data["kind"] == message["body"]["kind"]
    assert event.data["provider"]["ods_code"] == message["body"]["ods_code"]
    assert event.submissionid == receipt["submission_id"]
    # What left intake is the parsed, redacted content with the derived figures.
    parsed = parse(raw, "application/json")
    assert not isinstance(parsed, list)
    assert event.data["content"] == parsed.content


async def test_complaint_carries_its_statutory_deadlines(stack: Stack) -> None:
    body = fresh(example_message("routine-complaint")["body"], received_on="2026-11-10",
                 acknowledged_on="2026-11-16")
    mid = await stack.publish(body)
    receipt = await stack.receipt("guest", mid, body_bytes(body))
    content = await stack.pool.fetchval(
        "SELECT content FROM intake.feedback WHERE feedback_id = $1", receipt["feedback_id"])
    # Tuesday 10 November: three working days later is Friday 13th; six months, 10 May.
    assert content["acknowledgement_due"] == "2026-11-13"
    assert content["response_due"] == "2027-05-10"
    assert content["acknowledged_in_time"] is False
    assert content["responded_in_time"] is None


async def test_fft_monthly_carries_percentages_with_dont_know_in_the_denominator(
        stack: Stack) -> None:
    body = fresh(example_message("fft-monthly")["body"], very_good=40, good=30,
                 neither_good_nor_poor=10, poor=5, very_poor=5, dont_know=10, total_eligible=400)
    mid = await stack.publish(body)
    receipt = await stack.receipt("guest", mid, body_bytes(body))
    content = await stack.pool.fetchval(
        "SELECT content FROM intake.feedback WHERE feedback_id = $1", receipt["feedback_id"])
    assert content["responses"] == 100
    assert content["percent_positive"] == 70.0
    assert content["percent_negative"] == 10.0
    assert content["response_rate"] == 25.0


async def test_personal_data_never_leaves_intake(stack: Stack) -> None:
    body = fresh(example_message("fft-response")["body"],
                 comment="Call me on 07700 900830 or +44 20 7946 0005, NHS 943 476 5919,"
                         " DOB 03-Mar-1954, me@example.com, SW1A 1AA.")
    mid = await stack.publish(body)
    receipt = await stack.receipt("guest", mid, body_bytes(body))
    event = await eventually(lambda: stack.tap.find(
        "feedback.accepted.v1", feedback_id=receipt["feedback_id"]))
    comment = event.data["content"]["comment"]
    assert comment == ("Call me on [PHONE] or [PHONE], NHS [NHS NUMBER], DOB [DATE OF BIRTH],"
                       " [EMAIL], [POSTCODE].")
    stored = await stack.pool.fetchrow(
        "SELECT content, redactions FROM intake.feedback WHERE feedback_id = $1",
        receipt["feedback_id"])
    assert stored["content"]["comment"] == comment
    assert stored["redactions"] == {"[PHONE]": 2, "[NHS NUMBER]": 1, "[DATE OF BIRTH]": 1,
                                    "[EMAIL]": 1, "[POSTCODE]": 1}


# -- hostile input ---------------------------------------------------------------------------------
def _hostile() -> list[Any]:
    valid = example_message("compliment")["body"]
    return [
        pytest.param(b"{" + b" " * 2_000_000 + b"}", "application/json", "too_large", "",
                     id="huge body"),
        pytest.param(body_bytes(valid), "text/plain", "content_type", "", id="wrong content type"),
        pytest.param(b'{"kind": "compliment", "description": "caf\xe9"}', "application/json",
                     "json_invalid", "", id="not UTF-8"),
        pytest.param(b'{"kind": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json",
                     "json_invalid", "", id="deeply nested"),
        pytest.param(body_bytes({**valid, "kind": "tweet"}), "application/json",
                     "union_tag_invalid", "", id="unknown kind"),
        pytest.param(body_bytes({**valid, "received_on": "2099-01-01"}), "application/json",
                     "value_error", "received_on", id="future date"),
        pytest.param(body_bytes({**valid, "ods_code": "ZZZ99"}), "application/json",
                     "unknown_provider", "ods_code", id="unknown ODS code"),
    ]


@pytest.mark.parametrize("raw, content_type, reason_type, loc", _hostile())
async def test_hostile_input_is_quarantined_with_a_reason_and_the_consumer_carries_on(
        stack: Stack, raw: bytes, content_type: str, reason_type: str, loc: str) -> None:
    mid = await stack.publish(raw, content_type=content_type)
    receipt = await stack.receipt("guest", mid, raw)
    assert receipt["outcome"] == "rejected"
    assert (loc, reason_type) in {(r["loc"], r["type"]) for r in receipt["reasons"]}
    assert receipt["body_size"] == len(raw)
    assert len(receipt["body"]) <= 1_048_576  # an oversized body is kept only in part
    await eventually(lambda: stack.tap.find(
        "feedback.rejected.v1", submission_id=receipt["submission_id"]), what="feedback.rejected")
    # The consumer is not stuck: the next good message goes straight through.
    good = fresh(example_message("compliment")["body"])
    mid = await stack.publish(good)
    assert (await stack.receipt("guest", mid, body_bytes(good)))["outcome"] == "accepted"


async def test_message_without_user_id_is_unauthenticated(stack: Stack) -> None:
    body = fresh(example_message("compliment")["body"])
    mid = await stack.publish(body, user_id=None)
    receipt = await stack.receipt(None, mid, body_bytes(body))
    assert [r["type"] for r in receipt["reasons"]] == ["unauthenticated"]


# -- replies ----------------------------------------------------------------------------------------
async def test_rejection_is_sent_back_to_the_reply_queue(stack: Stack) -> None:
    channel = await stack.amqp.channel()
    # The feed's own reply queue (a feed declares it, or `carewatch feeds create` does).
    replies = await channel.declare_queue(f"{stack.settings.namespace}.replies.guest",
                                          auto_delete=True)
    raw = body_bytes(example_message("invalid-complaint")["body"])
    mid = await stack.publish(raw, reply_to=replies.name, correlation_id="batch-7/line-12")
    msg = await eventually(lambda: replies.get(fail=False, no_ack=True), what="reply")
    assert msg.correlation_id == "batch-7/line-12"
    reply = Envelope.from_bytes(msg.body)
    assert reply.type == "feedback.rejected.v1"
    assert reply.data["submission_id"] == str(submission_id("guest", mid, raw))
    assert {r["loc"] for r in reply.data["reasons"]} == {
        "priority", "received_on", "subject_area", "description", "risk.consequence"}
    await channel.close()


async def test_reply_to_a_vanished_queue_does_not_block_the_relay(stack: Stack) -> None:
    raw = body_bytes(example_message("invalid-complaint")["body"])
    # The feed's own reply queue, not declared: the reply goes nowhere, nothing waits on it.
    await stack.publish(raw, reply_to=f"{stack.settings.namespace}.replies.guest")
    # Another queue: refused, with the reason.
    mid = await stack.publish(fresh(example_message("compliment")["body"]),
                              reply_to=f"{stack.settings.namespace}.intake.submissions")
    assert await eventually(lambda: stack.pool.fetchval(
        "SELECT reasons FROM intake.quarantine WHERE message_id = $1", mid)) == [{
            "loc": "reply_to", "type": "reply_to", "msg": "replies go only to the feed's own"
            f" reply queue {stack.settings.namespace}.replies.guest; not to"
            f" '{stack.settings.namespace}.intake.submissions'"}]
    # Events after the unroutable reply are still published, and the outbox empties.
    good = fresh(example_message("compliment")["body"])
    mid = await stack.publish(good)
    receipt = await stack.receipt("guest", mid, body_bytes(good))
    await eventually(lambda: stack.tap.find(
        "feedback.accepted.v1", feedback_id=receipt["feedback_id"]))
    await eventually(lambda: _outbox_empty(stack.pool), what="outbox drained")
    # A reply_to naming one of carewatch's own queues is not honoured: intake's own queue
    # never received a rejection envelope.
    assert await stack.pool.fetchval(
        "SELECT count(*) FROM intake.quarantine WHERE position($1 in body) > 0",
        b'"type":"feedback.rejected.v1"') == 0


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM intake.outbox") == 0


# -- de-duplication ---------------------------------------------------------------------------------
async def test_same_record_again_is_a_duplicate_counted_once_per_copy(stack: Stack) -> None:
    body = fresh(example_message("online-review")["body"])
    first = await stack.publish(body)
    assert (await stack.receipt("guest", first, body_bytes(body)))["outcome"] == "accepted"
    second = await stack.publish(body)  # a resend with a new message id
    assert (await stack.receipt("guest", second, body_bytes(body)))["outcome"] == "duplicate"
    await stack.publish(body, message_id=second)  # the very same message again: a replay
    await eventually(lambda: stack.pool.fetchval(
        "SELECT duplicates = 2 FROM intake.feedback WHERE ods_code = $1"
        " AND provider_record_id = $2", body["ods_code"], body["record_id"]))
    assert await stack.pool.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE provider_record_id = $1",
        body["record_id"]) == 1
    assert len([e for e in await stack.tap.drain() if e.type == "feedback.accepted.v1"
                and e.data["provider_record_id"] == body["record_id"]]) == 1


async def test_a_burst_is_admitted_in_groups_with_one_receipt_each(stack: Stack) -> None:
    bodies = [fresh(example_message("fft-response")["body"]) for _ in range(300)]
    channel = await stack.amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(stack.exchange_name)
    ids = [uuid.uuid4().hex for _ in bodies]
    await asyncio.gather(*(exchange.publish(
        aio_pika.Message(body_bytes(b), user_id="guest", message_id=m,
                         content_type="application/json"), "submission.fft_response.v1")
        for b, m in zip(bodies, ids, strict=True)))
    await channel.close()
    sids = [submission_id("guest", m, body_bytes(b)) for b, m in zip(bodies, ids, strict=True)]
    await eventually(lambda: _count_receipts(stack.pool, sids, 300), timeout=60)
    assert await stack.pool.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE submission_id = ANY($1)", sids) == 300


async def _count_receipts(pool: asyncpg.Pool, sids: list[uuid.UUID], n: int) -> bool:
    return await pool.fetchval(
        "SELECT count(*) FROM intake.receipts WHERE submission_id = ANY($1)", sids) == n


# -- one RabbitMQ user per feed ------------------------------------------------------------------------
def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def feed_users(stack: Stack) -> Any:
    """Two real RabbitMQ users who may only publish to this stack's submissions exchange."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not available: cannot create RabbitMQ users for feeds")
    try:
        rabbitmqctl("status")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"rabbitmqctl cannot manage the local broker: {exc}")
    tag = uuid.uuid4().hex[:8]
    users = {name: (f"feed-{name}-{tag}", uuid.uuid4().hex) for name in ("a", "b")}
    write = f"^{stack.exchange_name.replace('.', '[.]')}$"
    try:
        for user, password in users.values():
            rabbitmqctl("add_user", user, password)
            rabbitmqctl("set_permissions", "-p", "/", user, "^$", write, "^$")
        yield users
    finally:
        for user, _ in users.values():
            delete_broker_user(user)  # closes its connections first


async def test_provider_a_cannot_submit_as_provider_b(stack: Stack, feed_users: Any) -> None:
    (user_a, password_a), (user_b, _) = feed_users["a"], feed_users["b"]
    async with stack.pool.acquire() as conn:
        await store.register_feed(conn, user_a, ["RJ1"], "provider A")
        await store.register_feed(conn, user_b, ["RAL"], "provider B")
    host = stack.settings.amqp_url.split("@", 1)[1]
    connection = await aio_pika.connect(f"amqp://{user_a}:{password_a}@{host}")
    async with connection:
        # (a) A, for its own provider: accepted.
        own = fresh(example_message("compliment")["body"], ods_code="RJ1")
        mid = await stack.publish(own, user_id=user_a, connection=connection)
        assert (await stack.receipt(user_a, mid, body_bytes(own)))["outcome"] == "accepted"
        # (b) A, with a body for B's provider: quarantined as forbidden.
        other = fresh(example_message("compliment")["body"], ods_code="RAL")
        mid = await stack.publish(other, user_id=user_a, connection=connection)
        receipt = await stack.receipt(user_a, mid, body_bytes(other))
        assert receipt["outcome"] == "rejected"
        assert [(r["loc"], r["type"]) for r in receipt["reasons"]] == [("ods_code", "forbidden")]
        # (c) A claiming to be B: the broker refuses the message (and closes the channel).
        with pytest.raises(aio_pika.exceptions.ChannelClosed) as refused:
            await stack.publish(fresh(other), user_id=user_b, connection=connection)
        assert "user_id" in str(refused.value)
    assert await stack.pool.fetchval(
        "SELECT count(*) FROM intake.receipts WHERE feed_user = $1", user_b) == 0



# -- the registry, kept in memory -----------------------------------------------------------------
async def test_a_change_to_the_registry_counts_from_the_next_submission(stack: Stack) -> None:
    """intake keeps the providers and the feeds' grants in memory (issue 21), reloading them
    when the registry's version has moved: a provider registered, or a grant withdrawn, while
    intake runs counts at once."""
    ods = f"Q{uuid.uuid4().hex[:6].upper()}"

    async def outcome(ods_code: str) -> asyncpg.Record:
        body = fresh(example_message("compliment")["body"], ods_code=ods_code)
        mid = await stack.publish(body)
        return await stack.receipt("guest", mid, body_bytes(body))

    # The registry is in memory now, without the new provider.
    assert (await outcome("RJ1"))["outcome"] == "accepted"
    first = await outcome(ods)
    assert [(r["loc"], r["type"]) for r in first["reasons"]] == [("ods_code",
                                                                  "unknown_provider")]
    await stack.pool.execute(
        "INSERT INTO intake.providers (ods_code, name, provider_type, quality_contact_email)"
        " VALUES ($1, 'New provider', 'acute', 'quality@new.example')", ods)
    await stack.pool.execute(
        "INSERT INTO intake.feed_providers (feed_user, ods_code) VALUES ('guest', $1)", ods)
    assert (await outcome(ods))["outcome"] == "accepted"
    await stack.pool.execute(
        "DELETE FROM intake.feed_providers WHERE feed_user = 'guest' AND ods_code = $1", ods)
    withdrawn = await outcome(ods)
    assert [(r["loc"], r["type"]) for r in withdrawn["reasons"]] == [("ods_code", "forbidden")]
