"""Attendees' replies: a REPLY sent by a real SMTP client (aiosmtplib) to notification's real
inbound SMTP endpoint, recorded by escalation through the real broker and database.

escalation and notification run in this process on a broker namespace of this module's own;
a real SMTP server (aiosmtpd) catches the invitations notification sends, and the tests
answer them as a calendar client would (METHOD:REPLY, the same UID and SEQUENCE).
On the real clock, in the session's database: provider RP4, which no other module books on
the real clock (its meeting would be the open meeting their concerns join).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aio_pika
import aiosmtplib
import asyncpg
import httpx
import pytest
from icalendar import Calendar, vCalAddress, vText
from icalendar import Event as VEvent

from services.escalation.app import EscalationRuntime
from services.escalation.app import build as build_escalation
from services.escalation.app import subscriptions as escalation_subscriptions
from services.notification.app import build as build_notification
from services.notification.app import subscriptions as notification_subscriptions
from shared.events import Severity
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import free_port
from tests.helpers import Inbox, bearer, calendar_part, eventually, smtp_server, token_for
from tests.integration.test_escalation import Publisher, concern

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def services(settings: Settings, amqp: aio_pika.abc.AbstractConnection
                   ) -> AsyncIterator[tuple[EscalationRuntime, ServiceRuntime, Inbox,
                                            Settings]]:
    own = settings.model_copy(update={"namespace": f"{settings.namespace}_rpl",
                                      "smtp_port": free_port(), "inbound_smtp_port": 0})
    topology = Topology(own.namespace, own.delivery_limit)
    subscriptions = [*escalation_subscriptions(topology),
                     *notification_subscriptions(topology)]
    channel = await amqp.channel()
    await topology.declare(channel, subscriptions)
    controller, inbox = smtp_server(own.smtp_port)
    escalation = build_escalation(own)
    notification = build_notification(own)
    await escalation.start()
    await notification.start()
    await notification.inbound_smtp.serving.wait()  # type: ignore[attr-defined]
    yield escalation, notification, inbox, own
    await notification.stop()
    await escalation.stop()
    controller.stop()
    await topology.delete_all(channel, subscriptions)
    await channel.close()


def reply(invitation: bytes, attendee: str, partstat: str, *, sender: str | None = None
          ) -> EmailMessage:
    """What a calendar client sends back: METHOD:REPLY with the invitation's UID, SEQUENCE
    and organiser, and the attendee's PARTSTAT."""
    invited = Calendar.from_ical(invitation).walk("VEVENT")[0]
    cal = Calendar()
    cal.add("prodid", "-//test calendar client//EN")
    cal.add("version", "2.0")
    cal.add("method", "REPLY")
    event = VEvent()
    for name in ("uid", "sequence", "dtstart", "dtend", "organizer"):
        event[name] = invited[name]
    event.add("dtstamp", datetime.now(UTC))
    who = vCalAddress(f"mailto:{attendee}")
    who.params["partstat"] = vText(partstat)
    event.add("attendee", who, encode=False)
    cal.add_component(event)
    msg = EmailMessage()
    msg["From"] = sender or attendee
    msg["To"] = "quality.team@icb.example.nhs.uk"
    msg["Subject"] = f"{partstat.title()}: {invited['summary']}"
    msg["Message-ID"] = f"<{uuid.uuid4()}@client.example>"
    msg.set_content(f"{partstat.title()}.")
    msg.add_alternative(cal.to_ical().decode(), subtype="calendar", params={"method": "REPLY"})
    return msg


async def send(notification: ServiceRuntime, msg: EmailMessage, sender: str) -> tuple[int, str]:
    """Send with a real SMTP client; the server's answer to the message."""
    port = notification.inbound_smtp.port  # type: ignore[attr-defined]
    try:
        _, answer = await aiosmtplib.send(msg, hostname="127.0.0.1", port=port,
                                               sender=sender,
                                               recipients=["quality.team@icb.example.nhs.uk"])
        return 250, answer
    except aiosmtplib.SMTPDataError as exc:
        return exc.code, exc.message


