"""Small tools the integration and end-to-end tests share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
from aiosmtpd.controller import Controller

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "submissions"
T = TypeVar("T")


@contextlib.asynccontextmanager
async def scratch_pool(admin_dsn: str, prefix: str,
                       migrations: Sequence[tuple[str, Path, bool]]) -> AsyncIterator[Any]:
    """A database of its own (``carewatch_test_<prefix>_<random>``) with the migrations
    given (schema, folder, whether the shared messaging tables come too), and a pool on it
    (JSON columns as Python objects); dropped afterwards. For a store tested without a
    broker."""
    from shared.db import migrate
    from tools.stacks import scratch_database

    async with scratch_database(f"carewatch_test_{prefix}_{uuid.uuid4().hex[:8]}", 3,
                                admin_dsn, json_columns=True) as pool:
        async with pool.acquire() as conn:
            for schema, folder, messaging in migrations:
                await migrate(conn, schema, folder, messaging=messaging)
        yield pool


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


ProgressProbe = Callable[[], Awaitable[object]]
_default_progress: ProgressProbe | None = None


def watch_progress(probe: ProgressProbe | None) -> None:
    """Set the sign of progress ``eventually`` consults by default (the session's database)."""
    global _default_progress
    _default_progress = probe


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 15.0,
                     interval: float = 0.1, what: str = "condition",
                     progress: ProgressProbe | None = None, limit: float | None = None) -> T:
    """Poll ``probe`` until it returns something truthy.

    ``timeout`` is how long the system may go *without progress*, not a budget sized for an
    idle machine: while ``progress()`` (by default, the writes of the test session's database)
    keeps changing, the wait goes on, up to ``limit`` seconds in all (10 x timeout, at least
    5 minutes), so a loaded machine is slower but not a failure, and a stalled system still
    fails in ``timeout`` seconds.
    """
    progress = progress or _default_progress
    start = time.monotonic()
    cap = start + (limit if limit is not None else max(10 * timeout, 300.0))
    deadline = start + timeout
    seen = await progress() if progress else None
    while True:
        result = await probe()
        if result:
            return result
        now = time.monotonic()
        if now > deadline:
            current = await progress() if progress else seen
            if current == seen or now > cap:
                waited = now - start
                raise AssertionError(f"waited {waited:.0f}s ({timeout}s without progress) for {what}")
            seen, deadline = current, now + timeout
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


def body_text(msg: EmailMessage, subtype: str = "plain") -> str:
    """The text of ``msg``'s text/``subtype`` body (an assertion fails if it has none)."""
    part = msg.get_body((subtype,))
    assert part is not None, f"no text/{subtype} body"
    text: str = part.get_content()
    return text


def service_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment of a carewatch process (service or CLI) for this test session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREWATCH_")}
    env.update({
        "CAREWATCH_AMQP_URL": settings.amqp_url,
        "CAREWATCH_DATABASE_URL": settings.database_url,
        "CAREWATCH_NAMESPACE": settings.namespace,
        "CAREWATCH_BROKER_USERS": json.dumps(settings.broker_users),
        # The local broker and database of the tests have weak credentials (guest, trust).
        "CAREWATCH_DEV_MODE": "1",
        "CAREWATCH_SMTP_HOST": settings.smtp_host,
        "CAREWATCH_SMTP_PORT": str(settings.smtp_port),
        "CAREWATCH_DELIVERY_LIMIT": str(settings.delivery_limit),
        "CAREWATCH_HTTP_PORT": "0",  # never collide with a stack running beside the tests
        "CAREWATCH_INBOUND_SMTP_PORT": "0",
        "CAREWATCH_LOG_FORMAT": "text",
        **extra,
    })
    return env


async def carewatch(settings: Any, *args: str, env: dict[str, str] | None = None
                    ) -> tuple[int, str]:
    """Run the ``carewatch`` CLI as an operator would; returns (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", *args,
        env=service_env(settings, **(env or {})),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def token_for(pool: Any, name: str, *roles: str, ods_codes: tuple[str, ...] = (),
                    kind: str = "person") -> str:
    """A bearer token of account ``name`` (created with ``roles`` if it does not exist yet),
    for tests that call the services' HTTP APIs as someone."""
    from shared import identity

    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT true FROM identity.accounts WHERE name = $1", name):
            await identity.add_account(conn, identity.NewAccount(
                name, list(roles), kind, list(ods_codes)), created_by="tests")
        return await identity.create_token(
            conn, name, scopes=None, days=1, label="tests", created_by="tests")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- broker users made by tests (rabbitmqctl against the local broker) ---------------------------
def rabbitmqctl(*args: str, check: bool = True) -> str:
    """Run ``rabbitmqctl -s`` (no headers); its output. A broker that does not answer within a
    minute fails the test instead of hanging it."""
    import subprocess
    done = subprocess.run(["rabbitmqctl", "-s", *args], capture_output=True, text=True,
                          timeout=60, check=False)
    if check and done.returncode:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {done.stdout}{done.stderr}")
    return done.stdout


def user_connections(user: str) -> list[str]:
    """The pids of the broker's connections authenticated as ``user``."""
    pids = []
    for line in rabbitmqctl("list_connections", "pid", "user").splitlines():
        pid, _, who = line.partition("\t")
        if who == user:
            pids.append(pid)
    return pids


def delete_broker_user(user: str, patience: float = 60.0) -> None:
    """Delete a broker user made by a test, safely: RabbitMQ 3.10 deleting a user that still
    has open connections has hung the whole broker here (TCP accepted, no AMQP handshake).
    So: change its password (nothing can reconnect as it), close each of its connections,
    wait until the broker lists none, and only then delete it. If they do not go (no
    progress for ``patience`` seconds) the user is left in place and the test fails."""
    import secrets
    if user not in (line.partition("\t")[0] for line in rabbitmqctl("list_users").splitlines()):
        return
    rabbitmqctl("change_password", user, secrets.token_hex(24))  # never a leading "-"
    least, deadline = None, time.monotonic() + patience
    while pids := user_connections(user):
        if least is None or len(pids) < least:
            least, deadline = len(pids), time.monotonic() + patience
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker user {user}: {len(pids)} connection(s) would not close;"
                               " left in place rather than deleted with connections open")
        for pid in pids:
            rabbitmqctl("close_connection", pid, "test over: its user is being deleted",
                        check=False)  # it may have closed meanwhile
        time.sleep(0.2)
    rabbitmqctl("delete_user", user)
