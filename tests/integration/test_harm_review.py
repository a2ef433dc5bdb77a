"""Possible serious risks and the quality team's review, over the real broker, database and
HTTP surface: a hedged complaint raises a high concern marked for review; confirming it over
HTTP makes it serious (concern.updated.v2, which escalation books a meeting for); dismissing
it with the CLI resolves it; both are audited and keep the redacted text for the corpus.

ODS codes used here and nowhere else in the tests: RPG (confirm), RAT (dismiss), RV5 (serious).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from services.catalogue import builder
from services.quality_monitor.app import build_monitor
from shared.envelope import Envelope
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import bearer, carewatch, eventually, publish_submission, token_for
from tests.integration.test_monitor import capture_concern_events, purge_downstream

pytestmark = pytest.mark.integration

HEDGED = ("We think mum may have been pushed by one of the carers, she has bruises on her arms"
          " that nobody can explain.")
SERIOUS = "Mum was left lying on the floor for four hours and now has a grade 4 pressure ulcer."


async def who(pool: asyncpg.Pool, name: str) -> dict[str, str]:
    """A bearer token of a quality team member called ``name`` (the audit trail's actor)."""
    return bearer(await token_for(pool, name, "quality_team", "quality_lead"))


@dataclass
class Stack:
    intake: ServiceRuntime
    monitor: ServiceRuntime
    events: list[Envelope]
    api: httpx.AsyncClient

    def of(self, ods: str, kind: str) -> list[Envelope]:
        return [e for e in self.events if e.type == kind
                and e.data["provider"]["ods_code"] == ods]


@pytest.fixture(scope="module")
async def stack(settings: Settings, amqp: aio_pika.abc.AbstractConnection
                ) -> AsyncIterator[Stack]:
    intake = builder("intake")(settings)
    monitor, _ = build_monitor(settings)
    events: list[Envelope] = []
    channel = await capture_concern_events(amqp, settings, events)
    await intake.start()
    await monitor.start()
    reader = await who(monitor.pool, "reader@icb.example")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{monitor.http.port}",
                                 headers=reader) as api:
        yield Stack(intake, monitor, events, api)
    await monitor.stop()
    await intake.stop()
    await channel.close()
    await purge_downstream(amqp, settings)


async def complain(amqp: aio_pika.abc.AbstractConnection, settings: Settings, ods: str,
                   text: str) -> None:
    today = date.today().isoformat()
    await publish_submission(amqp, settings.namespace, {
        "kind": "complaint", "ods_code": ods, "record_id": f"HR-{uuid.uuid4().hex[:8]}",
        "received_on": today, "acknowledged_on": today, "subject_area": "Clinical treatment",
        "description": text})


async def raised(stack: Stack, ods: str) -> Envelope:
    found = await eventually(lambda: _first(stack.of(ods, "concern.raised.v1")), timeout=30,
                             what=f"concern.raised for {ods}")
    return found


async def _first(items: list[Envelope]) -> Envelope | None:
    return items[0] if items else None


