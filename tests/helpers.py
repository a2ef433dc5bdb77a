"""Small tools the integration and end-to-end tests share."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
from aiosmtpd.controller import Controller

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "submissions"
T = TypeVar("T")


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


async def publish_submission(connection: aio_pika.abc.AbstractConnection, namespace: str,
                             body: dict[str, Any] | bytes, *, user_id: str | None = "guest",
                             message_id: str | None = None, routing_key: str | None = None,
                             content_type: str | None = "application/json") -> None:
    """Publish as a provider feed would: plain AMQP, confirms on, mandatory."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    kind = body.get("kind", "unknown") if isinstance(body, dict) else "unknown"
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        exchange = await channel.get_exchange(f"{namespace}.submissions", ensure=True)
        await exchange.publish(
            aio_pika.Message(raw, content_type=content_type, user_id=user_id,
                             message_id=message_id or str(uuid.uuid4()),
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=routing_key or f"submission.{kind}.v1", mandatory=True)
    finally:
        await channel.close()


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 15.0,
                     interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class Inbox:
    """A real SMTP server (aiosmtpd) that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.refuse = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "451 4.3.0 Mail server temporarily unavailable"
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for rcpts, m in self.messages if address in rcpts]


def smtp_server(port: int) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


class Receiver:
    """An HTTP server that records webhook posts and answers with the queued statuses."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        # Each post's header lines as received, repeated names included.
        self.header_lines: list[list[tuple[str, str]]] = []
        self.statuses: list[int] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.header_lines.append(list(self.headers.items()))
                    receiver.posts.append((self.path, dict(self.headers.items()), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def calendar_part(msg: EmailMessage) -> bytes:
    for part in msg.walk():
        if part.get_content_type() == "text/calendar":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    raise AssertionError("no text/calendar part")


def service_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment of a carewatch process (service or CLI) for this test session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREWATCH_")}
    env.update({
        "CAREWATCH_AMQP_URL": settings.amqp_url,
        "CAREWATCH_DATABASE_URL": settings.database_url,
        "CAREWATCH_NAMESPACE": settings.namespace,
        "CAREWATCH_SMTP_HOST": settings.smtp_host,
        "CAREWATCH_SMTP_PORT": str(settings.smtp_port),
        "CAREWATCH_DELIVERY_LIMIT": str(settings.delivery_limit),
        "CAREWATCH_HTTP_PORT": "0",  # never collide with a stack running beside the tests
        "CAREWATCH_LOG_FORMAT": "text",
        **extra,
    })
    return env


async def carewatch(settings: Any, *args: str) -> tuple[int, str]:
    """Run the ``carewatch`` CLI as an operator would; returns (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", *args, env=service_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()
