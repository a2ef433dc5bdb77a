"""People and roles (issue 14, item 1), replayed against escalation's real HTTP API, broker and
database: an anonymous close, the wrong roles, a forged "recorded by", an outcome before the
meeting, a provider user reading another provider."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from services.escalation.app import EscalationRuntime, build
from shared import identity
from shared.events import ConcernRaised, Evidence, Severity
from shared.settings import Settings
from tests.helpers import bearer, eventually, token_for
from tests.integration.test_escalation import provider
from tests.security.attacks import Attack
from tests.security.conftest import isolated


@dataclass
class World:
    runtime: EscalationRuntime
    pool: asyncpg.Pool
    base: str
    concerns: dict[str, uuid.UUID]  # ODS code -> concern id
    meetings: dict[str, uuid.UUID]
    tokens: dict[str, str]  # who -> token

    def client(self, who: str | None = None, **headers: str) -> httpx.AsyncClient:
        auth = bearer(self.tokens[who]) if who else {}
        return httpx.AsyncClient(base_url=self.base, headers={**auth, **headers})


def raised(ods: str) -> ConcernRaised:
    now = datetime.now(UTC)
    return ConcernRaised(
        concern_id=uuid.uuid4(), fingerprint=f"{ods}:sec:{uuid.uuid4().hex[:6]}",
        provider=provider(ods), rule="immediate_serious_risk",
        theme=f"theme-{uuid.uuid4().hex[:8]}", severity=Severity.SERIOUS,
        reason=f"a serious risk reported at {ods}", figures={},
        evidence=[Evidence(feedback_id=uuid.uuid4(), kind="complaint", occurred_on=now.date())],
        raised_at=now)


@pytest.fixture(scope="module")
async def world(settings: Settings) -> AsyncIterator[World]:
    async with isolated(settings, "id") as s:
        runtime = build(s)
        await runtime.start()
        pool = runtime.pool
        concerns: dict[str, uuid.UUID] = {}
        connection = await aio_pika.connect(s.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange(f"{s.namespace}.events")
            for ods in ("RJ1", "RRU"):
                c = raised(ods)
                envelope = c.envelope("carewatch/quality_monitor")
                # Sent as quality_monitor would be (every process of the tests is guest).
                await events.publish(aio_pika.Message(
                    envelope.to_bytes(), message_id=str(envelope.id), user_id="guest",
                    content_type="application/json"), c.routing_key())
                concerns[ods] = c.concern_id
        meetings = {}
        for ods, cid in concerns.items():
            meetings[ods] = await eventually(partial(
                pool.fetchval, "SELECT meeting_id FROM escalation.meetings WHERE concern_id = $1",
                cid),
                what=f"the meeting of {ods}'s concern")
        tokens = {
            "lead": await token_for(pool, "lead@icb.test", identity.QUALITY_LEAD,
                                    identity.QUALITY_TEAM),
            "team": await token_for(pool, "team@icb.test", identity.QUALITY_TEAM),
            "lay": await token_for(pool, "lay@icb.test", identity.LAY_MEMBER),
            "operator": await token_for(pool, "ops@icb.test", identity.OPERATOR),
            "rru": await token_for(pool, "quality@rru.test", identity.PROVIDER_USER,
                                   ods_codes=("RRU",)),
        }
        yield World(runtime, pool, f"http://127.0.0.1:{runtime.http.port}", concerns,
                    meetings, tokens)
        await runtime.stop()


async def concern_state(w: World, ods: str) -> tuple[str, int, str]:
    """What an attack must not change: the concern's status, its audit entries, its meeting."""
    row = await w.pool.fetchrow(
        "SELECT c.status, (SELECT count(*) FROM escalation.audit_log a"
        " WHERE a.concern_id = c.concern_id) AS audited, m.status AS meeting"
        " FROM escalation.concerns c JOIN escalation.meetings m USING (concern_id)"
        " WHERE c.concern_id = $1", w.concerns[ods])
    return row["status"], row["audited"], row["meeting"]


