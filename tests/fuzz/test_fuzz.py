"""Hostile input in bulk (``make test-fuzz``; CI runs a bounded run).

At least 10,000 generated bad or odd submissions go to intake over AMQP, and as many again
over its HTTP API (single submissions and batches, with hostile headers). Every one must be
accepted or rejected with a reason: no crash, no 5xx, no stuck consumer, no silent drop. SQL,
HTML and header injection in free text must come out inert in the database, in e-mail and in
webhook posts. CAREWATCH_FUZZ_COUNT sets the number of submissions per door (default 10,000).
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import yaml

from services.catalogue import SERVICES, builder
from services.intake import store
from services.intake.app import build as build_intake
from services.intake.redaction import redact
from services.intake.validation import submission_id
from services.notification.channels import verify
from services.notification.config import DEFAULT_ROUTING
from shared.db import create_pool
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.fuzz.hostile import (
    BATCH,
    DOCUMENTED,
    INJECTIONS,
    SINGLE,
    Call,
    hostile,
    http_calls,
    too_big_batch,
)
from tests.helpers import (
    Inbox,
    Receiver,
    bearer,
    eventually,
    example,
    publish_submission,
    smtp_server,
    token_for,
)
from tests.integration.test_intake_support import example_message, isolated_intake, issue_api_key

pytestmark = pytest.mark.fuzz
COUNT = int(os.environ.get("CAREWATCH_FUZZ_COUNT", "10000"))
IN_FLIGHT = 32  # HTTP requests at once
# The pipeline works through the fuzz run's accepted feedback (and its e-mails) before it
# reaches what the injection test publishes: allow for it.
PIPELINE_TIMEOUT = 180 + COUNT // 20
HTTP_FEED = "fuzz-http-feed"
NOT_OURS = "RQX"  # a registered provider the HTTP feed is not registered for


def machine_readable(reasons: Any) -> bool:
    """A non-empty list of reasons, each with a ``loc``, a message and a ``type``."""
    return isinstance(reasons, list) and bool(reasons) and all(
        isinstance(r, dict) and isinstance(r.get("loc"), str) and r.get("msg") and r.get("type")
        for r in reasons)


async def assert_intake_consuming(channel: aio_pika.abc.AbstractChannel, namespace: str) -> None:
    """intake's consumers are there, its queues (both lanes) are empty and nothing was
    dead-lettered."""
    for name in (f"{namespace}.intake.submissions", f"{namespace}.intake.submissions.urgent"):
        queue = await channel.declare_queue(name, passive=True)
        dlq = await channel.declare_queue(f"{name}.dlq", passive=True)
        assert queue.declaration_result.consumer_count == 1, f"{name}: still consuming"
        assert queue.declaration_result.message_count == 0, f"{name}: nothing stuck"
        assert dlq.declaration_result.message_count == 0, \
            f"{name}: bad input is quarantined, not poison"


# -- AMQP -----------------------------------------------------------------------------------------
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
    assert all(machine_readable(r["reasons"]) for r in reasons), \
        "every rejection has machine-readable reasons"
    await assert_intake_consuming(channel, settings.namespace)
    # Injection stays data: the tables are intact and the text is stored as sent.
    assert await db.fetchval("SELECT to_regclass('intake.feedback') IS NOT NULL")
    stored = await db.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE submission_id = ANY($1::uuid[])"
        " AND content::text LIKE '%DROP TABLE intake.feedback%'", list(ids))
    print(f"\nfuzz: {len(ids)} submissions: {accepted} accepted,"
          f" {outcomes.get('duplicate', 0)} duplicates, {len(reasons)} quarantined with reasons,"
          f" {stored} SQL injections stored verbatim as text, 0 dead-lettered")
    assert stored > 0
    await channel.close()


async def _at_least(probe: Any, target: int) -> bool:
    return await probe() >= target


# -- HTTP -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpIntake:
    settings: Settings
    port: int
    key: str
    pool: asyncpg.Pool


@pytest.fixture(scope="module")
async def http_intake(settings: Settings) -> AsyncIterator[HttpIntake]:
    """intake with its HTTP API on a stack of its own (database and namespace), and an API
    key for a feed registered for every provider but NOT_OURS."""
    async with isolated_intake(settings, "fuzz") as own:
        runtime = build_intake(own)
        await runtime.start()
        pool = await create_pool(own.database_url, min_size=1, max_size=4)
        codes = [c for c in store.ods_codes(store.read_providers_csv(store.SAMPLE_PROVIDERS))
                 if c != NOT_OURS]
        key = await issue_api_key(pool, HTTP_FEED, codes)
        assert runtime.http.port is not None
        try:
            yield HttpIntake(own, runtime.http.port, key, pool)
        finally:
            await pool.close()
            await runtime.stop()


@dataclass(frozen=True)
class Reply:
    """What one request got (the request itself is kept only in part)."""

    case: str
    path: str
    expect: frozenset[int]
    size: int
    preview: bytes
    status: int | None = None
    doc: Any = None
    error: str | None = None
    # For a request with smuggled header lines: its submission id if they changed nothing
    # (the Idempotency-Key is what came before the CR LF).
    unchanged_id: str | None = None

    def __str__(self) -> str:
        return (f"[{self.case}] {self.path} ({self.size} bytes: {self.preview!r}) ->"
                f" {self.error or self.status} {json.dumps(self.doc)[:300] if self.doc else ''}")


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65_536):
        yield body[start:start + 65_536]


def _raw(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _over_a_socket(call: Call) -> bool:
    """Requests an HTTP client refuses to send: CR LF in a header value (smuggling header
    lines), white space around one."""
    return bool(call.smuggled) or any(_raw(v).strip() != _raw(v) for v in call.headers.values())


async def _smuggle(port: int, call: Call) -> tuple[int, bytes]:
    """Send a request over a plain socket, header values as they are, with the smuggled
    header lines after a CR LF in the Idempotency-Key; the status and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"POST {call.path} HTTP/1.1".encode(), b"Host: 127.0.0.1",
                 b"Connection: close", f"Content-Length: {len(call.body)}".encode()]
        for name, value in call.headers.items():
            smuggled = b"\r\n" + call.smuggled if name == "Idempotency-Key" and call.smuggled \
                else b""
            lines.append(name.encode() + b": " + _raw(value) + smuggled)
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + call.body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def _send(client: httpx.AsyncClient, port: int, call: Call) -> Reply:
    reply = Reply(call.case, call.path, frozenset(call.expect), len(call.body), call.body[:200],
                  unchanged_id=str(submission_id(HTTP_FEED, str(call.headers["Idempotency-Key"]),
                                                 call.body)) if call.smuggled else None)
    try:
        if _over_a_socket(call):
            status, body = await _smuggle(port, call)
        else:
            response = await client.post(
                call.path, content=_chunks(call.body) if call.chunked else call.body,
                # httpx's HeaderTypes admits only all-str or all-bytes values, but its Headers
                # takes either per value (_normalize_header_value): the fuzz mixes them on purpose.
                headers=call.headers)  # type: ignore[arg-type]
            status, body = response.status_code, response.content
    except (httpx.HTTPError, OSError, TimeoutError, ValueError) as exc:
        return replace(reply, error=f"{type(exc).__name__}: {exc}")
    try:
        doc = json.loads(body)
    except ValueError:
        doc = body[:300].decode("utf-8", "replace")
    return replace(reply, status=status, doc=doc)


