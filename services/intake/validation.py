"""Turning a provider's raw message into a validated, redacted submission, or reasons why not.

Pure functions: no broker, no database.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.intake.derived import derived_fields
from services.intake.redaction import redact
from shared.events import RejectionReason
from shared.submissions import KINDS, SUBMISSION_ADAPTER, SubmissionModel

MAX_BODY_BYTES = 1_048_576
# Media types taken as JSON (compared without parameters and case-insensitively); a missing
# content type is taken as JSON too.
ACCEPTED_CONTENT_TYPES = {None, "", "application/json", "text/json"}
_SUBMISSION_NS = uuid.UUID("6f1d3a52-3b8e-4f55-9a43-1d5c2f0b7e11")

Submission = SubmissionModel


def submission_id(feed_user: str | None, message_id: str | None, body: bytes) -> uuid.UUID:
    """Deterministic id of one submission: a redelivery of the same message gets the same id."""
    digest = hashlib.sha256(body).hexdigest()
    return uuid.uuid5(_SUBMISSION_NS, f"{feed_user or ''}\0{message_id or ''}\0{digest}")


@dataclass(frozen=True)
class Parsed:
    submission: Submission
    content: dict[str, Any]  # JSON-ready, free text redacted
    redactions: dict[str, int]


def reason(loc: str, msg: str, type_: str) -> RejectionReason:
    return RejectionReason(loc=loc, msg=msg, type=type_)


def content_type_problem(content_type: str | None) -> str | None:
    """Why ``content_type`` is not JSON in UTF-8, or None if it is (``application/json``,
    ``text/json``, any case, with an optional ``charset=utf-8``; or no content type)."""
    if content_type is None:
        return None
    media, _, params = content_type.partition(";")
    if media.strip().lower() not in ACCEPTED_CONTENT_TYPES:
        return f"content type {content_type!r} is not application/json"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and \
                value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"content type {content_type!r}: JSON must be UTF-8 encoded"
    return None


def parse(body: bytes, content_type: str | None = None,
          size: int | None = None) -> Parsed | list[RejectionReason]:
    """Validate a submission body against the contract, redact its free text and add the
    derived fields. ``size`` is the body's full size when ``body`` is only its beginning
    (an oversized HTTP request is not read to the end)."""
    size = len(body) if size is None else size
    if size > MAX_BODY_BYTES:
        return [reason("", f"body is {size} bytes; the limit is {MAX_BODY_BYTES}",
                       "too_large")]
    problem = content_type_problem(content_type)
    if problem:
        return [reason("", problem, "content_type")]
    try:
        submission = SUBMISSION_ADAPTER.validate_json(body)
    except ValidationError as exc:
        return [_reason_of(e) for e in exc.errors(include_input=False, include_url=False)]
    content = submission.model_dump(mode="json")
    found: dict[str, int] = {}
    for name in submission.free_text_fields:
        text = content.get(name)
        if isinstance(text, str):
            result = redact(text)
            content[name] = result.text
            for label, n in result.found.items():
                found[label] = found.get(label, 0) + n
    content.update(derived_fields(submission))
    not_finite = [reason(loc, "Input should be a finite number", "finite_number")
                  for loc in _not_finite(content)]
    if not_finite:
        return not_finite
    return Parsed(submission, content, found)


def _not_finite(value: Any, loc: str = "") -> Iterator[str]:
    """Where a submission holds NaN or an infinity (``NaN``, ``Infinity``, ``1e999`` or the
    string ``"NaN"`` in a number field). JSON has no such numbers and PostgreSQL cannot store
    them in jsonb: refused here, with a reason, rather than failing at the insert, where an
    HTTP submission could only get a 500 and an AMQP one be dead-lettered."""
    if isinstance(value, float) and not math.isfinite(value):
        yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _not_finite(item, f"{loc}.{key}" if loc else str(key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _not_finite(item, f"{loc}.{n}" if loc else str(n))


def _reason_of(error: Any) -> RejectionReason:
    loc = [str(p) for p in error["loc"]]
    if loc and loc[0] in KINDS:  # the discriminator's branch, not a field
        loc = loc[1:]
    msg = error["msg"]
    if error["type"] == "union_tag_invalid":
        msg = f"unknown kind; expected one of: {', '.join(KINDS)}"
    return reason(".".join(loc), msg, error["type"])