async def test_replies_are_recorded_refused_when_not_invited_and_a_lead_decline_proposes_a_slot(
        services: Any, amqp: aio_pika.abc.AbstractConnection, db: asyncpg.Pool) -> None:
    escalation, notification, inbox, own = services
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    c = concern("RP4", Severity.SERIOUS, raised_at=datetime.now(UTC))
    await Publisher(channel, own.namespace).send(c)
    row = await eventually(lambda: db.fetchrow(
        "SELECT m.* FROM escalation.meetings m JOIN escalation.meeting_concerns mc"
        " USING (meeting_id) WHERE mc.concern_id = $1", c.concern_id), what="meeting")
    meeting_id = row["meeting_id"]
    lead = "quality.rp4@provider.example"

    def invitation_to(address: str) -> bytes | None:
        for m in inbox.to(address):
            part = calendar_part(m)
            if str(meeting_id).encode() in part:
                return part
        return None

    invite = await eventually(lambda: _async(invitation_to(lead)), what="invitation")
    # The lay member accepts; the provider's lead declines.
    code, answer = await send(notification, reply(invite, own.lay_member_email, "ACCEPTED"),
                              own.lay_member_email)
    assert code == 250 and "accepted" in answer
    code, answer = await send(notification, reply(invite, lead, "DECLINED"), lead)
    assert code == 250 and "declined" in answer

    # The meeting as the quality team sees it (every route is authenticated).
    reader = bearer(await token_for(db, "rsvp.reader@icb.example", "quality_team"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{escalation.http.port}",
                                 headers=reader) as api:
        async def rsvp() -> dict[str, str] | None:
            m = (await api.get(f"/v1/meetings/{meeting_id}")).json()
            got = {a["email"]: a["rsvp"] for a in m["attendees"]}
            return got if got.get(lead) == "declined" else None
        shown = await eventually(rsvp, what="replies recorded")
    assert shown[own.lay_member_email] == "accepted"
    assert shown[own.quality_lead_email] == "needs-action"
    # The decline proposes the next free slot to the quality team, by e-mail.
    proposed = await eventually(lambda: db.fetchval(
        "SELECT proposed_starts_at FROM escalation.meetings WHERE meeting_id = $1",
        meeting_id), what="a slot proposed")
    assert proposed >= row["ends_at"]
    mail = await eventually(lambda: _async([m for m in inbox.to(own.quality_team_email)
                                            if str(m["Subject"]).find("Declined") >= 0]),
                            what="proposal e-mailed to the quality team")
    assert "reschedule" in mail[0].get_body(("plain",)).get_content()
    audit = await db.fetch("SELECT party, actor, action FROM escalation.audit_log"
                           " WHERE concern_id = $1 AND action LIKE 'meeting invitation %'",
                           c.concern_id)
    assert {(a["party"], a["actor"], a["action"]) for a in audit} == {
        ("commissioner", own.lay_member_email, "meeting invitation accepted"),
        ("provider", lead, "meeting invitation declined")}

    # Refused: someone not invited; an attendee's reply sent by someone else; not a reply.
    stranger = "someone@elsewhere.example"
    code, answer = await send(notification, reply(invite, stranger, "ACCEPTED"), stranger)
    assert code == 550 and "not invited" in answer
    code, answer = await send(notification, reply(invite, lead, "ACCEPTED", sender=stranger),
                              stranger)
    assert code == 550 and "not the sender" in answer
    plain = EmailMessage()
    plain["From"] = lead
    plain["Subject"] = "hello"
    plain.set_content("not a calendar reply")
    code, answer = await send(notification, plain, lead)
    assert code == 550 and "no text/calendar" in answer
    assert await db.fetchval("SELECT count(*) FROM notification.replies WHERE meeting_id = $1",
                             meeting_id) == 2
    await channel.close()


async def _async(value: Any) -> Any:
    return value
