"""quality-monitor's measures on a real PostgreSQL database, the routes over real HTTP
(uvicorn): rebases recorded, proposed and decided with who did it; the Making Data Count
summary; the charts as SVG and PNG; one concern gathering a measure family's signals. No
broker is needed: these read and write the monitor's tables (the outbox is not relayed).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from services.quality_monitor import spc, store
from services.quality_monitor.app import MEASURE_RULE, Monitor
from services.quality_monitor.config import load_rules
from services.quality_monitor.http import ACCESS, add_routes
from services.quality_monitor.lifecycle import last_closed_month
from services.quality_monitor.rules import fingerprint
from services.quality_monitor.series import METRICS, month_of, shift_month
from shared import identity
from shared.db import create_pool, migrate
from shared.envelope import Envelope
from shared.events import (
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    Evidence,
    ProviderRef,
    Severity,
)
from shared.groupcommit import Batch
from shared.outbox import Outbox
from shared.settings import Settings
from tests.conftest import ServerUrls
from tests.helpers import bearer, carewatch, eventually, token_for
from tools.stacks import database_url

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "quality_monitor" / "migrations"
NOW = datetime.now(UTC)
DSNS: dict[asyncpg.Pool, str] = {}


@pytest.fixture(scope="module")
async def base_url(server_urls: ServerUrls) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    name = f"carewatch_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_urls.postgres_admin)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = database_url(server_urls.postgres_admin, name)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, identity.SCHEMA, identity.MIGRATIONS, messaging=False)
        await migrate(conn, store.SCHEMA, MIGRATIONS)
    runtime = SimpleNamespace(http=SimpleNamespace(api=FastAPI()), pool=pool)
    add_routes(runtime, Monitor(load_rules(), clock=lambda: NOW))  # type: ignore[arg-type]
    # The service's own access control, as every service has it (shared/http.py).
    runtime.http.api.add_middleware(identity.AccessControl, access=ACCESS, pool=lambda: pool)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(runtime.http.api, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return bool(server.started)

    await eventually(started, what="the HTTP server")
    DSNS[pool] = dsn
    yield f"http://127.0.0.1:{port}", pool
    server.should_exit = True
    await task
    await pool.close()
    admin = await asyncpg.connect(server_urls.postgres_admin)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def seed_fft(pool: asyncpg.Pool) -> list[str]:
    """Two providers' monthly returns: 14 steady months, then a jump at RJ1."""
    months = [shift_month(month_of(NOW.date()), k - 15) for k in range(15)]
    async with pool.acquire() as conn:
        for ods, name in (("RJ1", "Guy's and St Thomas'"), ("RJZ", "King's College")):
            await conn.execute(
                "INSERT INTO monitor.providers (ods_code, provider) VALUES ($1, $2)", ods,
                {"ods_code": ods, "name": name, "provider_type": "acute",
                 "quality_contact_email": f"quality.{ods.lower()}@provider.example"})
            for k, m in enumerate(months):
                negative = 60 if (ods, k) == ("RJ1", 14) else 20 + k % 3
                await conn.execute(
                    "INSERT INTO monitor.fft_months (ods_code, site_code, setting, period,"
                    " feedback_id, responses, positive, negative) VALUES"
                    " ($1, '', 'inpatient', $2, $3, 400, $4, $5)",
                    ods, m, uuid.uuid4(), 400 - negative - 10, negative)
    return months


