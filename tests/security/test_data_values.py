"""Attacks with insane values (issue 14, items 6-8): dates at 0001-01-01 (accepted, then
dead-lettered by quality-monitor after six OverflowErrors), repeated JSON keys (authorisation
read the last copy, the quarantine showed the first), routine kinds on the urgent routing
key, and 1 MB of adversarial text (the e-mail pattern was quadratic: 20,000 characters cost
0.5-2 s on the event loop)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.intake.redaction import NHS_NUMBER, redact
from shared.settings import Settings
from shared.submissions import URGENT_KINDS
from tests.helpers import example
from tests.security.data_stack import DataStack, data_stack, fresh_id, report
from tools.bench import redaction_texts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[DataStack]:
    async with data_stack(settings, "values") as s:
        yield s


def _body(name: str, **changes: Any) -> dict[str, Any]:
    return {**example(f"{name}.json")["body"], "record_id": fresh_id(name.upper()), **changes}


async def _reasons(stack: DataStack, submission_id: Any) -> list[dict[str, Any]]:
    row = await stack.pool.fetchrow(
        "SELECT reasons FROM intake.quarantine WHERE submission_id = $1", submission_id)
    return list(row["reasons"]) if row else []


DATES = [("routine-complaint", "received_on"), ("safeguarding-concern", "raised_on"),
         ("gp-alert", "raised_on"), ("fft-response", "responded_on"),
         ("service-change-notice", "effective_from"), ("insight-visit", "visited_on")]


async def test_dates_before_1900_are_refused_with_a_reason(stack: DataStack) -> None:
    tried = refused = 0
    sids = []
    for name, field in DATES:
        for value in ("0001-01-01", "1899-12-31"):
            sids.append(await stack.publish(_body(name, **{field: value})))
            response = await stack.post(json.dumps(_body(name, **{field: value})).encode())
            tried += 2
            ok = response.status_code == 422 and "1900-01-01" in response.text
            refused += ok
    outcomes = await stack.outcomes(sids)
    for sid in sids:
        reasons = await _reasons(stack, sid)
        refused += outcomes[sid] == "rejected" and any(
            "1900-01-01" in r["msg"] for r in reasons)
    period = await stack.post(json.dumps(_body("fft-monthly", period="0001-01")).encode())
    tried, refused = tried + 1, refused + (period.status_code == 422)
    report("dates at 0001-01-01 and before 1900", tried, refused, tried - refused)
    assert refused == tried


async def test_dates_at_the_bounds_are_monitored_without_dead_letters(stack: DataStack) -> None:
    sids = [await stack.publish(_body(name, **{field: "1900-01-01"})) for name, field in DATES]
    outcomes = await stack.outcomes(sids)
    assert set(outcomes.values()) == {"accepted"}, outcomes
    await stack.settle()
    assert await stack.dead_letters() == 0


async def test_repeated_json_keys_are_refused_on_every_door(stack: DataStack) -> None:
    good = json.dumps(_body("compliment"))
    repeated = [good[:-1] + ', "ods_code": "RJ1"}',
                good.replace('"kind": "compliment"', '"kind": "complaint", "kind": "compliment"'),
                good[:-1] + ', "description": "first", "description": "second"}']
    tried = refused = 0
    for text in repeated:
        response = await stack.post(text.encode())
        tried += 1
        refused += response.status_code == 422 and "duplicate_key" in response.text
    batch = await stack.post(("[" + ",".join(repeated) + "]").encode(), "/v1/submissions/batch")
    ndjson = await stack.post("\n".join(repeated).encode(), "/v1/submissions/batch",
                              "application/x-ndjson")
    for response in (batch, ndjson):
        results = response.json()["results"]
        tried += len(results)
        refused += sum(1 for r in results if r["outcome"] == "rejected"
                       and r["reasons"][0]["type"] == "duplicate_key")
    sids = [await stack.publish(text.encode(), routing_key="submission.compliment.v1")
            for text in repeated]
    outcomes = await stack.outcomes(sids)
    for sid in sids:
        tried += 1
        refused += outcomes[sid] == "rejected" and (await _reasons(stack, sid))[0]["type"] \
            == "duplicate_key"
    report("repeated JSON keys (HTTP, HTTP batch, NDJSON, AMQP)", tried, refused,
           tried - refused)
    assert refused == tried


async def test_routine_kinds_on_the_urgent_routing_key_are_refused(stack: DataStack) -> None:
    routine = ["compliment", "fft-response", "online-review", "survey-result", "fft-monthly"]
    sids = []
    for n, name in enumerate(routine):
        key = f"submission.{sorted(URGENT_KINDS)[n % len(URGENT_KINDS)]}.v1"
        sids.append(await stack.publish(_body(name), routing_key=key))
    urgent_right = await stack.publish(_body("routine-complaint"))
    outcomes = await stack.outcomes([*sids, urgent_right])
    refused = 0
    for sid in sids:
        reasons = await _reasons(stack, sid)
        refused += outcomes[sid] == "rejected" and reasons[0]["type"] == "wrong_routing_key"
    report("routine kinds on the urgent routing key", len(sids), refused, len(sids) - refused)
    assert refused == len(sids)
    assert outcomes[urgent_right] == "accepted"


def test_one_megabyte_of_adversarial_text_is_redacted_in_linear_time() -> None:
    texts = redaction_texts(1_000_000)
    tried = refused = 0
    for name, text in texts.items():
        planted = f"{text} NHS 943 476 5919 end"
        start = time.perf_counter()
        result = redact(planted)
        took = time.perf_counter() - start
        print(f"  redact 1 MB of {name!r}: {took * 1000:.0f} ms"
              f" ({len(planted) / took / 1e6:.1f} MB/s)")
        tried += 1
        refused += result.text.endswith(f"NHS {NHS_NUMBER} end") and \
            "943 476 5919" not in result.text
    report("1 MB of adversarial text (redacted, bounded time)", tried, refused,
           tried - refused)
    assert refused == tried


async def test_a_large_batch_does_not_stall_intake(stack: DataStack) -> None:
    """The issue's 600 KB batch held intake for ~30 s (/health answered in 24 s): the batch
    is now redacted off the event loop; /health is timed while it is admitted."""
    shape = redaction_texts(19_000)["email chars, no @"]
    items = [json.dumps(_body("compliment", description=shape)) for _ in range(32)]
    async with httpx.AsyncClient(base_url=str(stack.http.base_url), timeout=60) as probe:
        batch = asyncio.create_task(stack.post("\n".join(items).encode(),
                                               "/v1/submissions/batch", "application/x-ndjson"))
        worst = 0.0
        while not batch.done():
            start = time.perf_counter()
            assert (await probe.get("/health")).status_code == 200
            worst = max(worst, time.perf_counter() - start)
            await asyncio.sleep(0.02)
        response = await batch
    assert response.status_code == 200 and response.json()["accepted"] == len(items)
    print(f"  a {sum(map(len, items)) // 1024} KB batch: /health answered in at worst"
          f" {worst * 1000:.0f} ms meanwhile")
    report("a large adversarial batch stalling intake", 1, 1, 0)
