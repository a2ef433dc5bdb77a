"""Delivery channels behind one small interface: a new channel is a new class."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from shared.settings import Settings


class DeliveryError(Exception):
    """A delivery failed; ``permanent`` failures are not retried."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class EmailChannel(Protocol):
    name: str

    async def send(self, message: EmailMessage) -> str: ...


class SmtpChannel:
    """E-mail over SMTP (STARTTLS and authentication as configured)."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> str:
        s = self._settings
        try:
            errors, response = await aiosmtplib.send(
                message, hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username,
                password=s.smtp_password, start_tls=s.smtp_starttls, timeout=s.smtp_timeout)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipient refused: {exc}", permanent=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if errors:
            raise DeliveryError(f"recipients refused: {errors}", permanent=True)
        return response