def _result_problems(doc: Any, status: int) -> list[str]:
    """What is wrong with the answer about one submission."""
    if not isinstance(doc, dict):
        return ["the answer is not a JSON object"]
    outcome = {202: "accepted", 200: "duplicate"}.get(status, "rejected")
    problems = []
    if doc.get("outcome") != outcome:
        problems.append(f"status {status} with outcome {doc.get('outcome')!r}")
    try:
        uuid.UUID(str(doc.get("submission_id")))
    except ValueError:
        problems.append("no submission id")
    if outcome == "rejected" and not machine_readable(doc.get("reasons")):
        problems.append("a rejection without machine-readable reasons")
    if outcome == "accepted" and not doc.get("feedback_id"):
        problems.append("accepted without a feedback id")
    return problems


def _problems(reply: Reply) -> list[str]:
    """What is wrong with a reply: connection errors, undocumented or unexpected statuses, 4xx
    without reasons or a problem detail, outcomes that contradict the status."""
    if reply.error or reply.status is None:
        return [f"no answer: {reply.error}"]
    problems = []
    if reply.status not in DOCUMENTED[reply.path]:
        problems.append(f"undocumented status {reply.status}")
    if reply.expect and reply.status not in reply.expect:
        problems.append(f"status {reply.status}, expected {sorted(reply.expect)}")
    doc = reply.doc
    if reply.status == 401 or reply.status >= 500 or (reply.path == BATCH and reply.status != 200):
        if not (isinstance(doc, dict) and isinstance(doc.get("detail"), str) and doc["detail"]):
            problems.append("a refusal without a problem detail")
        return problems
    if reply.path == SINGLE:
        if reply.unchanged_id and doc.get("submission_id") != reply.unchanged_id:
            problems.append("the smuggled header lines changed the submission")
        return problems + _result_problems(doc, reply.status)
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        return [*problems, "a batch answer without results"]
    totals = Counter(r.get("outcome") for r in results)
    if any(doc.get(o) != totals[o] for o in ("accepted", "duplicate", "rejected")):
        problems.append("batch totals do not add up")
    if [r.get("index") for r in results] != list(range(len(results))):
        problems.append("batch results out of order")
    for r in results:
        problems += [f"item {r.get('index')}: {p}" for p in _result_problems(r, r.get("status"))]
    return problems


