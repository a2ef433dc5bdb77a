"""Logging for every process: one JSON object per line, carrying the ids that let an operator
follow one submission through all four services (``event_id``, ``submission_id``)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "carewatch_log", default=None)
_SERVICE = {"name": ""}


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add fields (event_id, submission_id, queue...) to every log line inside the block."""
    token = _context.set({**(_context.get() or {}),
                          **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.carewatch = _context.get() or {}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if _SERVICE["name"]:
            entry["service"] = _SERVICE["name"]
        entry.update(getattr(record, "carewatch", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = getattr(record, "carewatch", {})
        return line + ("" if not ids else " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]")


def configure_logging(level: str = "INFO", fmt: str = "json", service: str = "") -> None:
    """JSON lines (``fmt="json"``) or readable text, on stderr, with the log context."""
    _SERVICE["name"] = service
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # FastStream's own logger writes through a handler of its own, coloured whether or not
    # stderr is a terminal: raw ANSI codes in a log file. Its lines go through ours instead.
    faststream = logging.getLogger("faststream")
    faststream.handlers[:] = []
    faststream.propagate = True