def every_route(w: World) -> list[tuple[str, str, dict[str, Any] | None]]:
    cid, mid = w.concerns["RJ1"], w.meetings["RJ1"]
    return [
        ("POST", f"/v1/concerns/{cid}/close", {"reason": "nothing to see"}),
        ("POST", f"/v1/meetings/{mid}/outcome", {"outcome": "agreed"}),
        ("POST", f"/v1/concerns/{cid}/actions",
         {"description": "x", "owner": "y", "due_on": "2031-01-01"}),
        ("POST", f"/v1/actions/{uuid.uuid4()}/complete", {"evidence": "x"}),
        ("GET", "/v1/concerns", None), ("GET", f"/v1/concerns/{cid}", None),
        ("GET", f"/v1/concerns/{cid}/audit", None), ("GET", "/v1/meetings", None),
        ("GET", f"/v1/meetings/{mid}", None), ("GET", "/v1/actions", None),
        ("GET", "/v1/cqrm", None), ("GET", "/v1/watch-list", None), ("GET", "/v1/visits", None),
        ("GET", "/v1/schedule", None), ("GET", "/ready", None), ("GET", "/metrics", None),
        ("GET", "/openapi.json", None), ("GET", "/docs", None),
        ("GET", "/v1/dead-letters", None),
    ]