def _answers(reply: Reply) -> list[dict[str, Any]]:
    """The per-submission answers in a reply (none for a refused request or batch)."""
    if reply.status is None or not isinstance(reply.doc, dict) or reply.status == 401:
        return []
    if reply.path == SINGLE:
        return [reply.doc] if "submission_id" in reply.doc else []
    return list(reply.doc.get("results") or [])


async def _drop_problems(pool: asyncpg.Pool, answers: dict[uuid.UUID, list[dict[str, Any]]]
                         ) -> tuple[list[str], Counter[str]]:
    """Every submission the API answered for has a receipt that agrees with the answers,
    stored feedback when accepted and a quarantine row with the same reasons when rejected;
    and no receipt exists that no answer told of."""
    receipts = {r["submission_id"]: r for r in await pool.fetch("SELECT * FROM intake.receipts")}
    feedback = dict(await pool.fetch("SELECT submission_id, feedback_id FROM intake.feedback"))
    quarantine = {r["submission_id"]: r["reasons"] for r in await pool.fetch(
        "SELECT submission_id, reasons FROM intake.quarantine")}
    problems = [f"receipt {sid} ({r['outcome']}) that no answer told of"
                for sid, r in receipts.items() if sid not in answers]
    for sid, said in answers.items():
        receipt = receipts.get(sid)
        if receipt is None:
            problems.append(f"silent drop: {sid} was answered {said[0]['outcome']}, no receipt")
            continue
        outcome = receipt["outcome"]
        for answer in said:
            first = answer.get("first_outcome") if answer.get("replay") else answer["outcome"]
            # Two copies admitted at once: the second finds the record, as a duplicate.
            if first != outcome and not (first == "duplicate" and outcome == "accepted"):
                problems.append(f"{sid}: answered {answer['outcome']} (first {first}),"
                                f" receipt says {outcome}")
            if answer["outcome"] == "accepted" and feedback.get(sid) != uuid.UUID(
                    answer["feedback_id"]):
                problems.append(f"{sid}: accepted as {answer['feedback_id']}, not stored so")
            if answer["outcome"] == "rejected" and not answer.get("replay") and \
                    quarantine.get(sid) != answer["reasons"]:
                problems.append(f"{sid}: rejected, quarantined with {quarantine.get(sid)!r}")
        if outcome == "rejected" and not machine_readable(quarantine.get(sid)):
            problems.append(f"{sid}: rejected, not quarantined with reasons")
    return problems, Counter(r["outcome"] for r in receipts.values())


