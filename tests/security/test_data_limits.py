"""Attacks on capacity and retention (issue 14, item 8): one feed flooding intake (nothing
limited a feed's rate, on the urgent key included), and the quarantine keeping raw bodies
(personal data by definition) forever, a discard changing only a status.

The stack runs with small limits (5 at once, 2 a second) and a purge every 0.2 s."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.intake import store
from services.intake.admission import Admissions, Incoming
from services.intake.validation import MAX_BODY_BYTES
from shared.settings import Settings
from tests.helpers import eventually, example
from tests.security.data_stack import DataStack, data_stack, fresh_id, report

pytestmark = pytest.mark.integration
BURST = 5


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[DataStack]:
    async with data_stack(settings, "limits", feed_rate_burst=BURST, feed_rate_per_second=2.0,
                          urgent_rate_burst=BURST, urgent_rate_per_second=2.0,
                          quarantine_purge_interval=0.2) as s:
        yield s


def _body(name: str, **changes: Any) -> dict[str, Any]:
    return {**example(f"{name}.json")["body"], "record_id": fresh_id(name.upper()), **changes}


async def test_http_over_the_rate_limit_gets_429_and_loses_nothing(stack: DataStack) -> None:
    bodies = [json.dumps(_body("compliment")).encode() for _ in range(3 * BURST)]
    responses = await asyncio.gather(*(stack.post(b) for b in bodies))
    limited = [(b, r) for b, r in zip(bodies, responses, strict=True) if r.status_code == 429]
    assert limited and all(int(r.headers["retry-after"]) >= 1 for _, r in limited)
    assert all(r.status_code == 202 for r in responses if r.status_code != 429)
    # Nothing of a refused request was stored: the feed still has it, and sends it again.
    for body, _ in limited:
        record = json.loads(body)["record_id"]
        assert await stack.pool.fetchval(
            "SELECT count(*) FROM intake.receipts WHERE provider_record_id = $1", record) == 0
    lost = 0
    for body, response in limited:
        while response.status_code == 429:
            await asyncio.sleep(float(response.headers["retry-after"]))
            response = await stack.post(body)
        lost += response.status_code != 202
    report("one feed flooding the HTTP API", len(bodies), len(limited), lost)
    assert lost == 0


async def test_amqp_over_the_urgent_rate_limit_is_quarantined_and_loses_nothing(
        stack: DataStack) -> None:
    bodies = [_body("routine-complaint") for _ in range(3 * BURST)]
    sids = [await stack.publish(b) for b in bodies]
    outcomes = await stack.outcomes(sids)
    limited = [sid for sid in sids if outcomes[sid] == "rejected"]
    assert len(limited) >= BURST, outcomes
    for sid in limited:
        row = await stack.pool.fetchrow(
            "SELECT status, reasons, body FROM intake.quarantine WHERE submission_id = $1", sid)
        assert row["status"] == "open" and row["body"]
        assert [r["type"] for r in row["reasons"]] == ["rate_limited"]
    # Nothing lost: each is kept and an operator resubmits it (`carewatch quarantine
    # resubmit`, which is not rate limited).
    admissions = Admissions(lambda: stack.pool, stack.runtimes["intake"].outbox,
                            stack.settings.namespace, keep_body_bytes=MAX_BODY_BYTES)
    lost = 0
    for sid in limited:
        row = await stack.pool.fetchrow("SELECT * FROM intake.quarantine WHERE submission_id = $1",
                                        sid)
        again = await admissions.admit(Incoming(
            body=bytes(row["body"]), feed_user=row["feed_user"],
            message_id=f"resubmission:{sid}", routing_key=row["routing_key"],
            resubmission_of=sid))
        lost += again.outcome != "accepted"
    report("one feed flooding the urgent routing key over AMQP", len(sids), len(limited), lost)
    assert lost == 0


async def test_quarantined_bodies_are_deleted_after_the_retention(stack: DataStack) -> None:
    days = stack.settings.quarantine_retention_days
    old = [json.dumps(_body("compliment", received_on="1800-01-01")).encode() for _ in range(4)]
    new = json.dumps(_body("compliment", received_on="1800-01-01")).encode()
    sids = [uuid.UUID((await stack.post_patiently(b)).json()["submission_id"])
            for b in [*old, new]]
    await stack.pool.execute(
        "UPDATE intake.quarantine SET received_at = now() - make_interval(days => $2)"
        " WHERE submission_id = ANY($1::uuid[])", sids[:-1], days + 1)

    async def purged() -> bool:
        return await stack.pool.fetchval(
            "SELECT count(*) FROM intake.quarantine WHERE submission_id = ANY($1::uuid[])"
            " AND body IS NULL AND body_deleted_at IS NOT NULL AND status = 'expired'",
            sids[:-1]) == len(old)
    await eventually(purged, timeout=30, what="the purge")
    kept = await stack.pool.fetchrow(
        "SELECT body, status FROM intake.quarantine WHERE submission_id = $1", sids[-1])
    assert kept["body"] and kept["status"] == "open", "a body within the retention is kept"
    # A discarded body goes at once (discarding used to change only the status).
    async with stack.pool.acquire() as conn:
        assert await store.resolve_quarantined(conn, sids[-1], "discarded", "operator")
    discarded = await stack.pool.fetchrow(
        "SELECT body, status FROM intake.quarantine WHERE submission_id = $1", sids[-1])
    assert discarded["body"] is None and discarded["status"] == "discarded"
    leaked = await stack.pool.fetchval(
        "SELECT count(*) FROM intake.quarantine WHERE submission_id = ANY($1::uuid[])"
        " AND body IS NOT NULL", sids)
    report("quarantined bodies kept past retention or discard", len(sids), len(sids) - leaked,
           leaked)
    assert leaked == 0
