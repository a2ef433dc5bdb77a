"""The monthly CQRM packs of 100 providers, timed (``make bench``; alone:
``python -m tools.bench --only reports``). Target: under 60 s on this machine.

A database of its own: 100 acute providers, each with 14 months of inpatient FFT returns and
a month of complaints, GP alerts, online reviews and engagement feedback, put through
quality-monitor's own handler (so the concerns, SPC and funnels are the monitor's); escalation
serves its real HTTP API on a port of its own and the reports read it with a service token,
as in production. Timed: the scheduled run that makes every provider's pack (build, redact,
render PDF, HTML, CSV and XLSX, keep as version 1, the event in the outbox).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

from services.escalation.app import build as build_escalation
from services.quality_monitor.app import build_monitor
from services.quality_monitor.reports.config import ReportSettings
from services.quality_monitor.reports.periods import month
from shared import identity
from shared.db import create_pool, migrate
from shared.events import FeedbackAccepted, ProviderRef
from shared.groupcommit import Batch
from shared.settings import Settings
from tools.stacks import ADMIN_DSN, database_url

MONTH = "2026-10"
AREAS = ("Communications", "Appointments", "Clinical treatment", "Patient care",
         "Waiting times")


def provider_items(k: int) -> tuple[ProviderRef, list[tuple[str, date, str | None, dict[str, Any]]]]:
    ods = f"RB{k:03d}"
    ref = ProviderRef(ods_code=ods, name=f"Bench Trust {k:03d}", provider_type="acute",
                      quality_contact_email=f"q@{ods.lower()}.example")
    items: list[tuple[str, date, str | None, dict[str, Any]]] = []
    periods = [f"2025-{m:02d}" for m in range(9, 13)] + [f"2026-{m:02d}" for m in range(1, 11)]
    for i, period in enumerate(periods):
        items.append(("fft_monthly", date.fromisoformat(f"{period}-01"), "fft: inpatient", {
            "period": period, "setting": "inpatient", "very_good": 500 + k, "good": 250,
            "neither_good_nor_poor": 40, "poor": 20 + (i * k) % 7, "very_poor": 8,
            "dont_know": 5}))
    for n in range(10):
        day = date(2026, 10, 1 + 2 * n)
        area = AREAS[(n + k) % len(AREAS)]
        items.append(("complaint", day, area, {
            "received_on": day.isoformat(), "subject_area": area,
            "acknowledged_on": date(2026, 10, 2 + 2 * n).isoformat(),
            "description": f"Complaint {n} about {area.lower()} on the ward."}))
    for n in range(3):
        day = date(2026, 10, 5 + n)
        items.append(("gp_alert", day, "Admissions, discharges and transfers", {
            "raised_on": day.isoformat(), "raised_by_practice": "Y01234",
            "theme_area": "Admissions, discharges and transfers", "patient_safety": n == 0,
            "description": "Discharge summary not received."}))
    for n in range(3):
        day = date(2026, 10, 10 + n)
        items.append(("online_review", day, "online review: nhs_website", {
            "source": "nhs_website", "posted_on": day.isoformat(), "rating": 2 + n,
            "text": "Staff were kind but the wait was long.",
            "response_status": "awaiting_response"}))
    items.append(("engagement_feedback", date(2026, 10, 20), "Parking", {
        "met_on": "2026-10-20", "group": "Patient panel", "topic": "Parking",
        "summary": "More disabled bays asked for."}))
    return ref, items


async def monthly_packs(providers: int = 100) -> dict[str, Any]:
    import asyncpg

    tag = uuid.uuid4().hex[:8]
    settings = Settings(database_url=database_url(ADMIN_DSN, f"carewatch_bench_reports_{tag}"),
                        namespace=f"cwbench_{tag}", http_port=0)
    name = settings.database_url.rsplit("/", 1)[1].partition("?")[0]
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    clock = [datetime(2026, 11, 10, 9, 0, tzinfo=UTC)]
    runtime, monitor = build_monitor(settings, clock=lambda: clock[0],
                                     report_settings=ReportSettings())
    escalation = build_escalation(settings, clock=lambda: clock[0])
    conn = await asyncpg.connect(settings.database_url)
    await migrate(conn, identity.SCHEMA, identity.MIGRATIONS, messaging=False)
    for r in (runtime, escalation):
        await migrate(conn, r.schema, r.migrations)
    await identity.add_account(conn, identity.NewAccount(
        "quality-monitor", [identity.QUALITY_TEAM], "service"), "bench")
    token = await identity.create_token(conn, "quality-monitor", scopes=None, days=1,
                                        label="bench", created_by="bench")
    await conn.close()
    pool = await create_pool(settings.database_url, min_size=1, max_size=4)
    escalation._pool = await create_pool(settings.database_url, min_size=1, max_size=3)
    await escalation.http.start("127.0.0.1", 0)
    try:
        started = time.perf_counter()
        seeded = 0
        for k in range(providers):
            ref, items = provider_items(k)
            async with pool.acquire() as c, c.transaction():
                for kind, day, theme, content in items:
                    fb = FeedbackAccepted(
                        feedback_id=uuid.uuid4(), submission_id=uuid.uuid4(), provider=ref,
                        kind=kind, provider_record_id=f"B-{uuid.uuid4().hex[:8]}",
                        occurred_on=day, theme=theme,
                        content={"kind": kind, "ods_code": ref.ods_code, **content})
                    await monitor.on_feedback_accepted(Batch(c), fb, monitor._outbox(c))
                    seeded += 1
        seed_seconds = time.perf_counter() - started
        assert monitor.reports is not None
        monitor.reports.settings = ReportSettings(
            escalation_url=f"http://127.0.0.1:{escalation.http.port}", token=token)
        started = time.perf_counter()
        result = await monitor.reports.monthly(pool, month(MONTH))
        seconds = time.perf_counter() - started
        sizes = await pool.fetchrow(
            "SELECT count(*) AS n, avg(length(pdf)) AS pdf, avg(length(xlsx)) AS xlsx,"
            " avg(length(html)) AS html FROM monitor.reports WHERE kind = 'cqrm_pack'")
        return {"providers": providers, "items": seeded, "seed_seconds": seed_seconds,
                "seconds": seconds, "made": result["made"], "pdf_bytes": float(sizes["pdf"]),
                "xlsx_bytes": float(sizes["xlsx"]), "html_bytes": float(sizes["html"])}
    finally:
        await escalation.http.stop()
        await escalation.pool.close()
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def reports_section(r: dict[str, Any]) -> list[str]:
    return [
        "## Reports: the monthly CQRM packs",
        f"- {r['made']} providers' packs for {MONTH} (each: build from quality-monitor's"
        f" tables and escalation's API, redact again, an SPC chart, PDF by Typst, HTML, CSV"
        f" and XLSX, kept as version 1 with its event in the outbox) in"
        f" **{r['seconds']:.1f} s** ({r['seconds'] / max(r['made'], 1):.2f} s a pack; target:"
        f" 100 packs under 60 s). Average sizes: PDF {r['pdf_bytes'] / 1024:.0f} KiB, XLSX"
        f" {r['xlsx_bytes'] / 1024:.0f} KiB, HTML {r['html_bytes'] / 1024:.0f} KiB.",
        f"- The data set: {r['items']:,} items put through quality-monitor's handler first"
        f" ({r['seed_seconds']:.0f} s, not timed).", ""]