async def test_every_hostile_http_request_is_answered(
        http_intake: HttpIntake, amqp: aio_pika.abc.AbstractConnection) -> None:
    stack = http_intake
    rng = random.Random(20261123)
    calls: Iterator[Call] = itertools.chain([too_big_batch(stack.key)],
                                            http_calls(rng, stack.key, COUNT, NOT_OURS))
    replies: list[Reply] = []
    began = time.monotonic()
    async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{stack.port}", timeout=120,
            limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:

        async def worker() -> None:
            for call in calls:  # one shared iterator: IN_FLIGHT requests at a time
                replies.append(await _send(client, stack.port, call))

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        seconds = time.monotonic() - began
        # Readiness is an operator's to read (every route but liveness has an identity).
        operator = await token_for(stack.pool, "fuzz-operator@icb.example", "operator")
        ready = await client.get("/ready", headers=bearer(operator))
    assert len(replies) == COUNT + 1

    # Every request got a documented answer with reasons or a problem detail.
    problems = [f"{reply}: {p}" for reply in replies for p in _problems(reply)]
    assert not problems, f"{len(problems)} bad answers, e.g.\n" + "\n".join(problems[:15])
    # Every submission answered for is accounted for in the database: zero silent drops.
    answers: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for reply in replies:
        for answer in _answers(reply):
            answers.setdefault(uuid.UUID(answer["submission_id"]), []).append(answer)
    drops, receipts = await _drop_problems(stack.pool, answers)
    assert not drops, f"{len(drops)} submissions unaccounted for, e.g.\n" + "\n".join(drops[:15])
    # Injection in free text is stored as data; nothing was dropped or broken.
    assert await stack.pool.fetchval("SELECT to_regclass('intake.receipts') IS NOT NULL")
    injected = await stack.pool.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE content::text LIKE '%DROP TABLE intake.%'")
    assert injected > 0

    # The service carries on: ready, its AMQP consumer still consumes, nothing dead-lettered,
    # and every event it owes is published.
    assert ready.status_code == 200, ready.text
    probe = {**example("serious-complaint.json")["body"],
             "record_id": f"FUZZ-PROBE-{uuid.uuid4().hex[:8]}"}
    await publish_submission(amqp, stack.settings.namespace, probe)
    outcome = await eventually(lambda: stack.pool.fetchval(
        "SELECT outcome FROM intake.receipts WHERE provider_record_id = $1", probe["record_id"]),
        timeout=60, what="a valid AMQP submission after the HTTP fuzz")
    assert outcome == "accepted"
    channel = await amqp.channel()
    try:
        await assert_intake_consuming(channel, stack.settings.namespace)
    finally:
        await channel.close()
    await eventually(lambda: _outbox_empty(stack.pool), timeout=120, interval=0.5,
                     what="intake's outbox drained")

    by_status = Counter((r.path, r.status) for r in replies)
    singles = ", ".join(f"{s} x{n}" for (p, s), n in sorted(by_status.items()) if p == SINGLE)
    batches = ", ".join(f"{s} x{n}" for (p, s), n in sorted(by_status.items()) if p == BATCH)
    items = sum(len(r.doc["results"]) for r in replies if r.path == BATCH and r.status == 200)
    print(f"\nfuzz http: {len(replies)} requests in {seconds:.0f}s ({len(replies) / seconds:.0f}/s,"
          f" {IN_FLIGHT} in flight): single {singles}; batch {batches} ({items} items);"
          f" {len(answers)} submissions: {receipts['accepted']} accepted,"
          f" {receipts['duplicate']} duplicates, {receipts['rejected']} quarantined with reasons"
          f" (all with receipts); {injected} SQL injections stored verbatim; 0 5xx,"
          " 0 connection errors, 0 dead-lettered")
    families = Counter(r.case.split(":")[0] for r in replies)
    print("fuzz http cases: " + ", ".join(f"{c} x{n}" for c, n in families.most_common()))


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM intake.outbox") == 0


# -- injection, through the whole pipeline ---------------------------------------------------------
WEBHOOK_SECRET = "fuzz-webhook-secret"
# What a webhook post may carry: httpx's own headers and carewatch's; never a line of user text.
WEBHOOK_HEADERS = {"host", "accept", "accept-encoding", "connection", "user-agent",
                   "content-length", "content-type", "x-carewatch-timestamp",
                   "x-carewatch-signature", "x-carewatch-delivery"}
# An inadequate insight visit's service is user text that reaches the concern's title, the
# e-mail subject and the webhook's text; with Slack's and Teams' own control sequences.
HOSTILE_SERVICE = ("Ward 7 " + " ".join(INJECTIONS[:3])
                   + " <!channel> <https://evil.example|log in>")
# What intake keeps of it: `service` is free text, redacted like the rest (the e-mail in the
# header injection becomes [EMAIL]); the injections themselves stay as inert data.
STORED_SERVICE = redact(HOSTILE_SERVICE).text


