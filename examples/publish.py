#!/usr/bin/env python3
"""Publish example submissions to RabbitMQ, as a provider feed would.

An independent AMQP client: it needs only aio-pika (``pip install aio-pika``), not carewatch.
It reads message files from ``examples/submissions/`` (see ``examples/README.md``) and
publishes each with publisher confirms and ``mandatory`` set, so it either reports that the
broker took the message or says why not.

    python examples/publish.py examples/submissions/serious-complaint.json
    python examples/publish.py examples/submissions/*.json          # several, in order
    python examples/publish.py FILE --url amqp://feed-rj1:secret@broker:5672/ --user-id feed-rj1
    python examples/publish.py FILE --exchange-prefix cwtest   # -> cwtest.submissions

Every file is read and checked before anything is published. Exit status: 0 all published
and routed, 1 one or more not published (or not routed), 2 bad arguments or file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelClosed,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_PREFIX = "carewatch"
FILE_PREFIX = "carewatch"  # the namespace the example files are written for

# AMQP basic properties a message file may set, by their aio_pika.Message argument name.
PROPERTIES = {
    "content_type", "content_encoding", "headers", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type", "user_id",
    "app_id",
}


class Usage(Exception):
    """A problem with the arguments or the message file (exit status 2)."""


def load(path: Path) -> dict[str, Any]:
    try:
        message = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise Usage(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise Usage(f"{path} is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise Usage(f"{path}: expected a JSON object")
    missing = [k for k in ("exchange", "routing_key", "body") if k not in message]
    if missing:
        raise Usage(f"{path}: missing {', '.join(missing)}")
    unknown = set(message) - {"exchange", "routing_key", "properties", "body"}
    if unknown:
        raise Usage(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    properties = message.get("properties") or {}
    if not isinstance(properties, dict):
        raise Usage(f"{path}: properties must be an object")
    bad = set(properties) - PROPERTIES
    if bad:
        raise Usage(f"{path}: unknown AMQP properties {', '.join(sorted(bad))}"
                    f" (allowed: {', '.join(sorted(PROPERTIES))})")
    return message


def body_bytes(body: Any) -> bytes:
    """A JSON body is sent compact and UTF-8 encoded, so the same file always produces the
    same bytes; a string body is sent verbatim (for examples of malformed payloads)."""
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def exchange_name(name: str, prefix: str) -> str:
    """Replace the leading ``carewatch`` namespace with ``prefix``."""
    if name == FILE_PREFIX:
        return prefix
    if name.startswith(FILE_PREFIX + "."):
        return prefix + name[len(FILE_PREFIX):]
    return name


def connection_user(url: str) -> str:
    user = urlsplit(url).username
    return unquote(user) if user else "guest"  # RabbitMQ clients default to guest


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


async def publish(message: dict[str, Any], url: str, prefix: str,
                  user_id: str | None) -> int:
    exchange = exchange_name(message["exchange"], prefix)
    routing_key = message["routing_key"]
    properties = dict(message.get("properties") or {})
    properties.setdefault("delivery_mode", 2)  # persistent unless the file says otherwise
    if user_id is not None:
        properties["user_id"] = user_id
    # RabbitMQ refuses a user_id that is not the authenticated user: fail early and clearly.
    if "user_id" in properties and properties["user_id"] != connection_user(url):
        raise Usage(f"the message's user_id is {properties['user_id']!r} but the connection"
                    f" logs in as {connection_user(url)!r}; RabbitMQ would refuse it. Use"
                    f" --user-id or connect as that user.")
    try:
        properties["delivery_mode"] = aio_pika.DeliveryMode(int(properties["delivery_mode"]))
    except (TypeError, ValueError) as exc:
        raise Usage(f"delivery_mode must be 1 or 2, not {properties['delivery_mode']!r}") from exc
    body = body_bytes(message["body"])

    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            target = await channel.get_exchange(exchange, ensure=True)
        except (ChannelNotFoundEntity, ChannelClosed) as exc:
            print(f"error: exchange {exchange!r} does not exist on {redact_url(url)} ({exc})."
                  f" Is the stack running, and is {prefix!r} its namespace?", file=sys.stderr)
            return 1
        try:
            await target.publish(aio_pika.Message(body, **properties), routing_key,
                                 mandatory=True, timeout=30)
        except PublishError as exc:
            print(f"error: the broker returned the message as unroutable ({exc}): no queue is"
                  f" bound to {exchange!r} for {routing_key!r}. Is intake running?",
                  file=sys.stderr)
            return 1
        except DeliveryError as exc:
            print(f"error: the broker refused the message (nack): {exc}", file=sys.stderr)
            return 1

    shown = {k: (int(v) if k == "delivery_mode" else v) for k, v in properties.items()}
    print(f"published to exchange {exchange!r} with routing key {routing_key!r}"
          f" on {redact_url(url)}")
    print(f"  properties: {json.dumps(shown, sort_keys=True)}")
    print(f"  body: {len(body)} bytes, confirmed by the broker and routed")
    return 0


async def publish_all(messages: list[tuple[Path, dict[str, Any]]], url: str, prefix: str,
                      user_id: str | None) -> int:
    """Publish each file's message in turn; the worst exit status of them."""
    status = 0
    for path, message in messages:
        if len(messages) > 1:
            print(f"{path}:")
        status = max(status, await publish(message, url, prefix, user_id))
    if len(messages) > 1:
        print(f"{len(messages)} files: " + ("not all published; see the errors above" if status
                                             else "all published and routed"))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Publish example submission files (examples/submissions/*.json), in order.")
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE",
                        help="message file(s) to publish")
    parser.add_argument("--url", default=DEFAULT_URL,
                        help=f"AMQP URL of the broker (default: {DEFAULT_URL})")
    parser.add_argument("--exchange-prefix", default=DEFAULT_PREFIX, metavar="PREFIX",
                        help="namespace replacing the leading 'carewatch' of the exchange name"
                             f" (default: {DEFAULT_PREFIX})")
    parser.add_argument("--user-id", metavar="USER",
                        help="override the file's user_id property (must be the user the"
                             " URL logs in as)")
    args = parser.parse_args(argv)
    try:
        messages = [(path, load(path)) for path in args.files]
        return asyncio.run(publish_all(messages, args.url, args.exchange_prefix, args.user_id))
    except Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (AMQPConnectionError, ConnectionError, OSError, TimeoutError) as exc:
        print(f"error: cannot publish via {redact_url(args.url)}: {exc!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
