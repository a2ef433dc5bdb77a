"""Turning a provider's raw message into a validated, redacted submission, or reasons why not.

Pure functions: no broker, no database.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from services.intake.derived import derived_fields
from services.intake.redaction import code_holds_personal_data, redact
from shared.events import RejectionReason
from shared.submissions import KINDS, SUBMISSION_ADAPTER, SubmissionModel

MAX_BODY_BYTES = 1_048_576
# Media types taken as JSON (compared without parameters and case-insensitively); a missing
# content type is taken as JSON too.
ACCEPTED_CONTENT_TYPES = {None, "", "application/json", "text/json"}
_SUBMISSION_NS = uuid.UUID("6f1d3a52-3b8e-4f55-9a43-1d5c2f0b7e11")

Submission = SubmissionModel
# Codes that are kept as sent (never rewritten: they are keys), so refused when they read as
# personal data. Every other string field is an enum, a literal or redacted free text.
CODE_FIELDS = ("record_id", "ods_code", "site_code", "raised_by_practice")


def submission_id(feed_user: str | None, message_id: str | None, body: bytes) -> uuid.UUID:
    """Deterministic id of one submission: a redelivery of the same message gets the same id."""
    digest = hashlib.sha256(body).hexdigest()
    return uuid.uuid5(_SUBMISSION_NS, f"{feed_user or ''}\0{message_id or ''}\0{digest}")


@dataclass(frozen=True)
class Parsed:
    submission: Submission
    content: dict[str, Any]  # JSON-ready, free text redacted, personal fields withheld
    redactions: dict[str, int]
    # The personal fields given on purpose (a member of the public's contact details), taken
    # out of the content: kept by intake alone (intake.public_contacts), never published.
    withheld: dict[str, Any] = field(default_factory=dict)


def reason(loc: str, msg: str, type_: str) -> RejectionReason:
    """A rejection reason, its location and message redacted: they may quote what was sent
    (an unknown key, an unknown ODS code), and they leave intake in events and logs."""
    return RejectionReason(loc=redact(loc).text, msg=redact(msg).text, type=type_)


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


def size_or_type_problem(size: int, limit: int, content_type: str | None,
                         what: str = "body") -> list[RejectionReason]:
    """Why a message of ``size`` bytes and this content type is not read at all (over
    ``limit``, or not JSON in UTF-8); [] when it is read."""
    if size > limit:
        return [reason("", f"{what} is {size} bytes; the limit is {limit}", "too_large")]
    problem = content_type_problem(content_type)
    return [reason("", problem, "content_type")] if problem else []


def parse(body: bytes, content_type: str | None = None,
          size: int | None = None) -> Parsed | list[RejectionReason]:
    """Validate a submission body against the contract, redact its free text and add the
    derived fields. ``size`` is the body's full size when ``body`` is only its beginning
    (an oversized HTTP request is not read to the end)."""
    unreadable = size_or_type_problem(len(body) if size is None else size, MAX_BODY_BYTES,
                                      content_type)
    if unreadable:
        return unreadable
    duplicates = duplicate_keys(body)
    if duplicates:
        return [reason(key, f"the key {key!r} appears more than once in one object: each key"
                       " may appear only once", "duplicate_key") for key in duplicates]
    try:
        submission = SUBMISSION_ADAPTER.validate_json(body)
    except ValidationError as exc:
        return [_reason_of(e) for e in exc.errors(include_input=False, include_url=False)]
    in_codes = [name for name in CODE_FIELDS
                if isinstance(value := getattr(submission, name, None), str)
                and code_holds_personal_data(value)]
    if in_codes:
        return [reason(name, "this code reads as personal data (an NHS number, a phone"
                       " number, a postcode...): send the provider's own reference, not a"
                       " patient's details", "personal_data") for name in in_codes]
    content = submission.model_dump(mode="json")
    withheld = {name: _given(content.pop(name)) for name in submission.personal_fields
                if content.get(name) is not None}
    for name in submission.personal_fields:
        content.pop(name, None)
    found: dict[str, int] = {}
    redacted: dict[str, str] = {}
    for name in submission.free_text_fields:
        text = content.get(name)
        if isinstance(text, str):
            result = redact(text)
            if result.changed:
                content[name] = redacted[name] = result.text
            for label, n in result.found.items():
                found[label] = found.get(label, 0) + n
    if redacted:
        # The model too (its theme, say, is made of these fields), not only the content.
        submission = submission.model_copy(update=redacted)
    content.update(derived_fields(submission))
    not_finite = [reason(loc, "Input should be a finite number", "finite_number")
                  for loc in _not_finite(content)]
    if not_finite:
        return not_finite
    return Parsed(submission, content, found, withheld)


def _given(value: Any) -> Any:
    """What was given of an object (its fields that are not None)."""
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) \
        else value


class _RepeatedKeys(Exception):
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated: set[str] = set()
        for key, _ in pairs:
            (repeated if key in seen else seen).add(key)
        raise _RepeatedKeys(sorted(repeated))
    return obj


def duplicate_keys(body: bytes) -> list[str]:
    """The keys repeated within one JSON object of ``body`` (the first object found to
    repeat one), or [] (also when ``body`` is not JSON: validation says why). JSON parsers
    disagree on which copy wins, so a repeated key is refused, never resolved."""
    try:
        json.loads(body, object_pairs_hook=_refuse_repeated_keys)
    except _RepeatedKeys as exc:
        return exc.keys
    except (ValueError, RecursionError):
        return []
    return []


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