@dataclass(frozen=True)
class Pipeline:
    inbox: Inbox
    webhooks: Receiver


@pytest.fixture(scope="module")
async def pipeline(settings: Settings, tmp_path_factory: Any) -> AsyncIterator[Pipeline]:
    """quality-monitor, escalation and notification; notification with the default routing
    plus two webhooks (Slack- and Teams-shaped) told of every new serious or high concern and
    of meetings."""
    controller, inbox = smtp_server(settings.smtp_port)
    with Receiver() as receiver:
        routing = Path(tmp_path_factory.mktemp("routing")) / "routing.yaml"
        config = yaml.safe_load(DEFAULT_ROUTING.read_text())
        config["webhooks"] = {
            f"fuzz-{style}": {"url": f"http://127.0.0.1:{receiver.port}/{style}", "format": style}
            for style in ("slack", "teams")}
        # New concerns only (not every update of one): the fuzz run's hostile visits each
        # raise one, and notification has the fuzz run's e-mails to send as well.
        config["routes"].insert(0, {
            "name": "fuzz-webhooks", "continue": True,
            "match": {"event": ["concern.raised.v1", "meeting.*"],
                      "severity": ["serious", "high"]},
            "to": ["webhook:fuzz-slack", "webhook:fuzz-teams"]})
        routing.write_text(yaml.safe_dump(config))
        with_webhooks = settings.model_copy(update={
            "notification_routing_file": str(routing),
            "notification_webhook_secrets": {"fuzz-slack": WEBHOOK_SECRET,
                                             "fuzz-teams": WEBHOOK_SECRET}})
        runtimes = [builder(name)(with_webhooks if name == "notification" else settings)
                    for name in SERVICES if name != "intake"]
        for runtime in runtimes:
            await runtime.start()
        yield Pipeline(inbox, receiver)
        for runtime in runtimes:
            await runtime.stop()
    controller.stop()