async def test_anonymous_and_false_credentials_are_refused_everywhere(
        world: World, attack: Callable[[str], Attack]) -> None:
    a = attack("anonymous close and every route without a valid identity")
    before = await concern_state(world, "RJ1")
    revoked = await token_for(world.pool, "gone@icb.test", identity.QUALITY_LEAD)
    async with world.pool.acquire() as conn:
        await identity.revoke_token(conn, identity.parse_token(revoked)[0])  # type: ignore[index]
    disabled = await token_for(world.pool, "left@icb.test", identity.QUALITY_LEAD)
    async with world.pool.acquire() as conn:
        await identity.disable_account(conn, "left@icb.test")
    lead_id, _ = identity.parse_token(world.tokens["lead"])  # type: ignore[misc]
    credentials: list[dict[str, str]] = [
        {}, {"Authorization": "Bearer"}, {"Authorization": "Basic bGVhZDpsZWFk"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer cw_{lead_id}_guessed-secret"},  # a real id, a wrong secret
        bearer(revoked), bearer(disabled),
        {"X-Carewatch-On-Behalf-Of": "lead@icb.test"},  # no service identity behind it
    ]
    async with httpx.AsyncClient(base_url=world.base) as client:
        for headers in credentials:
            for method, path, body in every_route(world):
                response = await client.request(method, path, json=body, headers=headers)
                a.record(refused=response.status_code == 401,
                         leaked=response.status_code < 400,
                         what=f"{method} {path} {headers} -> {response.status_code}")
        assert (await client.get("/health")).status_code == 200  # liveness stays open
    a.record(refused=True, leaked=await concern_state(world, "RJ1") != before,
             what="the concern changed")
    a.finish()


async def test_roles_that_may_not_close_are_refused(
        world: World, attack: Callable[[str], Attack]) -> None:
    a = attack("close and commands by roles that may not")
    before = await concern_state(world, "RJ1")
    cid, mid = world.concerns["RJ1"], world.meetings["RJ1"]
    attempts = [
        (who, method, path, body)
        for who in ("lay", "operator", "rru", "team")
        for method, path, body in [
            ("POST", f"/v1/concerns/{cid}/close", {"reason": "done"}),
            ("POST", f"/v1/concerns/{world.concerns['RRU']}/close", {"reason": "done"})]
    ] + [(who, "POST", f"/v1/meetings/{mid}/outcome", {"outcome": "x"})
         for who in ("lay", "operator", "rru")] + [
        ("operator", "GET", f"/v1/concerns/{cid}", None),
        ("operator", "GET", f"/v1/concerns/{cid}/audit", None),
        ("lay", "GET", "/ready", None), ("lead", "GET", "/metrics", None)]
    for who, method, path, body in attempts:
        async with world.client(who) as client:
            response = await client.request(method, path, json=body)
        a.record(refused=response.status_code == 403, leaked=response.status_code < 400,
                 what=f"{who} {method} {path} -> {response.status_code}")
    a.record(refused=True, leaked=await concern_state(world, "RJ1") != before,
             what="the concern changed")
    a.finish()


async def test_forged_recorded_by_is_refused_and_the_audit_records_the_token(
        world: World, attack: Callable[[str], Attack]) -> None:
    a = attack("forged recorded_by / closed_by / completed_by")
    cid, mid = world.concerns["RJ1"], world.meetings["RJ1"]
    forged = "the.chief.executive@icb.test"
    async with world.client("lead") as client:
        added = await client.post(f"/v1/concerns/{cid}/actions", json={
            "description": "Provide the 72-hour report", "owner": "Chief Nurse",
            "due_on": "2031-01-10"})
        assert added.status_code == 201, added.text
        action_id = added.json()["action_id"]
        for method, path, body in [
                ("POST", f"/v1/concerns/{cid}/close", {"reason": "x", "closed_by": forged}),
                ("POST", f"/v1/meetings/{mid}/outcome", {"outcome": "x", "recorded_by": forged}),
                ("POST", f"/v1/concerns/{cid}/actions", {"description": "x", "owner": "y",
                                                         "due_on": "2031-01-01",
                                                         "recorded_by": forged}),
                ("POST", f"/v1/actions/{action_id}/complete", {"evidence": "x",
                                                               "completed_by": forged})]:
            response = await client.request(method, path, json=body)
            a.record(refused=response.status_code == 422, leaked=response.status_code < 400,
                     what=f"{path} -> {response.status_code}")
    actors = {r["actor"] for r in await world.pool.fetch(
        "SELECT actor FROM escalation.audit_log WHERE concern_id = $1", cid)}
    a.record(refused=True, leaked=forged in actors, what=f"audit actors {actors}")
    # The audit trail names the token's account, whoever the body said.
    assert "lead@icb.test" in actors
    a.finish()


async def test_an_outcome_before_the_meeting_has_started_is_refused(
        world: World, attack: Callable[[str], Attack]) -> None:
    a = attack("outcome recorded before the meeting started")
    mid = world.meetings["RRU"]
    async with world.client("lead") as client:
        response = await client.post(f"/v1/meetings/{mid}/outcome", json={"outcome": "x"})
    a.record(refused=response.status_code == 409 and "has not started" in response.text,
             leaked=response.status_code < 400, what=response.text)
    status = await world.pool.fetchval(
        "SELECT status FROM escalation.meetings WHERE meeting_id = $1", mid)
    a.record(refused=True, leaked=status != "scheduled", what=f"meeting {status}")
    a.finish()


async def test_a_provider_user_sees_and_acts_for_its_own_providers_only(
        world: World, attack: Callable[[str], Attack]) -> None:
    a = attack("provider user reading another provider")
    other_cid, other_mid = world.concerns["RJ1"], world.meetings["RJ1"]
    async with world.client("lead") as client:
        added = await client.post(f"/v1/concerns/{other_cid}/actions", json={
            "description": "Audit falls", "owner": "Director of Nursing",
            "due_on": "2031-02-01"})
        assert added.status_code == 201, added.text
    other_action = added.json()["action_id"]
    secret_marks = (str(other_cid), str(other_mid), "RJ1", other_action)
    async with world.client("rru") as client:
        # Its own provider: allowed (the check is not "refuse everything").
        own = await client.get(f"/v1/concerns/{world.concerns['RRU']}")
        assert own.status_code == 200, own.text
        for method, path, body, refusal in [
                ("GET", f"/v1/concerns/{other_cid}", None, 404),
                ("GET", f"/v1/meetings/{other_mid}", None, 404),
                ("POST", f"/v1/actions/{other_action}/complete", {"evidence": "done"}, 404),
                ("GET", f"/v1/concerns/{other_cid}/audit", None, 403),
                ("GET", "/v1/cqrm?ods_code=RJ1", None, 403),
                ("GET", "/v1/watch-list?ods_code=RJ1", None, 403),
                ("GET", "/v1/visits?ods_code=RJ1", None, 403),
                ("GET", f"/v1/schedule?concern_id={other_cid}", None, 403)]:
            response = await client.request(method, path, json=body)
            # (an error may repeat the id the caller gave: only the rest would be a leak)
            a.record(refused=response.status_code == refusal,
                     leaked=response.status_code < 400 or any(
                         m in response.text for m in secret_marks if m not in path),
                     what=f"{method} {path} -> {response.status_code}")
        for path in ("/v1/concerns", "/v1/meetings", "/v1/meetings?ods_code=RJ1", "/v1/actions",
                     f"/v1/actions?concern_id={other_cid}"):
            response = await client.get(path)
            rows = response.json()
            a.record(refused=response.status_code == 200 and all(
                         r["ods_code"] == "RRU" for r in rows),
                     leaked=any(m in response.text for m in secret_marks),
                     what=f"GET {path}: {response.text[:200]}")
    status = await world.pool.fetchval(
        "SELECT status FROM escalation.actions WHERE action_id = $1", uuid.UUID(other_action))
    a.record(refused=True, leaked=status != "open", what=f"action {status}")
    a.finish()
