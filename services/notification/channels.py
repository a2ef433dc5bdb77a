"""Delivery channels behind one small interface: a new channel is a new class.

A recorded notification names its channel (``email``, ``webhook``); the dispatcher hands
it to that channel, which renders it for its medium and sends it. A ``DeliveryError`` says
whether a failure is worth retrying.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

import aiosmtplib
import httpx

from services.notification.messages import EVIDENCE_LISTED, notification_email, webhook_body
from services.notification.routing import WebhookTarget
from shared.clock import epoch_seconds
from shared.settings import Settings

SIGNATURE_HEADER = "X-Carewatch-Signature"
TIMESTAMP_HEADER = "X-Carewatch-Timestamp"
DELIVERY_HEADER = "X-Carewatch-Delivery"


class DeliveryError(Exception):
    """A delivery failed; ``permanent`` failures are not retried."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Outgoing:
    """A recorded notification, as a channel needs it."""

    notification_id: uuid.UUID
    kind: str  # event, group, digest
    event_type: str
    route: str | None
    recipient: str  # an e-mail address, or a webhook's name
    subject: str
    payload: dict[str, Any]
    message_id: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Outgoing:
        return cls(notification_id=row["notification_id"], kind=row["kind"],
                   event_type=row["event_type"], route=row["route"],
                   recipient=row["recipient"], subject=row["subject"],
                   payload=row["payload"], message_id=row["message_id"])


class Channel(Protocol):
    """Renders a notification for its medium and sends it; raises ``DeliveryError``."""

    name: str

    async def deliver(self, notification: Outgoing) -> None: ...


# -- e-mail ---------------------------------------------------------------------------------
class MailTransport(Protocol):
    async def send(self, build: Callable[[], EmailMessage]) -> None:
        """Reach the mail server, then ``build`` the message and send it."""
        ...


class SmtpTransport:
    """SMTP (STARTTLS and authentication as configured).

    The message is built once the server has answered: while it cannot be reached, every
    retry of every notification would otherwise render its e-mail (templates, iCalendar,
    MIME: most of the service's CPU in a year run with no mail server) only to fail."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # What the client says in EHLO: aiosmtplib would look it up (socket.getfqdn, a DNS
        # query in a thread) on every connection.
        self._local_hostname: str | None = None

    async def send(self, build: Callable[[], EmailMessage]) -> None:
        s = self._settings
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username,
            password=s.smtp_password, start_tls=s.smtp_starttls, timeout=s.smtp_timeout,
            local_hostname=self._local_hostname)
        try:
            async with client:
                errors, _ = await client.send_message(build())
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # 4xx (greylisting, a full mailbox) may pass later; 5xx will not.
            permanent = all(r.code >= 500 for r in exc.recipients)
            raise DeliveryError(f"recipient refused: {exc}", permanent=permanent) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is the server's final word on this message; 4xx is worth another try.
            raise DeliveryError(f"{type(exc).__name__}: {exc}",
                                permanent=500 <= exc.code < 600) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if errors:
            raise DeliveryError(f"recipients refused: {errors}", permanent=True)


class EmailChannel:
    """E-mail: plain text and HTML from templates; meetings carry an iCalendar invitation."""

    name = "email"

    def __init__(self, settings: Settings, transport: MailTransport | None = None) -> None:
        self._sender = settings.mail_from
        self._listed = settings.evidence_listed
        self.transport = transport or SmtpTransport(settings)

    def render(self, n: Outgoing) -> EmailMessage:
        return notification_email(kind=n.kind, event_type=n.event_type, payload=n.payload,
                                  subject=n.subject, sender=self._sender,
                                  recipient=n.recipient, message_id=n.message_id,
                                  listed=self._listed)

    async def deliver(self, notification: Outgoing) -> None:
        await self.transport.send(lambda: self.render(notification))


# -- webhooks -------------------------------------------------------------------------------
def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256, keyed with the webhook's secret, of
    ``<timestamp>.<body>`` (the timestamp is signed with the body so that a captured post
    cannot be replayed later under a new timestamp)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str,
           now: float | None = None, tolerance: float = 300.0) -> bool:
    """What a receiver checks: the signature, and a timestamp within ``tolerance`` seconds."""
    fresh = abs((epoch_seconds() if now is None else now) - float(timestamp)) <= tolerance
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel:
    """JSON posts to per-team webhooks (Slack- or Teams-shaped), signed with HMAC-SHA256."""

    name = "webhook"

    def __init__(self, webhooks: Mapping[str, WebhookTarget], timeout: float = 10.0,
                 clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None,
                 evidence_listed: int = EVIDENCE_LISTED) -> None:
        self.webhooks = webhooks
        self.evidence_listed = evidence_listed
        self.timeout = timeout
        self.clock = clock
        self._transport = transport

    def render(self, n: Outgoing) -> tuple[str, bytes, dict[str, str]]:
        """The URL, the exact body bytes and the headers of the post."""
        target = self.webhooks.get(n.recipient)
        if target is None or not target.secret:
            raise DeliveryError(f"no webhook {n.recipient!r} (with a secret) is configured",
                                permanent=True)
        document = webhook_body(kind=n.kind, event_type=n.event_type, payload=n.payload,
                                subject=n.subject, notification_id=str(n.notification_id),
                                route=n.route, style=target.format,
                                listed=self.evidence_listed)
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = str(int(self.clock()))
        headers = {"Content-Type": "application/json", "User-Agent": "carewatch-notification",
                   TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(target.secret, timestamp, body),
                   # The same on every retry: receivers de-duplicate on it.
                   DELIVERY_HEADER: str(n.notification_id)}
        return target.url, body, headers

    async def deliver(self, notification: Outgoing) -> None:
        url, body, headers = self.render(notification)
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport,
                                         follow_redirects=False) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return
        retry = response.status_code >= 500 or response.status_code in (408, 425, 429)
        raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}",
                            permanent=not retry)


def default_channels(settings: Settings, webhooks: Mapping[str, WebhookTarget]
                     ) -> dict[str, Channel]:
    """The channels of a running service, by the name a notification row carries."""
    channels: list[Channel] = [
        EmailChannel(settings),
        WebhookChannel(webhooks, timeout=settings.notification_webhook_timeout,
                       evidence_listed=settings.evidence_listed)]
    return {c.name: c for c in channels}
