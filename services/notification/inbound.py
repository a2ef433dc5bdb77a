"""Attendees' replies to meeting invitations, received by an inbound SMTP endpoint.

A calendar client answers an invitation with an iTIP REPLY (RFC 5546): an e-mail carrying a
``text/calendar; method=REPLY`` part whose VEVENT has the meeting's UID and the attendee's
PARTSTAT (ACCEPTED, DECLINED, TENTATIVE). This module runs a real SMTP server (aiosmtpd) in
the notification process. A reply is accepted (250) only if:

- it holds exactly one REPLY for a carewatch meeting (UID ``meeting-<id>@carewatch``);
- its ATTENDEE is the envelope sender and the From: address (a reply speaks for its sender
  only);
- that address was invited: it is an attendee of the meeting's latest invitation that
  notification sent.

Anything else is refused with a 5xx and the reason, and nothing is recorded. An accepted reply
is stored (``notification.replies``) and published as ``meeting.reply.v1`` in one
transaction (the outbox); escalation records it per attendee. The same message delivered
twice is recorded once (by its Message-ID).

The endpoint trusts the envelope sender as the network delivers it: deploy it behind the
ICB's mail gateway, which checks SPF/DKIM/DMARC, never open to the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import asyncpg
from aiosmtpd.smtp import SMTP, Envelope, Session
from icalendar import Calendar

from services.notification import store
from shared.events import MeetingReplied
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
UID = re.compile(r"^meeting-([0-9a-f-]{36})@carewatch$", re.IGNORECASE)
PARTSTATS = {"ACCEPTED": "accepted", "DECLINED": "declined", "TENTATIVE": "tentative"}
MAX_MESSAGE_BYTES = 1_000_000


class ReplyRefused(ValueError):
    """The message is not a reply carewatch accepts; the text says why."""


@dataclass(frozen=True)
class Reply:
    meeting_id: uuid.UUID
    attendee: str
    partstat: str
    sequence: int
    message_key: str  # de-duplicates a message delivered twice


def _address(value: str) -> str:
    return parseaddr(value)[1].strip().lower()


def _calendar_parts(msg: EmailMessage) -> list[bytes]:
    parts = []
    for part in msg.walk():
        if part.get_content_type() in ("text/calendar", "application/ics"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                parts.append(payload)
    return parts


def parse_reply(raw: bytes, mail_from: str) -> Reply:
    """The reply this message carries, or ReplyRefused with the reason. Pure."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    sender = _address(mail_from)
    header_from = _address(str(msg.get("From", "")))
    if not sender or header_from != sender:
        raise ReplyRefused(f"the From: address ({header_from or 'none'}) is not the envelope"
                           f" sender ({sender or 'none'})")
    parts = _calendar_parts(msg)
    if not parts:
        raise ReplyRefused("no text/calendar part: not a calendar reply")
    replies: dict[tuple[uuid.UUID, str], Reply] = {}
    for data in parts:
        try:
            cal = Calendar.from_ical(data)
        except Exception as exc:  # icalendar raises several types on bad input
            raise ReplyRefused(f"unreadable calendar: {exc}") from exc
        if str(cal.get("METHOD", "")).upper() != "REPLY":
            raise ReplyRefused(f"METHOD is {cal.get('METHOD')!s}, not REPLY")
        events: list[Any] = cal.walk("VEVENT")
        for event in events:
            match = UID.match(str(event.get("UID", "")))
            if match is None:
                raise ReplyRefused(f"UID {event.get('UID')!s} is not a carewatch meeting")
            attendees = event.get("ATTENDEE")
            attendees = attendees if isinstance(attendees, list) else [attendees]
            if len(attendees) != 1 or attendees[0] is None:
                raise ReplyRefused("a REPLY names exactly one ATTENDEE")
            who = str(attendees[0]).removeprefix("mailto:").removeprefix("MAILTO:").lower()
            if who != sender:
                raise ReplyRefused(f"the ATTENDEE ({who}) is not the sender ({sender})")
            partstat = PARTSTATS.get(str(attendees[0].params.get("PARTSTAT", "")).upper())
            if partstat is None:
                raise ReplyRefused("PARTSTAT must be ACCEPTED, DECLINED or TENTATIVE")
            key = str(msg.get("Message-ID") or hashlib.sha256(raw).hexdigest())
            meeting_id = uuid.UUID(match.group(1))
            replies[(meeting_id, who)] = Reply(meeting_id, who, partstat,
                                               int(event.get("SEQUENCE", 0)), key[:300])
    if len(replies) != 1:
        raise ReplyRefused("expected one reply to one meeting")
    return next(iter(replies.values()))


class ReplyHandler:
    """aiosmtpd handler: check, record and publish each reply (one transaction)."""

    def __init__(self, runtime: ServiceRuntime, clock: Callable[[], datetime]) -> None:
        self.runtime = runtime
        self.clock = clock

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw).encode()
        try:
            reply = parse_reply(raw, envelope.mail_from or "")
            return await self.record(reply)
        except ReplyRefused as exc:
            log.info("reply refused from %s: %s", envelope.mail_from, exc)
            return f"550 5.7.1 reply refused: {exc}"
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("reply not recorded, sender should retry: %s", exc)
            return "451 4.3.0 temporary failure, try again later"

    async def record(self, reply: Reply) -> str:
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            invited = await store.meeting_attendees(conn, reply.meeting_id)
            if invited is None:
                raise ReplyRefused(f"no invitation was sent for meeting {reply.meeting_id}")
            if reply.attendee not in invited:
                raise ReplyRefused(f"{reply.attendee} is not invited to meeting"
                                   f" {reply.meeting_id}")
            now = self.clock()
            if not await store.record_reply(conn, message_key=reply.message_key,
                                            meeting_id=reply.meeting_id,
                                            attendee=reply.attendee, partstat=reply.partstat,
                                            sequence=reply.sequence, at=now):
                return "250 2.0.0 reply already recorded"
            await self.runtime.outbox(conn).add(MeetingReplied(
                meeting_id=reply.meeting_id, attendee=reply.attendee,
                partstat=reply.partstat, sequence=reply.sequence,  # type: ignore[arg-type]
                received_at=now))
        return f"250 2.0.0 reply recorded: {reply.partstat}"


class InboundSmtp:
    """The SMTP server for replies, run for the life of the notification process."""

    def __init__(self, runtime: ServiceRuntime, host: str, port: int,
                 clock: Callable[[], datetime]) -> None:
        self.handler = ReplyHandler(runtime, clock)
        self.host = host
        self.requested_port = port
        self.port: int | None = None  # bound port, once serving
        self.serving = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: SMTP(self.handler, data_size_limit=MAX_MESSAGE_BYTES,
                             hostname="carewatch-replies"),
                self.host, self.requested_port)
        except OSError as exc:
            # Another replica on this host has the port: it receives the replies.
            log.error("inbound SMTP for meeting replies not started on %s:%s: %s",
                      self.host, self.requested_port, exc)
            return
        self.port = server.sockets[0].getsockname()[1]
        self.serving.set()
        log.info("inbound SMTP for meeting replies on %s:%s", self.host, self.port)
        try:
            async with server:
                await server.serve_forever()
        finally:
            self.serving.clear()
            with contextlib.suppress(Exception):
                server.close()