async def test_rebases_need_an_actor_and_keep_who_did_what(
        base_url: tuple[str, asyncpg.Pool]) -> None:
    url, pool = base_url
    body: dict[str, Any] = {"ods_code": "RKE", "metric": "fft_negative", "setting": "inpatient",
                            "period": "2026-07", "reason": "new discharge lounge opened"}
    lead = bearer(await token_for(pool, "a.lead@icb.example", "quality_lead"))
    reviewer = bearer(await token_for(pool, "b.reviewer@icb.example", "quality_team"))
    lay = bearer(await token_for(pool, "c.lay@icb.example", "lay_member"))
    async with httpx.AsyncClient(base_url=url) as http:
        refused = await http.post("/v1/rebases", json=body)
        assert refused.status_code == 401
        assert (await http.post("/v1/rebases", json=body, headers=lay)).status_code == 403
        bad = await http.post("/v1/rebases", json={**body, "period": "2026-13"}, headers=lead)
        assert bad.status_code == 422
        made = await http.post("/v1/rebases", json=body, headers=lead)
        assert made.status_code == 201
        assert (made.json()["status"], made.json()["decided_by"]) == ("accepted",
                                                                      "a.lead@icb.example")
        async with pool.acquire() as conn:
            assert await store.propose_rebase(
                conn, ods_code="RJZ", metric="fft_positive", setting="inpatient",
                period="2026-05", reason="sustained shift", at=NOW)
        decision = {"ods_code": "RJZ", "metric": "fft_positive", "setting": "inpatient",
                    "period": "2026-05", "accept": True}
        missing = await http.post("/v1/rebases/decision", json={**decision, "period": "2026-04"},
                                  headers=lead)
        assert missing.status_code == 404
        accepted = await http.post("/v1/rebases/decision", json=decision, headers=reviewer)
        assert accepted.status_code == 200
        assert (accepted.json()["proposed_by"], accepted.json()["decided_by"]) == (
            "quality-monitor", "b.reviewer@icb.example")
        listed = (await http.get("/v1/rebases", params={"status": "accepted"},
                                 headers=lay)).json()
        assert {(r["ods_code"], r["period"]) for r in listed} >= {("RKE", "2026-07"),
                                                                   ("RJZ", "2026-05")}


async def test_summary_and_charts(base_url: tuple[str, asyncpg.Pool]) -> None:
    url, pool = base_url
    months = await seed_fft(pool)
    reader = bearer(await token_for(pool, "d.reader@icb.example", "lay_member"))
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=reader) as http:
        rows = (await http.get("/v1/measures/summary", params={"provider": "RJ1"})).json()
        by_metric = {r["metric"]: r for r in rows}
        negative = by_metric["fft_negative"]
        assert negative["period"] == months[-1] and negative["value"] == "15.0%"
        assert negative["variation"] == "concern_high"
        assert negative["assurance"] == "consistent_fail"  # target 3% below the limits
        assert by_metric["fft_positive"]["variation"] == "concern_low"
        svg = await http.get("/v1/charts/spc", params={"provider": "RJ1",
                                                       "metric": "fft_negative",
                                                       "setting": "inpatient"})
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        assert b"<svg" in svg.content
        png = await http.get("/v1/charts/funnel", params={"setting": "inpatient",
                                                          "period": months[-1],
                                                          "format": "png"})
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        none = await http.get("/v1/charts/spc", params={"provider": "RXX",
                                                        "metric": "complaints"})
        assert none.status_code == 404 and "at least 12" in none.json()["detail"]


