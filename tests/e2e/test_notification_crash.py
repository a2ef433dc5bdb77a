"""kill -9 in the middle of a send: the notification service runs as its own process
(``python -m services.notification``); the SMTP server holds the message open so that the
send is in flight when the process is killed; then the process is started again.

Two cases: the server had not accepted the message (it must still arrive, once), and the
server accepted it just after the kill (the documented window: at most one more copy,
with the same Message-ID). Providers ZZN10 and ZZN11 are synthetic.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aiosmtpd.controller import Controller

from services.notification.app import subscriptions
from shared.envelope import CONTENT_TYPE
from shared.events import Attendee, MeetingScheduled, ProviderRef, Severity
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import free_port
from tests.helpers import Inbox, calendar_part, eventually, service_env

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


class HoldingInbox(Inbox):
    """An SMTP server that, while ``holding``, keeps each message's DATA open until
    released; then records it (``accept_after_release``) or forgets it."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.accept_after_release = False
        self.release = threading.Event()
        self.in_flight = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.holding:
            self.in_flight += 1
            await asyncio.to_thread(self.release.wait)
            if not self.accept_after_release:
                return "451 4.3.0 try again"
        return await super().handle_DATA(server, session, envelope)


class NotificationProcess:
    """One ``python -m services.notification`` at a time; never left running."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "services.notification"],
                                     cwd=ROOT, env=self.env)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[HoldingInbox, int]]:
    inbox = HoldingInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    inbox.release.set()
    controller.stop()


@pytest.fixture(scope="module")
async def crash_settings(settings: Settings) -> AsyncIterator[Settings]:
    """The session's database, a broker namespace of this module's own."""
    own = settings.model_copy(update={"namespace": f"{settings.namespace}_crash"})
    topology = Topology(own.namespace, own.delivery_limit)
    connection = await aio_pika.connect(own.amqp_url)
    async with connection:
        await topology.declare(await connection.channel(), subscriptions(topology))
    yield own
    connection = await aio_pika.connect(own.amqp_url)
    async with connection:
        await topology.delete_all(await connection.channel(), subscriptions(topology))


@pytest.fixture(scope="module")
async def service(crash_settings: Settings, mail: tuple[HoldingInbox, int]
                  ) -> AsyncIterator[tuple[NotificationProcess, str]]:
    team = f"crash.team.{uuid.uuid4().hex[:8]}@icb.example"
    process = NotificationProcess(service_env(
        crash_settings, CAREWATCH_SMTP_PORT=str(mail[1]), CAREWATCH_SMTP_TIMEOUT="60",
        CAREWATCH_QUALITY_TEAM_EMAIL=team, CAREWATCH_NOTIFICATION_BACKOFF_BASE="0.05",
        CAREWATCH_NOTIFICATION_BACKOFF_CAP="0.2"))
    try:
        yield process, team
    finally:
        process.stop()


async def consuming(settings: Settings) -> bool:
    topology = Topology(settings.namespace, settings.delivery_limit)
    queue_name = topology.event_subscription("notification", MeetingScheduled.event_type).queue
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(queue_name, passive=True)
        return bool(queue.declaration_result.consumer_count)


async def publish_meeting(settings: Settings, ods: str, attendee: str) -> MeetingScheduled:
    start = datetime(2026, 12, 2, 14, tzinfo=UTC)
    meeting = MeetingScheduled(
        meeting_id=uuid.uuid4(), concern_id=uuid.uuid4(),
        provider=ProviderRef(ods_code=ods, name=f"Test Trust {ods}", provider_type="acute",
                             quality_contact_email=attendee),
        title=f"Remedial action meeting: {ods}", starts_at=start,
        ends_at=start + timedelta(hours=1), timezone="Europe/London", location="Teams",
        deadline=start, breach=False, severity=Severity.SERIOUS, agenda=["The concern"],
        remedial_actions=["A plan"],
        organizer=Attendee(role="organizer", name="ICB", email="organiser@icb.example"),
        attendees=[Attendee(role="provider quality lead", name="Pat", email=attendee)])
    envelope = meeting.envelope("carewatch/tests")
    queue = Topology(settings.namespace, settings.delivery_limit).event_subscription(
        "notification", meeting.event_type).queue
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.default_exchange.publish(
            aio_pika.Message(envelope.to_bytes(), message_id=str(envelope.id),
                             content_type=CONTENT_TYPE, user_id="guest",  # as escalation
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue, mandatory=True)
    return meeting


async def _all_sent(db: asyncpg.Pool, meeting: MeetingScheduled) -> list[asyncpg.Record] | None:
    rows = await db.fetch("SELECT * FROM notification.notifications"
                          " WHERE payload->>'meeting_id' = $1", str(meeting.meeting_id))
    return rows if len(rows) == 2 and all(r["status"] == "sent" for r in rows) else None


async def _true(value: bool) -> bool:
    return value


async def kill_mid_send(process: NotificationProcess, inbox: HoldingInbox, settings: Settings,
                        ods: str, accept_after_release: bool) -> tuple[MeetingScheduled, str]:
    """Start the service, publish a meeting, kill -9 while both sends hang, release the
    server, start the service again."""
    attendee = f"pat.{uuid.uuid4().hex[:8]}@provider.example"
    inbox.holding, inbox.accept_after_release, inbox.in_flight = True, accept_after_release, 0
    inbox.release.clear()
    process.start()
    await eventually(lambda: consuming(settings), timeout=60, what="notification consuming")
    meeting = await publish_meeting(settings, ods, attendee)
    await eventually(lambda: _true(inbox.in_flight >= 2), timeout=60, what="two sends in flight")
    process.kill()
    inbox.holding = False
    inbox.release.set()
    process.start()
    return meeting, attendee


async def test_kill_before_the_server_accepted_still_delivers_exactly_once(
        service: tuple[NotificationProcess, str], mail: tuple[HoldingInbox, int],
        crash_settings: Settings, db: asyncpg.Pool) -> None:
    process, team = service
    inbox, _ = mail
    meeting, attendee = await kill_mid_send(process, inbox, crash_settings, "ZZN10", False)
    rows = await eventually(lambda: _all_sent(db, meeting), timeout=60, what="both sent")
    await asyncio.sleep(1)
    for address in (team, attendee):
        copies = [m for m in inbox.to(address)
                  if str(meeting.meeting_id).encode() in calendar_part(m)]
        assert len(copies) == 1, address
    for row in rows:
        outcomes = [r["outcome"] for r in await db.fetch(
            "SELECT outcome FROM notification.deliveries WHERE notification_id = $1",
            row["notification_id"])]
        assert outcomes == ["sent"]  # the killed attempt left no trace but the resend
    process.stop()


async def test_kill_after_the_server_accepted_gives_at_most_one_copy_with_the_same_message_id(
        service: tuple[NotificationProcess, str], mail: tuple[HoldingInbox, int],
        crash_settings: Settings, db: asyncpg.Pool) -> None:
    process, team = service
    inbox, _ = mail
    meeting, attendee = await kill_mid_send(process, inbox, crash_settings, "ZZN11", True)
    rows = await eventually(lambda: _all_sent(db, meeting), timeout=60, what="both sent")
    await asyncio.sleep(1)
    by_recipient = {r["recipient"]: r for r in rows}
    for address in (team, attendee):
        copies = [m for m in inbox.to(address)
                  if str(meeting.meeting_id).encode() in calendar_part(m)]
        assert 1 <= len(copies) <= 2, address
        # The copy from the window carries the recorded, stable Message-ID.
        assert {m["Message-ID"] for m in copies} == {by_recipient[address]["message_id"]}
    process.stop()
