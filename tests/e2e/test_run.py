"""End to end, as an operator and a provider would do it: ``carewatch run`` (what ``make run``
starts) runs the four services as processes; an independent AMQP client publishes the
checked-in example messages; a real SMTP server receives the invitations."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg
import pytest
from icalendar import Calendar

from services.catalogue import SERVICES, builder
from services.escalation.calendar import is_working_day, working_days_after
from shared.settings import Settings
from tests.helpers import Inbox, calendar_part, eventually, service_env, smtp_server

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "submissions"
LONDON = ZoneInfo("Europe/London")


async def all_consuming(settings: Settings) -> bool:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in SERVICES:
            for sub in builder(name)(settings).subscriptions:
                queue = await channel.declare_queue(sub.queue, passive=True)
                if not queue.declaration_result.consumer_count:
                    return False
    return True


@pytest.fixture(scope="module")
async def running(settings: Settings) -> AsyncIterator[tuple[subprocess.Popen[bytes], Inbox]]:
    controller, inbox = smtp_server(settings.smtp_port)
    proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "run"], cwd=ROOT,
                            env=service_env(settings, CAREWATCH_DEV_FEED_USER="guest",
                                            CAREWATCH_DEV_FEED_ODS="RJ1"))
    try:
        await eventually(lambda: all_consuming(settings), timeout=60, interval=0.5,
                         what="all four services consuming")
        yield proc, inbox
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        controller.stop()


async def publish_example(settings: Settings, name: str) -> None:
    """Publish with the independent client in examples/ (it knows nothing of carewatch)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "publish.py"), str(EXAMPLES / name),
        "--url", settings.amqp_url, "--exchange-prefix", settings.namespace,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


async def test_serious_example_gives_one_invitation_per_recipient_even_when_sent_twice(
        running: tuple[subprocess.Popen[bytes], Inbox], settings: Settings,
        db: asyncpg.Pool) -> None:
    _, inbox = running
    published = datetime.now(LONDON)
    await publish_example(settings, "serious-complaint.json")

    meeting = await eventually(lambda: db.fetchrow(
        "SELECT m.* FROM escalation.meetings m JOIN intake.feedback f"
        " ON m.concern_id IN (SELECT concern_id FROM monitor.concerns c"
        "   WHERE c.evidence @> jsonb_build_array(jsonb_build_object('feedback_id',"
        "   f.feedback_id::text)))"
        " WHERE f.provider_record_id = 'DATIX-RJ1-2026-10451'"), timeout=30,
        what="meeting booked for the serious example")
    start = meeting["starts_at"].astimezone(LONDON)
    assert is_working_day(start.date())
    assert start.date() <= working_days_after(published.date(), 2)

    uid = f"meeting-{meeting['meeting_id']}@carewatch"

    async def invitations() -> list[tuple[list[str], Any]]:
        # Only this meeting's invitations: other modules' events may still be draining.
        return [(rcpts, m) for rcpts, m in inbox.messages
                if any(p.get_content_type() == "text/calendar" for p in m.walk())
                and uid.encode() in calendar_part(m)]

    msgs = await eventually(invitations, timeout=30, what="invitation e-mails")
    cal = Calendar.from_ical(calendar_part(msgs[-1][1]))
    assert str(cal["method"]) == "REQUEST"
    await eventually(lambda: _count_at_least(invitations, 4), timeout=30,
                     what="an invitation to the quality team and each attendee")

    await publish_example(settings, "serious-complaint.json")  # the same record again
    await eventually(lambda: db.fetchval(
        "SELECT duplicates > 0 FROM intake.feedback"
        " WHERE provider_record_id = 'DATIX-RJ1-2026-10451'"), what="duplicate counted")
    await asyncio.sleep(2)  # time for any wrongly derived event to reach the inbox
    recipients = [r for rcpts, _ in await invitations() for r in rcpts]
    assert sorted(recipients) == sorted(set(recipients)), "one invitation per recipient"
    assert "quality.rj1@provider.example" in recipients
    assert await db.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE provider_record_id = 'DATIX-RJ1-2026-10451'"
    ) == 1


async def test_invalid_example_is_quarantined_and_sends_nothing(
        running: tuple[subprocess.Popen[bytes], Inbox], settings: Settings,
        db: asyncpg.Pool) -> None:
    _, inbox = running
    await publish_example(settings, "invalid-complaint.json")
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM intake.quarantine"
        " WHERE message_id = 'example-invalid-complaint-RJ1-2026-10452'"), what="quarantine row")
    assert len(row["reasons"]) >= 3
    await asyncio.sleep(1)
    assert not [m for _, m in inbox.messages if "10452" in m.as_string()], \
        "a rejected submission sends no e-mail"


async def test_ctrl_c_stops_every_process_cleanly(
        running: tuple[subprocess.Popen[bytes], Inbox]) -> None:
    proc, _ = running
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0


async def _count_at_least(probe: Any, n: int) -> bool:
    return len(await probe()) >= n
