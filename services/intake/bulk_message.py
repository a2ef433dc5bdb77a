"""Bulk messages: many submissions of one routine kind from one feed in one message (the
contract: ``BulkSubmissionV1`` in ``shared/submissions.py``). Pure functions: no broker, no
database.

The message is read once (``read_bulk``); each item is then admitted as the submission it
would be on its own (``items_of``): its own submission id (the message's id and the item's
place in it, so that a redelivered message gives the same ids and is stored once), its own
validation, authorisation, redaction, de-duplication and, when invalid, its own quarantine
row and reasons. A message that cannot be read as a bulk message at all is quarantined whole,
with the reasons.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from services.intake.validation import Parsed, reason, size_or_type_problem
from shared.events import RejectionReason
from shared.submissions import (
    BULK_ITEM_KINDS,
    BULK_KIND,
    BULK_ROUTING_KEY,
    MAX_BULK_BYTES,
    MAX_BULK_ITEMS,
)

if TYPE_CHECKING:
    from services.intake.admission import Incoming

ENVELOPE_KEYS = ("kind", "version", "item_kind", "items")


def is_bulk(routing_key: str | None) -> bool:
    """Whether a message came as a bulk message (its routing key)."""
    return routing_key == BULK_ROUTING_KEY


def item_routing_key(item_kind: str) -> str:
    """The routing key an item is recorded with (in its quarantine row): the routine lane's
    bulk key of its kind, so that an operator's resubmission admits it as a single."""
    return f"submission.{item_kind}.v1.bulk"


def item_message_id(message_id: str | None, n: int) -> str | None:
    """Item ``n``'s message id: the message's, with its place (none without one)."""
    return f"{message_id}#{n}" if message_id else None


def read_bulk(body: bytes, content_type: str | None = None,
              size: int | None = None) -> tuple[str, list[bytes]] | list[RejectionReason]:
    """The item kind and the items (each as the bytes to admit) of a bulk message; or why
    it cannot be read as one (the whole message is then quarantined)."""
    unreadable = size_or_type_problem(len(body) if size is None else size, MAX_BULK_BYTES,
                                      content_type, "bulk message")
    if unreadable:
        return unreadable
    try:
        envelope = json.loads(body, object_pairs_hook=keep_repeated_keys)
    except (ValueError, RecursionError) as exc:
        return [reason("", f"not JSON: {str(exc)[:200]}", "json_invalid")]
    if not isinstance(envelope, dict):
        return [reason("", "a bulk message is one JSON object: {\"kind\": \"bulk\","
                       " \"version\": 1, \"item_kind\": ..., \"items\": [...]}", "bulk_envelope")]
    if isinstance(envelope, RepeatedKeys):
        counts = Counter(k for k, _ in envelope.pairs)
        return [reason(k, f"the key {k!r} appears more than once in the bulk message",
                       "duplicate_key") for k in sorted(k for k, n in counts.items() if n > 1)]
    reasons = [reason(k, "unknown field of a bulk message", "extra_forbidden")
               for k in envelope if k not in ENVELOPE_KEYS]
    if envelope.get("kind") != BULK_KIND:
        reasons.append(reason("kind", f"a message with routing key {BULK_ROUTING_KEY!r} is a"
                              f" bulk message: its kind must be {BULK_KIND!r}", "bulk_envelope"))
    if envelope.get("version", 1) != 1:
        reasons.append(reason("version", "the bulk message's version must be 1",
                              "bulk_envelope"))
    item_kind = envelope.get("item_kind")
    if item_kind not in BULK_ITEM_KINDS:
        reasons.append(reason("item_kind", "a bulk message carries items of one of: "
                              + ", ".join(sorted(BULK_ITEM_KINDS)), "bulk_envelope"))
    items = envelope.get("items")
    if not isinstance(items, list) or not items:
        reasons.append(reason("items", "items must be a non-empty JSON array of submissions",
                              "bulk_envelope"))
    elif len(items) > MAX_BULK_ITEMS:
        reasons.append(reason("items", f"{len(items)} items; the limit is {MAX_BULK_ITEMS}"
                              " a message", "too_many_items"))
    if reasons:
        return reasons
    assert isinstance(item_kind, str) and isinstance(items, list)
    try:
        return item_kind, [item_bytes(item) for item in items]
    except RecursionError:
        return [reason("items", "an item is nested too deeply to be a submission",
                       "bulk_envelope")]


def items_of(message: Incoming, item_kind: str, items: list[bytes]) -> list[Incoming]:
    """Each item of a bulk message as a submission of its own, from the message's feed."""
    bulk_of = message.submission_id
    return [replace(message, body=body, message_id=item_message_id(message.message_id, n),
                    routing_key=item_routing_key(item_kind), content_type="application/json",
                    size=None, bulk_of=bulk_of)
            for n, body in enumerate(items)]


def wrong_kind(parsed: Parsed | list[RejectionReason],
               item_kind: str) -> Parsed | list[RejectionReason]:
    """An item of another kind than its message says is refused (a bulk message is one
    routine kind: a kind that reports risk takes the urgent lane, alone)."""
    if isinstance(parsed, Parsed) and parsed.submission.kind != item_kind:
        return [reason("kind", f"this bulk message carries {item_kind} items; a"
                       f" {parsed.submission.kind} is sent on its own", "wrong_kind")]
    return parsed


# -- items as written ---------------------------------------------------------------------------
class RepeatedKeys(dict[str, Any]):
    """A JSON object that repeats a key, with its pairs as written: re-encoded as written,
    so that admission refuses the item (``duplicate_key``) rather than keeping one copy."""

    pairs: list[tuple[str, Any]]


def keep_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    repeated = RepeatedKeys(obj)
    repeated.pairs = pairs
    return repeated


def _encode(value: Any, ensure_ascii: bool) -> str:
    if isinstance(value, dict):
        pairs = value.pairs if isinstance(value, RepeatedKeys) else value.items()
        return "{" + ",".join(json.dumps(k, ensure_ascii=ensure_ascii) + ":"
                              + _encode(v, ensure_ascii) for k, v in pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v, ensure_ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def _has_repeated_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return isinstance(value, RepeatedKeys) or any(map(_has_repeated_keys, value.values()))
    return isinstance(value, list) and any(map(_has_repeated_keys, value))


def item_bytes(item: Any) -> bytes:
    """One item of a batch as the bytes to admit: its JSON, compact, in UTF-8. Text with a
    lone surrogate escape (``"\\ud800"``, which Python's JSON reader lets through) has no
    UTF-8 form: it stays escaped, and admission rejects the item as invalid JSON."""
    repeated = _has_repeated_keys(item)
    text = (_encode(item, False) if repeated
            else json.dumps(item, ensure_ascii=False, separators=(",", ":")))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return (_encode(item, True) if repeated
                else json.dumps(item, separators=(",", ":"))).encode()