async def test_one_concern_gathers_a_family_s_signals_and_resolves_when_all_clear(
        base_url: tuple[str, asyncpg.Pool]) -> None:
    _, pool = base_url
    provider = ProviderRef(ods_code="RAL", name="Royal Free London", provider_type="acute",
                           quality_contact_email="quality.ral@provider.example")
    fp = fingerprint("RAL", MEASURE_RULE, "FFT: inpatient")

    def evidence(n: int) -> list[Evidence]:
        return [Evidence(feedback_id=uuid.uuid4(), kind="fft_response",
                         occurred_on=NOW.date(), matched="poor") for _ in range(n)]

    async def signal(name: str, rule: str, severity: Severity, items: list[Evidence]) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            return await store.raise_signal(
                conn, fingerprint=fp, provider=provider, rule=MEASURE_RULE,
                family="FFT: inpatient", signal=name, signal_rule=rule, severity=severity,
                reason=f"{name} fired", figures={"n": len(items)}, evidence=items, at=NOW)

    async def clear(name: str) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            return await store.clear_signal(conn, fp, name, f"{name} back to common cause",
                                            NOW)

    shared = evidence(3)
    raised = await signal("spc:fft_negative", "spc_special_cause", Severity.MODERATE, shared)
    assert isinstance(raised, ConcernRaised) and raised.severity is Severity.MODERATE
    # The same items, another rule: a new signal on the same concern, severity up.
    updated = await signal("funnel:fft_negative", "peer_outlier", Severity.HIGH, shared)
    assert isinstance(updated, ConcernUpdated) and updated.concern_id == raised.concern_id
    assert updated.severity is Severity.HIGH
    assert updated.evidence == [] and updated.evidence_count == 3  # a new signal, no new item
    assert set(updated.figures["signals"]) == {"spc:fft_negative", "funnel:fft_negative"}
    assert updated.reason == "funnel:fft_negative fired; spc:fft_negative fired"
    # Nothing new: no event.
    assert await signal("funnel:fft_negative", "peer_outlier", Severity.HIGH, shared) is None
    # One signal back to common cause: still open, no event.
    assert await clear("funnel:fft_negative") is None
    row = await pool.fetchrow("SELECT * FROM monitor.concerns WHERE fingerprint = $1", fp)
    assert row["status"] == "open" and not row["figures"]["signals"]["funnel:fft_negative"][
        "active"]
    # The other: resolved, with both reasons.
    resolved = await clear("spc:fft_negative")
    assert isinstance(resolved, ConcernResolved) and resolved.concern_id == raised.concern_id
    assert resolved.resolution == ("funnel:fft_negative back to common cause;"
                                   " spc:fft_negative back to common cause")
    # The same items again raise nothing (the quality team has seen them); new ones do.
    assert await signal("spc:fft_negative", "spc_special_cause", Severity.MODERATE,
                        shared) is None
    again = await signal("spc:fft_negative", "spc_special_cause", Severity.MODERATE,
                         evidence(1))
    assert isinstance(again, ConcernRaised) and again.concern_id != raised.concern_id


async def test_the_cli_records_rebases_and_draws_the_summary_and_charts(
        base_url: tuple[str, asyncpg.Pool], server_urls: ServerUrls, tmp_path: Path) -> None:
    _, pool = base_url
    settings = Settings(amqp_url=server_urls.amqp, database_url=DSNS[pool])
    key = ["--provider", "ran", "--metric", "complaints", "--from", "2026-03"]
    # Who records it is the account of CAREWATCH_TOKEN, never a name typed in: a lay member's
    # token is refused; without a token, the local operator is recorded.
    lay = {"CAREWATCH_TOKEN": await token_for(pool, "c.lay@icb.example", "lay_member")}
    code, out = await carewatch(settings, "rebases", "add", *key, "--reason", "new service",
                                env=lay)
    assert code == 3 and "holds none of" in out, out
    code, out = await carewatch(settings, "rebases", "add", *key, "--reason", "new service",
                                "--by", "A. Lead")
    assert code != 0 and "--by" in out  # no free-text names
    lead = {"CAREWATCH_TOKEN": await token_for(pool, "a.lead@icb.example", "quality_lead")}
    code, out = await carewatch(settings, "rebases", "add", *key, "--reason", "new service",
                                "--json", env=lead)
    assert code == 0, out
    assert (json.loads(out)[0]["ods_code"], json.loads(out)[0]["decided_by"]) == (
        "RAN", "a.lead@icb.example")
    code, out = await carewatch(settings, "rebases", "add", "--provider", "RAN", "--metric",
                                "complaints", "--from", "2026-04", "--reason", "x", "--json")
    assert code == 0, out
    assert json.loads(out)[0]["decided_by"].startswith("operator:")
    code, out = await carewatch(settings, "rebases", "add", "--provider", "RAN", "--metric",
                                "fft_negative", "--from", "2026-03", "--reason", "x", env=lead)
    assert code != 0 and "need --setting" in out
    if not await pool.fetchval("SELECT true FROM monitor.fft_months WHERE ods_code = 'RJ1'"):
        await seed_fft(pool)
    code, out = await carewatch(settings, "measures", "summary", "--provider", "RJ1", "--json")
    assert code == 0, out
    assert {r["variation"] for r in json.loads(out)} == {"concern_high", "concern_low"}
    chart = tmp_path / "rj1.svg"
    code, out = await carewatch(settings, "charts", "spc", "--provider", "RJ1", "--metric",
                                "fft_negative", "--setting", "inpatient", "--out", str(chart))
    assert code == 0, out
    assert b"<svg" in chart.read_bytes()


