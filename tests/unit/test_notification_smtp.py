"""The SMTP transport (services/notification/channels.py) against a real socket: an e-mail is
rendered only once the mail server has answered, and the client's own name is looked up once
per process, not on every connection."""

from __future__ import annotations

import socket
import uuid
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.notification.channels import DeliveryError, EmailChannel, Outgoing, SmtpTransport
from shared.settings import Settings
from tests.conftest import free_port


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "carewatch@icb.example.nhs.uk"
    msg["To"] = "quality.team@icb.example.nhs.uk"
    msg["Subject"] = "A serious concern"
    msg.set_content("See the workspace.")
    return msg


class Built:
    """A message builder that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> EmailMessage:
        self.calls += 1
        return message()


class Inbox:
    def __init__(self) -> None:
        self.received: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope)
        return "250 OK"


async def test_a_mail_server_that_cannot_be_reached_costs_no_rendering(
        monkeypatch: pytest.MonkeyPatch) -> None:
    channel = EmailChannel(Settings(smtp_port=free_port(), smtp_timeout=2.0))
    build = Built()
    monkeypatch.setattr(channel, "render", lambda _: build())
    notification = Outgoing(
        notification_id=uuid.uuid4(), kind="event", event_type="concern.raised.v1",
        route="serious-concerns", recipient="quality.team@icb.example.nhs.uk",
        subject="A serious concern", payload={}, message_id="<x@carewatch>")
    with pytest.raises(DeliveryError) as raised:
        await channel.deliver(notification)
    assert not raised.value.permanent  # retried with backoff
    assert build.calls == 0


async def test_the_message_is_built_once_connected_and_the_host_name_looked_up_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, server_hostname="mail.test")
    controller.start()
    lookups = []
    real_getfqdn = socket.getfqdn

    def getfqdn(name: str = "") -> str:
        lookups.append(name)
        return real_getfqdn(name)

    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    try:
        transport = SmtpTransport(Settings(smtp_port=port))
        build = Built()
        await transport.send(build)
        await transport.send(build)
    finally:
        controller.stop()
    assert build.calls == 2
    assert [e.rcpt_tos for e in inbox.received] == [["quality.team@icb.example.nhs.uk"]] * 2
    assert len(lookups) == 1
