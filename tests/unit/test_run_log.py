"""A `make run` log people can read: no raw ANSI codes from FastStream's logger when the
log is a file, no connection chatter from the development mail catcher."""

from __future__ import annotations

import io
import logging
import smtplib
import socket
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from shared.logs import configure_logging


@pytest.fixture
def log_file() -> Iterator[io.StringIO]:
    """A file-like stream (not a terminal) for the log; the logging configuration is
    restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    fs = logging.getLogger("faststream")
    fs_saved = fs.handlers[:], fs.propagate
    yield io.StringIO()
    root.handlers[:], level = saved
    root.setLevel(level)
    fs.handlers[:], fs.propagate = fs_saved


def configure(fmt: str, service: str, stream: io.StringIO) -> None:
    """configure_logging(), its stderr handler writing to ``stream``."""
    configure_logging("INFO", fmt, service)
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
    handler.setStream(stream)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_faststream_lines_carry_no_ansi_codes(log_file: io.StringIO, fmt: str) -> None:
    import faststream  # noqa: F401  (its logger and coloured handler exist from import on)

    configure(fmt, "intake", log_file)
    logging.getLogger("faststream").info("intake started")
    text = log_file.getvalue()
    assert "intake started" in text
    assert "\x1b[" not in text
    assert text.count("intake started") == 1


def test_the_mail_catcher_logs_each_message_once(tmp_path: Path,
                                                 log_file: io.StringIO) -> None:
    from services.cli.mailcatcher import start

    configure("text", "supervisor", log_file)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    catcher = start("127.0.0.1", port, tmp_path)
    try:
        for n in range(3):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", f"m{n}"
            msg.set_content("hello")
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.send_message(msg)
    finally:
        catcher.stop()
    lines = log_file.getvalue().splitlines()
    assert len(list(tmp_path.glob("*.eml"))) == 3
    assert [line for line in lines if "mail.log" in line] == []
    assert len([line for line in lines if "carewatch.mailcatcher" in line]) == 3
