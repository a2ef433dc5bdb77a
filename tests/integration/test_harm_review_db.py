"""The review of possible serious risks against the real PostgreSQL, and its HTTP routes in
process: confirm (serious, concern.updated in the outbox), dismiss (resolved, with a reason),
the audit trail with the actor, the text kept for the corpus, and the refusals.

A database of its own (quality-monitor's migrations only), no broker: the end-to-end path
through RabbitMQ is tests/integration/test_harm_review.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.quality_monitor import review, rules, store
from services.quality_monitor.http import ACCESS, add_review_routes
from shared import identity
from shared.events import Evidence, ProviderRef, Severity
from shared.outbox import Outbox
from tests.conftest import ServerUrls
from tests.helpers import bearer, scratch_pool, token_for
from tests.unit.builders import feedback

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
PROVIDER = ProviderRef(ods_code="RPG", name="Oxleas NHS Foundation Trust",
                       provider_type="mental_health", quality_contact_email="q@oxleas.example")


@pytest.fixture(scope="module")
async def pool(server_urls: ServerUrls) -> AsyncIterator[asyncpg.Pool]:
    from services.quality_monitor import app

    async with scratch_pool(server_urls.postgres_admin, "review", [
            (identity.SCHEMA, identity.MIGRATIONS, False),
            (store.SCHEMA, app.Path(app.__file__).parent / "migrations", True)]) as pool:
        yield pool


async def who(pool: asyncpg.Pool, name: str) -> dict[str, str]:
    """A bearer token of a quality team member called ``name`` (the audit trail's actor)."""
    return bearer(await token_for(pool, name, "quality_team", "quality_lead"))


def outbox(conn: asyncpg.Connection) -> Outbox:
    return Outbox(conn, store.SCHEMA, "test.events", "carewatch/quality_monitor")


async def possible_concern(pool: asyncpg.Pool, text: str, theme: str) -> uuid.UUID:
    """What quality-monitor does with a hedged complaint: the finding, the concern, the
    review request."""
    fb = feedback(theme=theme, description=text)
    finding = rules.immediate_serious_risk(fb)
    assert finding is not None and finding.review and finding.severity is Severity.HIGH
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO monitor.feedback (feedback_id, submission_id, ods_code, kind, theme,"
            " occurred_on, content) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            fb.feedback_id, fb.submission_id, PROVIDER.ods_code, fb.kind, fb.theme,
            fb.occurred_on, fb.content)
        event = await store.raise_or_update(
            conn, fingerprint=rules.fingerprint(PROVIDER.ods_code, finding.rule, finding.theme),
            provider=PROVIDER, rule=finding.rule, theme=finding.theme,
            severity=finding.severity, reason=finding.reason, figures=finding.figures,
            evidence=[Evidence(feedback_id=fb.feedback_id, kind=fb.kind,
                               occurred_on=date(2026, 11, 30), matched=finding.matched)],
            at=AT)
        assert event is not None
        assert await review.request(conn, event.concern_id, AT)
        assert not await review.request(conn, event.concern_id, AT), "requested once"
    return event.concern_id


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    runtime: Any = SimpleNamespace(http=SimpleNamespace(api=app), pool=pool, outbox=outbox)
    monitor: Any = SimpleNamespace(clock=lambda: AT)
    add_review_routes(runtime, monitor)
    app.add_middleware(identity.AccessControl, access=ACCESS, pool=lambda: pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://monitor",
                                 headers=await who(pool, "reader@icb.example")) as client:
        yield client


async def outbox_events(pool: asyncpg.Pool, concern_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT routing_key, body FROM monitor.outbox ORDER BY seq")
    return [{"key": r["routing_key"]} for r in rows if str(concern_id) in bytes(r["body"]).decode()]


async def test_confirming_over_http_makes_the_concern_serious_and_audits_the_actor(
        pool: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    text = "We think dad may have been pushed by a carer; he has bruises nobody can explain."
    concern_id = await possible_concern(pool, text, "Care home: confirm")
    listed = (await api.get("/v1/reviews")).json()
    [mine] = [r for r in listed if r["concern_id"] == str(concern_id)]
    assert mine["severity"] == "high" and mine["review"] == "pending"
    assert {m["category"] for m in mine["figures"]["harm_in_text"]["mentions"]} >= {"abuse"}

    assert (await api.post(f"/v1/reviews/{concern_id}/confirm", json={},
                           headers={"Authorization": ""})).status_code == 401
    ok = await api.post(f"/v1/reviews/{concern_id}/confirm", json={"reason": "grip marks"},
                        headers=await who(pool, "lead.nurse@icb.example"))
    assert ok.status_code == 200, ok.text
    assert (ok.json()["severity"], ok.json()["previous_severity"]) == ("serious", "high")
    events = await outbox_events(pool, concern_id)
    assert [e["key"].split(".")[:2] for e in events][-1] == ["concern", "updated"]

    row = await pool.fetchrow("SELECT * FROM monitor.concerns WHERE concern_id = $1",
                              concern_id)
    assert (row["severity"], row["status"]) == ("serious", "open")
    assert "lead.nurse@icb.example" in row["reason"]
    one = (await api.get(f"/v1/reviews/{concern_id}")).json()
    assert [(a["action"], a["actor"]) for a in one["audit"]] == [
        ("requested", "quality-monitor"), ("confirmed", "lead.nurse@icb.example")]
    kept = await pool.fetchrow("SELECT * FROM monitor.harm_evaluation WHERE concern_id = $1",
                               concern_id)
    assert (kept["text"], kept["decision"], kept["decided_by"]) == (
        text, "confirmed", "lead.nurse@icb.example")
    assert kept["mentions"] == row["figures"]["harm_in_text"]["mentions"]

    again = await api.post(f"/v1/reviews/{concern_id}/dismiss", json={"reason": "no"},
                           headers=await who(pool, "someone@icb.example"))
    assert again.status_code == 409
    assert (await api.post(f"/v1/reviews/{uuid.uuid4()}/confirm", json={},
                           headers=await who(pool, "a@icb.example"))).status_code == 404


async def test_dismissing_needs_a_reason_resolves_the_concern_and_keeps_the_text(
        pool: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    text = "Possible neglect: the resident seemed unkempt when I visited."
    concern_id = await possible_concern(pool, text, "Care home: dismiss")
    no_reason = await api.post(f"/v1/reviews/{concern_id}/dismiss", json={},
                               headers=await who(pool, "quality.team@icb.example"))
    assert no_reason.status_code == 422
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(review.ReviewConflict):
            await review.dismiss(conn, outbox(conn), concern_id, actor="q@icb.example",
                                 at=AT, reason="  ")
    ok = await api.post(f"/v1/reviews/{concern_id}/dismiss",
                        json={"reason": "seen the same day, resident well cared for"},
                        headers=await who(pool, "quality.team@icb.example"))
    assert ok.status_code == 200, ok.text
    assert "dismissed by the quality team (quality.team@icb.example)" in ok.json()["resolution"]
    status = await pool.fetchval("SELECT status FROM monitor.concerns WHERE concern_id = $1",
                                 concern_id)
    assert status == "resolved"
    events = await outbox_events(pool, concern_id)
    assert events[-1]["key"].startswith("concern.resolved")
    kept = await pool.fetchrow("SELECT * FROM monitor.harm_evaluation WHERE concern_id = $1",
                               concern_id)
    assert (kept["decision"], kept["reason"]) == (
        "dismissed", "seen the same day, resident well cared for")
    pending = {r["concern_id"] for r in (await api.get("/v1/reviews")).json()}
    assert str(concern_id) not in pending
    dismissed = {r["concern_id"] for r in
                 (await api.get("/v1/reviews", params={"status": "dismissed"})).json()}
    assert str(concern_id) in dismissed
