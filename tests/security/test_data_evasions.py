"""Attack: personal data written to slip past redaction (issue 14, item 5): NHS numbers with
dots, slashes, zero-width characters or wide gaps; ``07700.900.461``; ``[at]`` and
spelled-out e-mails; "born in March 1938"; ``0044``; a postcode with two spaces; a date of
birth followed by an age. Every case of the evasion set (tests/unit/redaction_evasions.jsonl,
written before the patterns were tuned) goes through intake over AMQP and over HTTP, in a
complaint's description (which quality-monitor, escalation and notification carry on), and
each stored text is checked: every personal datum replaced by its label, none left."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.intake.redaction import normalise
from shared.settings import Settings
from tests.helpers import example
from tests.security.data_stack import DataStack, data_stack, fresh_id, report
from tests.unit.test_redaction import LABELS
from tests.unit.test_redaction_evasions import EVASIONS

pytestmark = pytest.mark.integration
POSITIVE = [c for c in EVASIONS if c["expect"]]


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[DataStack]:
    async with data_stack(settings, "evasions") as s:
        yield s


def _body(case: dict[str, Any], tag: str) -> dict[str, Any]:
    return {**example("compliment.json")["body"], "record_id": fresh_id(tag),
            "description": f"Thank you. {case['text']}"}


def _leaked(case: dict[str, Any], stored: str) -> bool:
    """Whether ``stored`` still holds what the case planted: fewer labels than personal data
    planted, or a planted digit run still readable."""
    if any(stored.count(label) < n for label, n in case["expect"].items()):
        return True
    digits = "".join(ch for ch in normalise(case["text"]) if ch.isdigit())
    kept = "".join(ch for ch in normalise(stored) if ch.isdigit())
    return len(digits) >= 6 and digits in kept


async def test_every_evasion_is_redacted_before_it_leaves_intake(stack: DataStack) -> None:
    sent: list[tuple[dict[str, Any], uuid.UUID | str, str]] = []
    for case in POSITIVE:
        body = _body(case, "EV-AMQP")
        sent.append((case, await stack.publish(body), body["record_id"]))
        body = _body(case, "EV-HTTP")
        response = await stack.post(json.dumps(body, ensure_ascii=False).encode())
        assert response.status_code == 202, response.text
        sent.append((case, response.json()["submission_id"], body["record_id"]))
    await stack.outcomes([sid for _, sid, _ in sent if isinstance(sid, uuid.UUID)])
    await stack.settle()

    leaked = refused = 0
    for case, _, record_id in sent:
        stored = await stack.pool.fetchval(
            "SELECT content->>'description' FROM intake.feedback WHERE provider_record_id = $1",
            record_id)
        monitored = await stack.pool.fetchval(
            "SELECT content->>'description' FROM monitor.feedback WHERE feedback_id ="
            " (SELECT feedback_id FROM intake.feedback WHERE provider_record_id = $1)",
            record_id)
        assert stored is not None, f"not accepted: {case['text']!r}"
        assert monitored is not None, f"not monitored: {case['text']!r}"
        if _leaked(case, stored) or _leaked(case, monitored):
            leaked += 1
            print(f"  leaked: {case['note']}: {stored!r}")
        else:
            refused += 1
    report("evasions of redaction (AMQP and HTTP)", len(sent), refused, leaked)
    assert leaked == 0
    assert all(label in LABELS for case in POSITIVE for label in case["expect"])
