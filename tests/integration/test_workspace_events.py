"""The workspace on the REAL broker: its read model fed by events published as their owners
would, and the operator's page of every service's dead letters.

A stack of this module's own (database and broker namespace): the workspace and escalation
run whole (consumers, relay, HTTP). The test publishes ``meeting.scheduled.v1`` as escalation
and ``meeting.reply.v1`` as notification (the broker checks ``user_id`` against the login;
every service here logs in as ``guest``), and one reply without a ``user_id``: no service may
take an event whose sender is not its owner, so the workspace and escalation both
dead-letter it, and the operator sees it, with why, on the workspace's dead-letters page.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg
import httpx
import pytest

from services.escalation.app import build as build_escalation
from services.workspace.app import build as build_workspace
from services.workspace.config import WorkspaceSettings
from shared import identity
from shared.envelope import CONTENT_TYPE, Envelope
from shared.events import Attendee, Event, MeetingReplied, MeetingScheduled, ProviderRef, Severity
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import eventually
from tools.stacks import database_url, deprovision, provision

pytestmark = pytest.mark.integration
LONDON = ZoneInfo("Europe/London")
PASSWORD = "a long enough password"
LEAD, OPS = "lead@icb.example.nhs.uk", "ops@icb.example.nhs.uk"


@dataclass
class Stack:
    settings: Settings
    runtimes: dict[str, ServiceRuntime]
    channel: aio_pika.abc.AbstractChannel

    async def publish(self, event: Event, source: str, user_id: str | None = "guest") -> Envelope:
        """As the owner's relay would: persistent, mandatory, message_id = envelope id."""
        envelope = event.envelope(f"carewatch/{source}")
        exchange = await self.channel.get_exchange(f"{self.settings.namespace}.events",
                                                   ensure=False)
        await exchange.publish(
            aio_pika.Message(envelope.to_bytes(), message_id=str(envelope.id), user_id=user_id,
                             content_type=CONTENT_TYPE,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=event.routing_key(), mandatory=True)
        return envelope

    async def sign_in(self, who: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.runtimes["workspace"].http.api),
            base_url="http://workspace.test")
        response = await client.post("/sign-in", data={"email": who, "password": PASSWORD})
        assert response.status_code == 303, response.text
        return client


@pytest.fixture(scope="module")
async def stack(server_urls: Any) -> AsyncIterator[Stack]:
    from tests.conftest import free_port

    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        amqp_url=server_urls.amqp,
        database_url=database_url(server_urls.postgres_admin, f"carewatch_test_{tag}"),
        namespace=f"cwtest_{tag}", broker_users={"*": "guest"}, delivery_limit=3,
        outbox_poll_interval=0.5, graceful_timeout=5, http_port=0)
    await provision(server_urls.postgres_admin, settings)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    async with pool.acquire() as conn:
        for name, role in ((LEAD, identity.QUALITY_LEAD), (OPS, identity.OPERATOR)):
            await identity.add_account(conn, identity.NewAccount(name, [role]), "tests")
            await identity.set_password(conn, name, PASSWORD)
        await identity.add_account(conn, identity.NewAccount(
            "workspace", [identity.OPERATOR], kind="service"), "tests")
        token = await identity.create_token(conn, "workspace", scopes=None, days=1,
                                            label="workspace", created_by="tests")
    await pool.close()
    escalation = build_escalation(settings)
    await escalation.start()
    nobody = f"http://127.0.0.1:{free_port()}"  # intake, quality-monitor, notification: down
    workspace = build_workspace(settings, workspace=WorkspaceSettings(
        token=token, escalation_url=f"http://127.0.0.1:{escalation.http.port}",
        monitor_url=nobody, intake_url=nobody, notification_url=nobody,
        insecure_cookies=True))
    await workspace.start()
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        async with connection:
            yield Stack(settings, {"escalation": escalation, "workspace": workspace},
                        await connection.channel(publisher_confirms=True))
    finally:
        await workspace.stop()
        await escalation.stop()
        await deprovision(server_urls.postgres_admin, settings)


def this_week_meeting() -> MeetingScheduled:
    """A meeting on the Monday of this week (UK time), so the overview lists it."""
    today = datetime.now(UTC).astimezone(LONDON).date()
    starts = datetime.combine(today - timedelta(days=today.weekday()), time(10), LONDON)
    provider = ProviderRef(ods_code="RAT", name="Trust RAT", provider_type="acute",
                           quality_contact_email="lead@rat.example.nhs.uk")
    return MeetingScheduled(
        meeting_id=uuid.uuid4(), concern_id=uuid.uuid4(), provider=provider,
        title=f"Remedial meeting {uuid.uuid4().hex[:6]}", starts_at=starts,
        ends_at=starts + timedelta(hours=1), timezone="Europe/London", location="Teams",
        deadline=starts + timedelta(days=1), breach=False, severity=Severity.SERIOUS,
        agenda=["Falls"], remedial_actions=[],
        organizer=Attendee(role="organizer", name="The ICB", email="quality@icb.example.nhs.uk"),
        attendees=[Attendee(role="provider quality lead", name="Pat Provider",
                            email="lead@rat.example.nhs.uk"),
                   Attendee(role="lay member", name="Lee Lay", email="lay@icb.example.nhs.uk"),
                   Attendee(role="healthwatch", name="Hana Healthwatch",
                            email="hw@healthwatch.example")])