async def test_the_monitor_proposes_a_rebase_a_lead_accepts_it_and_the_shift_is_the_new_normal(
        base_url: tuple[str, asyncpg.Pool], server_urls: ServerUrls) -> None:
    """13 months at about 5% negative, then 13 at about 10% (a known new discharge pathway):
    the month's judgement raises a concern (a run above the mean) and proposes a rebase from
    the shift's first month; a quality lead accepts it with the CLI; the next judgement reads
    the new months against their own limits: common cause, and the concern resolves."""
    _, pool = base_url
    monitor = Monitor(load_rules(), clock=lambda: NOW)
    closed = last_closed_month(NOW, monitor.rules.schedule.month_close_days)
    months = [shift_month(closed, k - 25) for k in range(26)]
    ods, metric = "RVR", METRICS["fft_negative"]
    provider = ProviderRef(ods_code=ods, name="Epsom and St Helier", provider_type="acute",
                           quality_contact_email="quality.rvr@provider.example")
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO monitor.providers (ods_code, provider) VALUES ($1, $2)",
                           ods, provider.model_dump(mode="json"))
        for k, m in enumerate(months):
            negative = (20 if k < 13 else 40) + k % 3
            await conn.execute(
                "INSERT INTO monitor.fft_months (ods_code, site_code, setting, period,"
                " feedback_id, responses, positive, negative) VALUES"
                " ($1, '', 'inpatient', $2, $3, 400, $4, $5)",
                ods, m, uuid.uuid4(), 400 - negative - 10, negative)

    async def judge() -> list[Envelope]:
        async with pool.acquire() as conn, conn.transaction():
            outbox = Outbox(conn, store.SCHEMA, "tests.events", "carewatch/quality_monitor")
            await monitor.check_fft_series(Batch(conn), provider, metric, "inpatient", outbox)
            return outbox.added

    raised = await judge()
    assert [e.type for e in raised] == ["concern.raised.v1"]
    assert "run" in {s["test"] for s in raised[0].data["figures"]["signals"][
        "spc:fft_negative"]["figures"]["signals"]}
    [proposal] = await pool.fetch("SELECT * FROM monitor.rebases WHERE ods_code = $1", ods)
    assert (proposal["period"], proposal["status"], proposal["proposed_by"]) == (
        months[13], "proposed", "quality-monitor")
    assert proposal["reason"].startswith("sustained shift: 13 months in a row above the mean")
    assert await judge() == []  # proposed once; the concern has nothing new

    settings = Settings(amqp_url=server_urls.amqp, database_url=DSNS[pool])
    lead = {"CAREWATCH_TOKEN": await token_for(pool, "g.lead@icb.example", "quality_lead")}
    code, out = await carewatch(settings, "rebases", "accept", "--provider", ods, "--metric",
                                "fft_negative", "--setting", "inpatient", "--from", months[13],
                                "--json", env=lead)
    assert code == 0, out
    assert (json.loads(out)[0]["status"], json.loads(out)[0]["decided_by"]) == (
        "accepted", "g.lead@icb.example")

    resolved = await judge()
    assert [e.type for e in resolved] == ["concern.resolved.v1"]
    assert "returned to common cause" in resolved[0].data["resolution"]
    c = spc.chart([40.0 + k % 3 for k in range(13, 26)], monitor.rules.spc.options)
    assert c is not None and set(c.point_types(metric.concern)) == {spc.PointType.COMMON_CAUSE}
