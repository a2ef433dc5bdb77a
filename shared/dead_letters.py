"""A service's dead letters, for the operator: each dead-letter queue's depth and its messages,
with why each was dead-lettered (the broker's ``x-death`` and the errors the service's
consumers recorded in its own ``delivery_failures``).

Each service answers for its own queues and its own table (``GET /v1/dead-letters``, operator
only), so the workspace's page reads no other service's tables. Messages are peeked as
``carewatch dlq show`` does: taken without an acknowledgement and returned, in order, when the
channel closes (nothing is consumed). Their bodies are never given out (intake's dead letters
are providers' submissions, with personal data); errors lose the input values pydantic quotes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import aio_pika
import asyncpg

from shared.topology import Subscription

MAX_PEEK = 100
# pydantic quotes the offending input in its errors: ``input_value='...', input_type=str``.
_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=)", re.DOTALL)


def scrub(error: str, limit: int = 1000) -> str:
    """An error without the input values it quotes, at most ``limit`` characters (pure)."""
    text = _INPUT_VALUE.sub("input_value=(not shown)", error)
    return text if len(text) <= limit else text[:limit] + "..."


def describe(message_id: str | None, routing_key: str | None,
             headers: dict[str, Any] | None) -> dict[str, Any]:
    """A dead-lettered message as the broker's ``x-death`` header tells it (pure)."""
    deaths = (headers or {}).get("x-death") or []
    first: dict[str, Any] = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    keys = first.get("routing-keys") or [routing_key]
    at = first.get("time")
    return {
        "message_id": message_id,
        "routing_key": str(keys[0]) if keys and keys[0] is not None else None,
        "queue": first.get("queue"),
        "reason": first.get("reason"),
        "times": first.get("count"),
        "dead_lettered_at": at.isoformat() if isinstance(at, datetime) else at,
    }


async def peek(amqp_url: str, subscriptions: Iterable[Subscription],
               limit: int) -> list[dict[str, Any]]:
    """Each dead-letter queue of these subscriptions: its depth (None: not declared) and its
    first ``limit`` messages (left in the queue)."""
    limit = max(0, min(limit, MAX_PEEK))
    queues: list[dict[str, Any]] = []
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        for sub in subscriptions:
            # One channel per queue: closing it returns that queue's peeked messages.
            channel = await connection.channel()
            messages: list[dict[str, Any]] = []
            try:
                queue = await channel.declare_queue(sub.dead_letter_queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                depth = None  # not declared (``carewatch declare``, or the service's start)
            else:
                depth = queue.declaration_result.message_count or 0
                for _ in range(min(depth, limit)):
                    msg = await queue.get(no_ack=False, fail=False)
                    if msg is None:
                        break
                    messages.append(describe(msg.message_id, msg.routing_key,
                                             dict(msg.headers or {})))
            if not channel.is_closed:
                await channel.close()
            queues.append({"queue": sub.queue, "dead_letter_queue": sub.dead_letter_queue,
                           "depth": depth, "messages": messages})
    return queues


async def with_errors(pool: asyncpg.Pool, schema: str,
                      queues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The queues' messages with the errors this service recorded for them, oldest first."""
    ids = [m["message_id"] for q in queues for m in q["messages"] if m["message_id"]]
    rows = await pool.fetch(
        f'SELECT message_id, attempt, error, failed_at FROM "{schema}".delivery_failures'
        " WHERE message_id = ANY($1::text[]) ORDER BY id", ids) if ids else []
    errors: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        errors.setdefault(r["message_id"], []).append(
            {"attempt": r["attempt"], "error": scrub(r["error"]),
             "at": r["failed_at"].isoformat()})
    for q in queues:
        for m in q["messages"]:
            m["errors"] = errors.get(m["message_id"] or "", [])[-5:]
    return queues
