"""Shared by the data-protection attacks (tests/security/test_data_*.py; no tests here).

A stack of its own on the real broker and database (a database and a RabbitMQ namespace of
its own), the four services running in this process, a real SMTP server, an HTTP feed with
an API key, a tap on every event published, and every log record kept; and ``leaks``, which
looks for a planted value in every table of every service (but the quarantine's raw bodies,
which are personal data by design, deleted after the retention period), every event, every
e-mail (headers and parts) and every log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aio_pika
import asyncpg
import httpx

from services.catalogue import SERVICES, builder
from services.intake import store
from services.intake.redaction import is_valid_nhs_number
from services.intake.validation import submission_id
from shared.db import create_pool
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import Inbox, eventually, publish_submission, smtp_server
from tests.integration.test_intake_support import isolated_intake, issue_api_key

SCHEMAS = ("intake", "monitor", "escalation", "notification")
HTTP_FEED = "security-http-feed"


def report(name: str, tried: int, refused: int, leaked: int) -> None:
    """The line the security suite prints for each attack."""
    print(f"\nATTACK {name}: tried {tried} refused {refused} leaked {leaked}")


def nhs_numbers(n: int, seed: int) -> list[str]:
    """``n`` distinct valid NHS numbers (Modulus 11), the same for the same seed."""
    import random
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        digits = str(rng.randrange(1_000_000_000, 9_999_999_999))
        if is_valid_nhs_number(digits) and digits not in out:
            out.append(digits)
    return out


def digits_pattern(digits: str) -> re.Pattern[str]:
    """The digits in order with up to three other characters between any two: a planted
    number however it was spaced, dotted or escaped on its way."""
    return re.compile(r"\D{0,3}".join(digits))


class LogKeeper(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except Exception:  # a record whose arguments do not format: keep them raw
            line = f"{record.msg} {record.args}"
        if record.exc_info:
            line += " " + logging.Formatter().formatException(record.exc_info)
        self.lines.append(line)


@dataclass
class DataStack:
    settings: Settings
    runtimes: dict[str, ServiceRuntime]
    inbox: Inbox
    pool: asyncpg.Pool
    amqp: aio_pika.abc.AbstractRobustConnection
    http: httpx.AsyncClient
    api_key: str
    events: list[bytes] = field(default_factory=list)
    logs: LogKeeper = field(default_factory=LogKeeper)

    async def publish(self, body: dict[str, Any] | bytes, routing_key: str | None = None,
                      message_id: str | None = None) -> uuid.UUID:
        """Publish as the ``guest`` feed; returns the submission id intake will give it."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        message_id = message_id or str(uuid.uuid4())
        kind = body.get("kind", "unknown") if isinstance(body, dict) else "unknown"
        await publish_submission(self.amqp, self.settings.namespace, raw,
                                 routing_key=routing_key or f"submission.{kind}.v1",
                                 message_id=message_id)
        return submission_id("guest", message_id, raw)

    async def outcomes(self, sids: Iterable[uuid.UUID], timeout: float = 120.0
                       ) -> dict[uuid.UUID, str]:
        """submission id -> outcome, once intake has answered every one of them."""
        wanted = list(sids)

        async def answered() -> dict[uuid.UUID, str] | None:
            rows = await self.pool.fetch(
                "SELECT submission_id, outcome FROM intake.receipts"
                " WHERE submission_id = ANY($1::uuid[])", wanted)
            return ({r["submission_id"]: r["outcome"] for r in rows}
                    if len(rows) == len(set(wanted)) else None)
        return await eventually(answered, timeout=timeout, what="intake's answers")

    async def post(self, body: bytes, path: str = "/v1/submissions",
                   content_type: str = "application/json") -> httpx.Response:
        return await self.http.post(path, content=body, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": content_type})

    async def post_patiently(self, body: bytes) -> httpx.Response:
        """POST, waiting out any 429 (as a feed honouring Retry-After does)."""
        response = await self.post(body)
        while response.status_code == 429:
            await asyncio.sleep(float(response.headers["retry-after"]))
            response = await self.post(body)
        return response

    async def settle(self, timeout: float = 120.0) -> None:
        """Wait until nothing moves: every outbox empty and every queue of the stack empty,
        three times in a row, half a second apart. Fails after ``timeout`` seconds without
        progress (what waits not going down), not on a budget sized for an idle machine."""
        deadline = time.monotonic() + timeout
        quiet = 0
        least: int | None = None
        channel = await self.amqp.channel()
        try:
            while quiet < 3:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the pipeline made no progress for {timeout:.0f} s")
                waiting = 0
                for schema in SCHEMAS:
                    waiting += await self.pool.fetchval(f"SELECT count(*) FROM {schema}.outbox")
                for runtime in self.runtimes.values():
                    for sub in runtime.subscriptions:
                        queue = await channel.declare_queue(sub.queue, passive=True)
                        waiting += queue.declaration_result.message_count or 0
                quiet = quiet + 1 if waiting == 0 else 0
                if least is None or waiting < least:
                    least, deadline = waiting, time.monotonic() + timeout
                await asyncio.sleep(0.5)
        finally:
            await channel.close()

    async def dead_letters(self) -> int:
        """Messages in the stack's dead-letter queues, plus recorded handler failures."""
        channel = await self.amqp.channel()
        total = 0
        try:
            for runtime in self.runtimes.values():
                for sub in runtime.subscriptions:
                    queue = await channel.declare_queue(f"{sub.queue}.dlq", passive=True)
                    total += queue.declaration_result.message_count or 0
        finally:
            await channel.close()
        for schema in SCHEMAS:
            total += await self.pool.fetchval(f"SELECT count(*) FROM {schema}.delivery_failures")
        return total

    async def texts(self) -> list[tuple[str, str]]:
        """(where, text) for every place personal data could have reached."""
        out: list[tuple[str, str]] = []
        for schema in SCHEMAS:
            tables = await self.pool.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                schema)
            for t in tables:
                name = f"{schema}.{t['table_name']}"
                for row in await self.pool.fetch(f"SELECT * FROM {name}"):
                    for column, value in row.items():
                        if name == "intake.quarantine" and column == "body":
                            continue  # the raw body: personal data, kept for 30 days only
                        out.append((f"table {name}.{column}", _text(value)))
        out += [("event", body.decode("utf-8", errors="replace")) for body in self.events]
        for _, msg in self.inbox.messages:
            out.append(("e-mail", _mail_text(msg)))
        out += [("log", line) for line in self.logs.lines]
        return out

    async def leaks(self, patterns: dict[str, re.Pattern[str]]) -> dict[str, list[str]]:
        """For each planted value (name -> its pattern), where it was found."""
        found: dict[str, list[str]] = {}
        for where, text in await self.texts():
            for name, pattern in patterns.items():
                if pattern.search(text):
                    found.setdefault(name, []).append(where)
        return found


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _mail_text(msg: EmailMessage) -> str:
    parts = [f"{k}: {v}" for k, v in msg.items()]
    for part in msg.walk():
        if part.get_content_maintype() == "multipart":
            continue
        try:
            content = part.get_content()
        except Exception:
            content = part.get_payload(decode=True) or b""
        parts.append(_text(content))
    return "\n".join(parts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def data_stack(base: Settings, tag: str, **overrides: Any) -> AsyncIterator[DataStack]:
    """The whole pipeline on a stack of its own (see the module docstring)."""
    async with isolated_intake(base, tag) as isolated:
        settings = isolated.model_copy(update={"smtp_port": _free_port(), "http_port": 0,
                                               **overrides})
        controller, inbox = smtp_server(settings.smtp_port)
        keeper = LogKeeper()
        root = logging.getLogger()
        level = root.level
        root.addHandler(keeper)
        root.setLevel(logging.INFO)
        runtimes = {name: builder(name)(settings) for name in SERVICES}
        pool = await create_pool(settings.database_url, min_size=1, max_size=4)
        amqp = await aio_pika.connect_robust(settings.amqp_url)
        events: list[bytes] = []
        channel = await amqp.channel()
        tap = await channel.declare_queue(exclusive=True)
        await tap.bind(f"{settings.namespace}.events", routing_key="#")

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            events.append(message.body)
            await message.ack()

        await tap.consume(keep)
        try:
            for runtime in runtimes.values():
                await runtime.start()
            codes = store.ods_codes(store.read_providers_csv(store.SAMPLE_PROVIDERS))
            key = await issue_api_key(pool, HTTP_FEED, codes)
            http = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{runtimes['intake'].http.port}", timeout=60)
            try:
                yield DataStack(settings, runtimes, inbox, pool, amqp, http, key, events,
                                keeper)
            finally:
                await http.aclose()
        finally:
            for runtime in runtimes.values():
                with contextlib.suppress(Exception):
                    await runtime.stop()
            await channel.close()
            await amqp.close()
            await pool.close()
            controller.stop()
            root.removeHandler(keeper)
            root.setLevel(level)


# Hex digits as letters: ten random hex characters are all digits about once in 110, and
# then one in eleven passes Modulus 11, so intake refuses the id as an NHS number.
_NO_DIGITS = str.maketrans("0123456789", "ghijklmnop")


def fresh_id(prefix: str) -> str:
    """A new record id, with no run of digits (which could read as personal data)."""
    return f"{prefix}-{uuid.uuid4().hex[:10].translate(_NO_DIGITS)}"