async def test_a_hedged_complaint_is_a_high_concern_for_review_and_confirming_makes_it_serious(
        stack: Stack, settings: Settings, amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool) -> None:
    await complain(amqp, settings, "RPG", HEDGED)
    event = await raised(stack, "RPG")
    assert (event.data["rule"], event.data["severity"]) == ("possible_serious_risk", "high")
    concern_id = uuid.UUID(event.data["concern_id"])
    mentions = event.data["figures"]["harm_in_text"]["mentions"]
    assert {(m["category"], m["tier"]) for m in mentions} >= {("abuse", "possible")}
    assert all(m["sentence"] and m["phrase"] and m["context"] for m in mentions)
    assert event.data["figures"]["review"] == "pending"

    pending = (await stack.api.get("/v1/reviews")).json()
    assert str(concern_id) in {r["concern_id"] for r in pending}

    # no identity, no decision
    anonymous = await stack.api.post(f"/v1/reviews/{concern_id}/confirm", json={},
                                     headers={"Authorization": ""})
    assert anonymous.status_code == 401
    confirmed = await stack.api.post(f"/v1/reviews/{concern_id}/confirm",
                                     json={"reason": "bruising pattern fits a grip"},
                                     headers=await who(stack.monitor.pool, "lead.nurse@icb.example"))
    assert confirmed.status_code == 200, confirmed.text
    updated = await eventually(lambda: _first(stack.of("RPG", "concern.updated.v2")),
                               timeout=30, what="concern.updated for RPG")
    assert (updated.data["severity"], updated.data["previous_severity"]) == ("serious", "high")
    assert updated.data["concern_id"] == str(concern_id)

    row = await db.fetchrow("SELECT * FROM monitor.concerns WHERE concern_id = $1", concern_id)
    assert (row["severity"], row["status"], row["figures"]["review"]) == (
        "serious", "open", "confirmed")
    review = (await stack.api.get(f"/v1/reviews/{concern_id}")).json()
    assert (review["review"], review["decided_by"]) == ("confirmed", "lead.nurse@icb.example")
    assert [(a["action"], a["actor"]) for a in review["audit"]] == [
        ("requested", "quality-monitor"), ("confirmed", "lead.nurse@icb.example")]
    kept = await db.fetchrow("SELECT * FROM monitor.harm_evaluation WHERE concern_id = $1",
                             concern_id)
    assert kept["text"] == HEDGED and kept["decision"] == "confirmed"

    again = await stack.api.post(f"/v1/reviews/{concern_id}/confirm", json={},
                                 headers=await who(stack.monitor.pool, "someone.else@icb.example"))
    assert again.status_code == 409
    missing = await stack.api.post(f"/v1/reviews/{uuid.uuid4()}/dismiss",
                                   json={"reason": "x"}, headers=await who(stack.monitor.pool, "a@b.example"))
    assert missing.status_code == 404


async def test_dismissing_with_the_cli_resolves_the_concern_and_keeps_the_text(
        stack: Stack, settings: Settings, amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool) -> None:
    await complain(amqp, settings, "RAT", HEDGED)
    concern_id = (await raised(stack, "RAT")).data["concern_id"]

    code, out = await carewatch(settings, "concerns", "review", "list")
    assert code == 0 and concern_id in out and "abuse" in out, out
    team = {"CAREWATCH_TOKEN": await token_for(
        stack.monitor.pool, "quality.team@icb.example", "quality_team")}
    code, out = await carewatch(settings, "concerns", "review", "dismiss", concern_id, env=team)
    assert code != 0, "a dismissal needs a reason"
    code, out = await carewatch(settings, "concerns", "review", "dismiss", concern_id,
                                "--reason", "bruises from a fall recorded on the day", env=team)
    assert code == 0, out

    resolved = await eventually(lambda: _first(stack.of("RAT", "concern.resolved.v1")),
                                timeout=30, what="concern.resolved for RAT")
    assert "dismissed by the quality team (quality.team@icb.example)" in \
        resolved.data["resolution"]
    status = await db.fetchval("SELECT status FROM monitor.concerns WHERE concern_id = $1",
                               uuid.UUID(concern_id))
    assert status == "resolved"
    kept: Any = await db.fetchrow(
        "SELECT * FROM monitor.harm_evaluation WHERE concern_id = $1", uuid.UUID(concern_id))
    assert (kept["decision"], kept["reason"], kept["decided_by"]) == (
        "dismissed", "bruises from a fall recorded on the day", "quality.team@icb.example")
    code, out = await carewatch(settings, "concerns", "review", "confirm", concern_id,
                                env=team)
    assert code == 1 and "already dismissed" in out


async def test_a_clear_harm_is_serious_at_once_with_its_evidence(
        stack: Stack, settings: Settings, amqp: aio_pika.abc.AbstractConnection,
        db: asyncpg.Pool) -> None:
    await complain(amqp, settings, "RV5", SERIOUS)
    event = await raised(stack, "RV5")
    assert (event.data["rule"], event.data["severity"]) == ("immediate_serious_risk", "serious")
    harm = event.data["figures"]["harm_in_text"]
    assert harm["categories"] == ["neglect"]
    assert {m["sentence"] for m in harm["mentions"]} == {SERIOUS}
    assert await db.fetchval("SELECT count(*) FROM monitor.reviews r JOIN monitor.concerns c"
                             " USING (concern_id) WHERE c.ods_code = 'RV5'") == 0
