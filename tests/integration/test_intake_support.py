"""Shared by the intake tests (no tests here): an isolated stack on the real broker and
database (a database and a RabbitMQ namespace of its own), so that what these tests publish
never reaches the services the other test modules run, and the example files can be sent
exactly as they are."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from services.intake import store
from services.intake.credentials import api_key_hash, new_api_key
from shared.envelope import Envelope
from shared.settings import Settings
from tools.stacks import database_url, deprovision, provision

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "submissions"
VALID_EXAMPLES = sorted(p.stem for p in EXAMPLES.glob("*.json") if not p.stem.startswith("invalid"))


def example_message(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def body_bytes(body: Any) -> bytes:
    """The bytes examples/publish.py sends for a body."""
    return body.encode() if isinstance(body, str) else \
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@contextlib.asynccontextmanager
async def isolated_intake(base: Settings, tag: str) -> AsyncIterator[Settings]:
    """Settings of a fresh stack (tools/stacks.provision: migrated, providers loaded,
    ``guest`` registered as a feed for every provider, topology declared); removed
    afterwards."""
    name = f"cwintake_{tag}_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={
        "database_url": database_url(base.database_url, name), "namespace": name})
    await provision(base.database_url, settings)
    try:
        yield settings
    finally:
        await deprovision(base.database_url, settings)


async def issue_api_key(pool: asyncpg.Pool, feed_user: str, ods_codes: list[str]) -> str:
    """Register a feed for ``ods_codes`` with a new API key; returns the key."""
    key = new_api_key()
    async with pool.acquire() as conn:
        await store.register_feed(conn, feed_user, ods_codes, "test feed")
        await store.set_api_key(conn, feed_user, api_key_hash(key))
    return key


class EventTap:
    """A queue bound to the stack's events exchange: what intake published, by type."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel,
                 queue: aio_pika.abc.AbstractQueue) -> None:
        self.channel, self.queue = channel, queue
        self.seen: list[Envelope] = []

    @classmethod
    async def open(cls, connection: aio_pika.abc.AbstractConnection,
                   settings: Settings) -> EventTap:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(f"{settings.namespace}.events", routing_key="feedback.#")
        return cls(channel, queue)

    async def drain(self) -> list[Envelope]:
        while (msg := await self.queue.get(fail=False, no_ack=True)) is not None:
            self.seen.append(Envelope.from_bytes(msg.body))
        return self.seen

    async def find(self, event_type: str, **data: Any) -> Envelope | None:
        for envelope in await self.drain():
            if envelope.type == event_type and all(
                    str(envelope.data.get(k)) == str(v) for k, v in data.items()):
                return envelope
        return None