def reply(meeting: MeetingScheduled, email: str, partstat: str) -> MeetingReplied:
    return MeetingReplied(meeting_id=meeting.meeting_id, attendee=email,
                          partstat=partstat,  # type: ignore[arg-type]
                          sequence=meeting.sequence, received_at=datetime.now(UTC))


def section(html: str, service: str) -> str:
    """The part of the dead-letters page about one service."""
    parts = html.split(f'id="service-{service}"', 1)
    return parts[1].split("<h2", 1)[0] if len(parts) == 2 else ""


def row_of(html: str, name: str) -> str:
    found = re.search(rf"<tr[^>]*>\s*<td[^>]*>{re.escape(name)}</td>.*?</tr>", html, re.DOTALL)
    assert found, html
    return found.group(0)


async def test_replies_show_on_the_meeting_and_the_overview_and_a_stranger_is_dead_lettered(
        stack: Stack) -> None:
    meeting = this_week_meeting()
    await stack.publish(meeting, "escalation")
    # A reply to the same meeting may arrive before or after it: the read model takes both.
    await stack.publish(reply(meeting, "LEAD@rat.example.nhs.uk", "declined"), "notification")
    await stack.publish(reply(meeting, "lay@icb.example.nhs.uk", "accepted"), "notification")
    stranger = await stack.publish(reply(meeting, "hw@healthwatch.example", "tentative"),
                                   "notification", user_id=None)
    lead = await stack.sign_in(LEAD)
    page_url = f"/meetings/{meeting.meeting_id}"

    async def both_replies() -> str | None:
        page = await lead.get(page_url)
        return page.text if "1 accepted, 1 declined" in page.text else None
    page = await eventually(both_replies, what="both replies on the meeting page")
    assert "1 accepted, 1 declined, 0 tentative, 1 no reply." in page
    assert "Declined" in row_of(page, "Pat Provider")
    assert "Accepted" in row_of(page, "Lee Lay")
    assert "No reply" in row_of(page, "Hana Healthwatch")
    assert "Organiser" in row_of(page, "The ICB")

    overview = (await lead.get("/")).text
    mine = row_of(overview, f'<a href="{page_url}">{meeting.title}</a>')
    assert "Accepted (1): Lee Lay" in mine and "Declined (1): Pat Provider" in mine
    assert "No reply (1): Hana Healthwatch" in mine and "Tentative" not in mine

    # The reply without a sender: refused by the workspace's and escalation's consumers,
    # kept in their dead-letter queues, and shown to the operator with why.
    why = "sender: meeting.reply.v1 is published by notification; this one has no user_id"
    ops = await stack.sign_in(OPS)

    async def dead_lettered() -> str | None:
        listed = await ops.get("/operations/dead-letters")
        assert listed.status_code == 200, listed.text
        shown = [s for s in ("workspace", "escalation")
                 if str(stranger.id) in section(listed.text, s)]
        return listed.text if len(shown) == 2 else None
    listed = await eventually(dead_lettered, what="the refused reply on the dead-letters page")
    ns = stack.settings.namespace
    for service in ("workspace", "escalation"):
        part = section(listed, service)
        assert "<p>1 message in " in part
        assert f"{ns}.{service}.meeting.reply.v1.dlq: 1 message" in part
        assert str(stranger.id) in part and why in part
        assert "The broker says: rejected" in part
    # The services not running say so; the page is still served.
    assert "There is a problem" in listed and "intake: intake could not be reached" in listed
    # Still no reply from the stranger's address: the refused reply changed nothing.
    assert "No reply" in row_of((await lead.get(page_url)).text, "Hana Healthwatch")

    # Operators only: the quality lead is refused the page, and escalation's API without a
    # token.
    assert (await lead.get("/operations/dead-letters")).status_code == 403
    escalation = stack.runtimes["escalation"].http.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{escalation}") as raw:
        assert (await raw.get("/v1/dead-letters")).status_code == 401
    # Peeked, not taken: the messages are still in their queues.
    still = await stack.runtimes["workspace"].operations.dead_letters(5)
    depths = {q["dead_letter_queue"]: q["depth"] for q in still["queues"]}
    assert depths[f"{ns}.workspace.meeting.reply.v1.dlq"] == 1
    await lead.aclose()
    await ops.aclose()
