"""Attack: personal data planted in every string field of every submission kind (issue 14,
item 5: an NHS number in ``service`` reached events, e-mails, 11 tables and the audit log).

Each string field of each kind gets a submission of its own, carrying an NHS number (a
different one per field, dotted, spaced or plain) and an e-mail address in the field. Free
text is redacted; a code (record id, ODS code, site code, practice) that reads as personal
data is refused. Then the whole pipeline runs (quality-monitor raises concerns, escalation
books meetings, notification sends e-mails) and every table, event, e-mail and log line is
searched for each planted value.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.intake.validation import CODE_FIELDS
from shared.settings import Settings
from shared.submissions import SUBMISSION_ADAPTER
from tests.integration.test_intake_support import VALID_EXAMPLES, example_message
from tests.security.data_stack import (
    DataStack,
    data_stack,
    digits_pattern,
    fresh_id,
    nhs_numbers,
    report,
)
from tests.unit.test_submission_fields import string_fields

pytestmark = pytest.mark.integration
FORMS = ("{a}.{b}.{c}", "{a} {b} {c}", "{a}{b}{c}", "NHS {a}/{b}/{c}")


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[DataStack]:
    async with data_stack(settings, "fields") as s:
        yield s


# A field that is only accepted beside another value (a Quality Account return names its
# priority; the other standards have none): planted with that value.
COMPANIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("equality_return", "priority"): {"standard": "quality_account_priority"},
}


def plantings() -> list[tuple[str, str, dict[str, Any], str, bool]]:
    """(example, field, body, the NHS number planted, whether it is free text) for every
    string field of every kind that takes text from the feed."""
    out: list[tuple[str, str, dict[str, Any], str, bool]] = []
    numbers = iter(nhs_numbers(200, seed=1405))
    for name in VALID_EXAMPLES:
        message = example_message(name)
        body = message["body"] if isinstance(message["body"], dict) else json.loads(message["body"])
        model = type(SUBMISSION_ADAPTER.validate_python(body))
        for path, what in string_fields(model):
            if what not in ("free text", "pattern") or "." in path or path == "period":
                continue
            digits = next(numbers)
            form = FORMS[len(out) % len(FORMS)]
            planted = form.format(a=digits[:3], b=digits[3:6], c=digits[6:])
            value = (f"Ward 5 {planted} mail p{digits}@example.org" if what == "free text"
                     else digits)
            out.append((name, path, {**body, **COMPANIONS.get((body["kind"], path), {}),
                                     "record_id": fresh_id(f"PD-{name}"), path: value},
                        digits, what == "free text"))
    return out


async def test_personal_data_in_every_string_field_reaches_nothing(stack: DataStack) -> None:
    cases = plantings()
    assert {field for _, field, *_ in cases} >= {
        "service", "survey", "question", "measure", "group", "topic", "description",
        *CODE_FIELDS}, "every string field of every kind is attacked"
    sids = [await stack.publish(body) for _, _, body, _, _ in cases]
    over_http = []
    for _, _, body, _, free in cases[::3]:  # and a third of them again over HTTP
        response = await stack.post(json.dumps(
            {**body, "record_id": body["record_id"] + "-h"}).encode())
        over_http.append((response.json()["outcome"], free))
    outcomes = await stack.outcomes(sids)
    await stack.settle()

    results = [(outcomes[sid], free) for sid, (*_, free) in zip(sids, cases, strict=True)]
    results += over_http
    for (name, field, _, _, free), (outcome, _) in zip(cases, results, strict=False):
        assert outcome == ("accepted" if free else "rejected"), (name, field, outcome)
    refused = sum(1 for outcome, free in results if (outcome == "accepted") == free)
    patterns = {digits: digits_pattern(digits) for _, _, _, digits, _ in cases}
    patterns.update({f"p{digits}@": re.compile(f"p{digits}@", re.I)
                     for _, _, _, digits, free in cases if free})
    leaks = await stack.leaks(patterns)
    report("personal data in every string field of every kind", len(results), refused,
           len(leaks))
    assert not leaks, leaks
    # The search finds what is there: the refused codes are in the quarantine's raw bodies
    # (which the search above leaves out: personal data by design, deleted after 30 days).
    bodies = " ".join(bytes(r["body"]).decode() for r in await stack.pool.fetch(
        "SELECT body FROM intake.quarantine WHERE body IS NOT NULL"))
    assert all(patterns[digits].search(bodies) for *_, digits, free in cases if not free)
    # The accepted submissions went the whole way: concerns, meetings and e-mails were made
    # of them (so the search above looked where the data would have gone).
    assert await stack.pool.fetchval("SELECT count(*) FROM monitor.feedback") >= sum(
        1 for *_, free in cases if free)
    assert stack.inbox.messages, "no e-mail was sent: the attack did not reach notification"