async def test_injection_in_free_text_is_inert_in_email_and_webhooks(
        intake: ServiceRuntime, pipeline: Pipeline, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    tag = uuid.uuid4().hex[:8]
    hostile_text = " ".join(INJECTIONS[:3])
    complaint = {**example("serious-complaint.json")["body"], "ods_code": "RP4",
                 "record_id": f"INJ-{tag}",
                 "description": hostile_text + " My father died after a fall on the ward."}
    visit = {**example_message("insight-visit")["body"], "ods_code": "RP4",
             "record_id": f"INJ-VISIT-{tag}", "rating": "inadequate",
             "service": HOSTILE_SERVICE}
    await publish_submission(amqp, settings.namespace, complaint)
    await publish_submission(amqp, settings.namespace, visit)

    # The database: stored as data, verbatim.
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM intake.feedback WHERE provider_record_id = $1", complaint["record_id"]))
    assert INJECTIONS[0] in row["content"]["description"]
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM intake.feedback WHERE provider_record_id = $1", visit["record_id"]))
    assert row["content"]["service"] == STORED_SERVICE
    assert row["theme"] == f"visit: {STORED_SERVICE}"

    # E-mail: no header injection (the visit's text is in the subject, on one line), no markup.
    mails = await eventually(lambda: _mails_for(pipeline.inbox, "quality.rp4@provider.example"),
                             timeout=PIPELINE_TIMEOUT, what="invitation for the hostile complaint")
    team = await eventually(lambda: _mails_about(pipeline.inbox, settings.quality_team_email,
                                                 "DROP TABLE"),
                            timeout=PIPELINE_TIMEOUT,
                            what="the quality team's alert about the hostile visit")
    for msg in mails + team:
        assert msg["Bcc"] is None and "attacker@evil.example" not in str(msg["To"])
        assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
        assert not msg.get_all("Subject")[1:], "one Subject header"
        for part in msg.walk():
            if part.get_content_type() == "text/html":
                markup = part.get_content().lower()
                assert "<script" not in markup and "<img" not in markup

    # Webhooks: a post for each of the two (Slack and Teams) about the visit's concern and
    # about the complaint's; the user text is JSON string data and escaped where it is shown.
    theme = f"visit: {STORED_SERVICE}"
    for style in ("slack", "teams"):
        await eventually(partial(_posts_now, pipeline.webhooks, style, theme=theme),
                         timeout=PIPELINE_TIMEOUT, what=f"{style} post about the hostile visit")
        await eventually(partial(_posts_now, pipeline.webhooks, style, ods="RP4",
                                 rule="immediate_serious_risk"),
                         timeout=PIPELINE_TIMEOUT, what=f"{style} post about the hostile complaint")
    posts = list(zip(pipeline.webhooks.posts, pipeline.webhooks.header_lines, strict=True))
    for (path, _, body), lines in posts:
        _assert_inert_post(path, lines, body)
    for style in ("slack", "teams"):
        for doc in _posts(pipeline.webhooks, style, theme=theme):
            # The machine section keeps the text exactly; people see it escaped, on one line.
            assert doc["carewatch"]["payload"]["theme"] == theme
            shown = html.unescape(doc["text"])
            assert " ".join(theme.split()) in shown
        for doc in _posts(pipeline.webhooks, style, ods="RP4", rule="immediate_serious_risk"):
            assert "<script" not in json.dumps(_readable(style, doc))
    print(f"\nwebhooks: {len(posts)} posts (the fuzz run's concerns and meetings included),"
          " every one valid JSON, signed, with no user text in a header and no markup unescaped")


async def _mails_for(inbox: Inbox, address: str) -> list[Any]:
    return inbox.to(address)


async def _mails_about(inbox: Inbox, address: str, text: str) -> list[Any]:
    return [m for m in inbox.to(address) if text in str(m["Subject"])]


async def _posts_now(receiver: Receiver, style: str, **filters: str) -> list[dict[str, Any]]:
    """``_posts`` as a probe for ``eventually`` (read again on each call)."""
    return _posts(receiver, style, **filters)


def _docs(receiver: Receiver, style: str) -> list[dict[str, Any]]:
    return [json.loads(body) for path, _, body in list(receiver.posts) if path == f"/{style}"]


def _posts(receiver: Receiver, style: str, *, theme: str | None = None, ods: str | None = None,
           rule: str | None = None) -> list[dict[str, Any]]:
    """The posts about concerns matching the filters."""
    found = []
    for doc in _docs(receiver, style):
        payload = doc["carewatch"]["payload"]
        if ((theme is None or payload.get("theme") == theme)
                and (ods is None or (payload.get("provider") or {}).get("ods_code") == ods)
                and (rule is None or payload.get("rule") == rule)):
            found.append(doc)
    return found


def _readable(style: str, doc: dict[str, Any]) -> list[str]:
    """The strings of a post that Slack or Teams show to people (and interpret)."""
    if style == "slack":
        return [doc["text"]] + [
            text for a in doc["attachments"]
            for text in (a["fallback"], a["title"], a["text"],
                         *(v for f in a["fields"] for v in (f["title"], f["value"])))]
    return [doc["summary"], doc["title"], doc["text"]] + [
        text for s in doc["sections"]
        for text in (s["activityTitle"], s["text"],
                     *(v for f in s["facts"] for v in (f["name"], f["value"])))]


_BARE_AMPERSAND = re.compile(r"&(?!(?:amp|lt|gt|quot|#x27|#39);)")


def _assert_inert_post(path: str, lines: list[tuple[str, str]], body: bytes) -> None:
    """A webhook post: only the expected headers, each once, none carrying user text; a body
    that is strict JSON, signed with the webhook's secret, whose text for people has every
    character Slack or Teams would interpret (&, <, >) escaped."""
    names = [name.lower() for name, _ in lines]
    assert set(names) <= WEBHOOK_HEADERS and len(names) == len(set(names)), names
    headers = dict((name.lower(), value) for name, value in lines)
    for value in headers.values():
        assert not any(s in value for s in ("attacker", "pwned", "<", "DROP")), value
    doc = json.loads(body, parse_constant=_not_json)
    timestamp = headers["x-carewatch-timestamp"]
    assert verify(WEBHOOK_SECRET, timestamp, body, headers["x-carewatch-signature"],
                  now=float(timestamp))
    for text in _readable(path.strip("/"), doc):
        assert "<" not in text and ">" not in text and not _BARE_AMPERSAND.search(text), text


def _not_json(constant: str) -> Any:
    raise AssertionError(f"{constant} is not JSON")
