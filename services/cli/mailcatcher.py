"""A development mail catcher: an SMTP server that keeps each message as an .eml file.

Used by ``carewatch run`` when nothing listens on the configured SMTP port, so a newcomer
sees the invitations carewatch sends without installing a mail server.
"""

from __future__ import annotations

import logging
import uuid
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from shared.clock import utc_now

log = logging.getLogger("carewatch.mailcatcher")


class SaveToDirectory:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        msg = message_from_bytes(data, policy=policy.default)
        path = self.directory / f"{utc_now():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(data)
        log.info("mail to %s: %s (%s)", ", ".join(envelope.rcpt_tos), msg["Subject"], path)
        return "250 Message accepted for delivery"


def start(host: str, port: int, directory: Path) -> Controller:
    # aiosmtpd logs every connection, EHLO and command at INFO ("mail.log"): thousands of
    # lines in a run's log. Each message kept is logged once, above; problems still show.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(SaveToDirectory(directory), hostname=host, port=port)
    controller.start()
    return controller
