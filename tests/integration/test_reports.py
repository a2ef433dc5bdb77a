"""Reports from a known data set, through the real services: quality-monitor's handlers on
the real PostgreSQL build its tables, escalation (its handlers and its real HTTP API on a port
of its own) holds the meetings and action plans, and the reports read both, render PDF (Typst),
HTML, CSV and XLSX, and keep versions. Figures are read back from the PDF's text
(``pdftotext``) and from the CSV and XLSX; a page of each is rendered to PNG (``pdftoppm``)
under ``var/test-artefacts/reports/``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from openpyxl import load_workbook

from services.escalation.app import EscalationRuntime
from services.escalation.app import build as build_escalation
from services.notification.app import build as build_notification
from services.quality_monitor.app import Monitor, build_monitor
from services.quality_monitor.reports.config import ReportSettings
from services.quality_monitor.reports.periods import LONDON
from services.quality_monitor.reports.runtime import reports_for
from services.quality_monitor.reports.service import Reports
from shared import identity
from shared.db import create_pool, migrate
from shared.envelope import Envelope
from shared.events import EVENT_TYPES, ConcernRaised, FeedbackAccepted, ProviderRef
from shared.groupcommit import Batch
from shared.settings import Settings
from tests.conftest import free_port
from tests.helpers import bearer, carewatch, eventually, smtp_server, token_for
from tools.stacks import database_url

pytestmark = pytest.mark.integration
ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artefacts" / "reports"
ODS = "RPT"
PROVIDER = ProviderRef(ods_code=ODS, name="Riverside Teaching Hospitals NHS Trust",
                       provider_type="acute", quality_contact_email="quality@rpt.example")
MONTH = "2026-10"
needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                   reason="poppler-utils is not installed (apt-get install"
                                          " poppler-utils)")


@dataclass
class Stack:
    settings: Settings
    pool: asyncpg.Pool
    monitor: Monitor
    escalation: EscalationRuntime
    reports: Reports
    clock: list[datetime]
    tokens: dict[str, str]

    async def accept(self, kind: str, occurred_on: date, theme: str | None,
                     **content: Any) -> FeedbackAccepted:
        return await self.accept_for(PROVIDER, kind, occurred_on, theme, **content)

    async def accept_for(self, provider: ProviderRef, kind: str, occurred_on: date,
                         theme: str | None, **content: Any) -> FeedbackAccepted:
        """One accepted item, through quality-monitor's own handler, and what it raised on to
        escalation (the relay's work, done here)."""
        fb = FeedbackAccepted(
            feedback_id=uuid.uuid4(), submission_id=uuid.uuid4(), provider=provider, kind=kind,
            provider_record_id=f"R-{uuid.uuid4().hex[:8]}", occurred_on=occurred_on,
            theme=theme, content={"kind": kind, "ods_code": provider.ods_code, **content})
        async with self.pool.acquire() as conn, conn.transaction():
            await self.monitor.on_feedback_accepted(Batch(conn), fb, self.monitor._outbox(conn))
        await self.deliver()
        return fb

    async def deliver(self) -> None:
        """quality-monitor's outbox to escalation's handlers (what the relay would do)."""
        rows = await self.pool.fetch("SELECT seq, body FROM monitor.outbox ORDER BY seq")
        if not rows:
            return
        await self.pool.execute("DELETE FROM monitor.outbox WHERE seq <= $1", rows[-1]["seq"])
        for row in rows:
            envelope = Envelope.from_bytes(bytes(row["body"]))
            if EVENT_TYPES[envelope.type] is ConcernRaised:
                async with self.pool.acquire() as conn, conn.transaction():
                    await self.escalation.escalation.on_concern_raised(
                        conn, ConcernRaised.model_validate(envelope.data),
                        self.escalation.outbox(conn))

    def escalation_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.escalation.http.port}",
                                 headers=bearer(self.tokens["lead"]))


@pytest.fixture(scope="module")
async def stack(server_urls: Any) -> AsyncIterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(database_url=database_url(server_urls.postgres_admin,
                                                  f"carewatch_test_{tag}"),
                        namespace=f"cwtest_{tag}", http_port=0,
                        commissioner_name="NHS Riverside ICB")
    name = settings.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(server_urls.postgres_admin)
    await admin.execute(f'CREATE DATABASE "{name}"')
    # quality-monitor's clock: after October 2026 has closed.
    clock = [datetime(2026, 11, 10, 9, 0, tzinfo=UTC)]
    runtime, monitor = build_monitor(settings, clock=lambda: clock[0])
    esc_clock = [datetime(2026, 10, 5, 9, 0, tzinfo=UTC)]
    escalation = build_escalation(settings, clock=lambda: esc_clock[0])
    conn = await asyncpg.connect(settings.database_url)
    await migrate(conn, identity.SCHEMA, identity.MIGRATIONS, messaging=False)
    for r in (runtime, escalation):
        await migrate(conn, r.schema, r.migrations)
    await conn.close()
    pool = await create_pool(settings.database_url, min_size=1, max_size=4)
    escalation._pool = await create_pool(settings.database_url, min_size=1, max_size=3)
    await escalation.http.start("127.0.0.1", 0)
    tokens = {
        "service": await token_for(pool, f"quality-monitor-{tag}", identity.QUALITY_TEAM,
                                   kind="service"),
        "lead": await token_for(pool, f"lead.{tag}@icb.example", identity.QUALITY_LEAD),
        "lay": await token_for(pool, f"lay.{tag}@icb.example", identity.LAY_MEMBER),
        "other_provider": await token_for(pool, f"rwk.{tag}@provider.example",
                                          identity.PROVIDER_USER, ods_codes=("RWK",)),
    }
    reports = reports_for(settings, outbox_for=monitor.outbox_for, clock=lambda: clock[0],
                          report_settings=ReportSettings(
                              escalation_url=f"http://127.0.0.1:{escalation.http.port}",
                              token=tokens["service"]))
    s = Stack(settings, pool, monitor, escalation, reports, clock, tokens)
    s.esc_clock = esc_clock  # type: ignore[attr-defined]
    await seed(s)
    yield s
    await escalation.http.stop()
    await escalation.pool.close()
    await pool.close()
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def complaint(area: str, received: date, acknowledged: date | None, **extra: Any) -> dict[str, Any]:
    return {"received_on": received.isoformat(), "subject_area": area,
            "acknowledged_on": acknowledged.isoformat() if acknowledged else None, **extra}


async def seed(s: Stack) -> None:
    """The known data set of RPT for October 2026 (and the FFT year before it)."""
    monitor_outbox = s.monitor.outbox_for
    assert monitor_outbox is not None
    # 14 months of inpatient FFT returns: 2025-09 to 2026-10, the last the highest.
    for i, period in enumerate([f"2025-{m:02d}" for m in range(9, 13)]
                               + [f"2026-{m:02d}" for m in range(1, 11)]):
        poor = 20 + (i % 3) + (30 if period == MONTH else 0)
        await s.accept("fft_monthly", date.fromisoformat(f"{period}-01"), "fft: inpatient",
                       period=period, setting="inpatient", very_good=600, good=250,
                       neither_good_nor_poor=40, poor=poor, very_poor=10, dont_know=5)
    # Five other inpatient providers in October: the funnel of the setting and month.
    for k, ods in enumerate(("RPA", "RPB", "RPC", "RPD", "RPE")):
        await s.accept_for(ProviderRef(ods_code=ods, name=f"Peer Trust {ods}",
                                       provider_type="acute",
                                       quality_contact_email=f"q@{ods.lower()}.example"),
                           "fft_monthly", date(2026, 10, 1), "fft: inpatient", period=MONTH,
                           setting="inpatient", very_good=500 + 10 * k, good=300,
                           neither_good_nor_poor=50, poor=20 + k, very_poor=5, dont_know=5)
    # Six poor inpatient FFT answers in October (a theme the public raised).
    for n in range(6):
        await s.accept("fft_response", date(2026, 10, 3 + n), "fft: inpatient",
                       responded_on=f"2026-10-0{3 + n}", setting="inpatient", answer="poor",
                       comment="The ward was noisy at night.")
    # Seven complaints in October: Communications 4 (3 acknowledged in time), Appointments 3
    # (2 in time); 2 upheld.
    oct_ = date(2026, 10, 1)
    for n, (area, received, ack, outcome) in enumerate([
            ("Communications", date(2026, 10, 1), date(2026, 10, 2), "upheld"),
            ("Communications", date(2026, 10, 6), date(2026, 10, 8), None),
            ("Communications", date(2026, 10, 12), date(2026, 10, 14), None),
            ("Communications", date(2026, 10, 13), date(2026, 10, 23), None),
            ("Appointments", date(2026, 10, 15), date(2026, 10, 16), "partly_upheld"),
            ("Appointments", date(2026, 10, 20), date(2026, 10, 21), None),
            ("Appointments", date(2026, 10, 21), None, None)]):
        await s.accept("complaint", received, area, **complaint(
            area, received, ack, description=f"Complaint {n} about {area.lower()}.",
            outcome=outcome))
    assert oct_ <= date(2026, 10, 21)
    # A serious one (risk 4 x 4): escalation books a remedial meeting.
    await s.accept("complaint", date(2026, 10, 5), "Clinical treatment", **complaint(
        "Clinical treatment", date(2026, 10, 5), date(2026, 10, 6),
        description="Medication given twice on the ward.",
        risk={"consequence": 4, "likelihood": 4}))
    for n, safety in enumerate([True, True, False]):
        await s.accept("gp_alert", date(2026, 10, 7 + n), "Admissions, discharges and transfers",
                       raised_on=f"2026-10-0{7 + n}", raised_by_practice="Y01234",
                       theme_area="Admissions, discharges and transfers",
                       patient_safety=safety, description="Discharge letter missing.")
    await s.accept("online_review", date(2026, 10, 9), "online review: nhs_website",
                   source="nhs_website", posted_on="2026-10-09", rating=2, title="Long wait",
                   text="Waited four hours in outpatients.", response_status="awaiting_response")
    await s.accept("online_review", date(2026, 10, 11), "online review: care_opinion",
                   source="care_opinion", posted_on="2026-10-11", rating=5,
                   text="Kind staff on the ward.", response_status="responded")
    await s.accept("survey_result", date(2026, 9, 1), "survey: Adult Inpatient Survey",
                   survey="Adult Inpatient Survey", published_on="2026-09-01",
                   question="Were you given enough privacy?", score=8.7, national_score=8.9,
                   comparison="about_the_same")
    await s.accept("prom_score", date(2026, 8, 1), "prom: Oxford Hip Score",
                   measure="Oxford Hip Score", period="2026-08", score=21.4, national_score=22.1,
                   comparison="worse")
    await s.accept("insight_visit", date(2026, 10, 14), "visit: Ward 7",
                   visit_type="enter_and_view", visited_on="2026-10-14", service="Ward 7",
                   rating="requires_improvement", findings="Call bells went unanswered.",
                   recommendations="Answer call bells within five minutes.")
    await s.accept("service_change_notice", date(2026, 10, 16), "service change: Minor injuries",
                   notified_on="2026-10-16", service="Minor injuries", change="Closing at night.",
                   effective_from="2027-01-04", engagement_plan=True, eia_done=False,
                   qia_done=True, consultation_start="2026-10-20",
                   consultation_end="2026-12-01", informed=["patients"])
    await s.accept("engagement_feedback", date(2026, 10, 22), "Parking",
                   met_on="2026-10-22", group="Riverside PPG", topic="Parking",
                   summary="Members asked for more disabled bays.")
    # Equality and Quality Account progress returns: WRES in July then October (the later is
    # shown), EDS in September, a Quality Account priority in October; an AIS return for
    # November is after the month (not in October's pack), so AIS has none yet.
    for standard, period, status, fig, summary, priority in [
            ("wres", "2026-07", "on_track", 1.61, "Shortlisting ratio 1.61.", None),
            ("wres", "2026-10", "at_risk", 1.42, "Shortlisting ratio 1.42; mentoring begun.",
             None),
            ("eds", "2026-09", "completed", 2.0, "EDS 2022 domain 1 graded achieving.", None),
            ("ais", "2026-11", "on_track", 75.0, "Needs flagged for three in four.", None),
            ("quality_account_priority", "2026-10", "off_track", 61.5,
             "Screening within one hour in 61.5% of cases.", "Sepsis screening")]:
        await s.accept("equality_return", date.fromisoformat(f"{period}-01"),
                       f"equality return: {standard}", standard=standard, period=period,
                       status=status, figure=fig, summary=summary,
                       **({"priority": priority} if priority else {}))
    # The serious complaint's meeting is held; the outcome agrees two actions, one completed.
    async with s.escalation_client() as client:
        meetings = (await client.get("/v1/meetings", params={"ods_code": ODS})).json()
        assert len(meetings) == 1, meetings
        s.esc_clock[0] = datetime(2026, 10, 19, 12, 0, tzinfo=UTC)  # type: ignore[attr-defined]
        r = await client.post(f"/v1/meetings/{meetings[0]['meeting_id']}/outcome", json={
            "outcome": "The trust will audit double dosing on every ward.",
            "actions": [{"description": "Audit medication charts on all wards",
                         "owner": "Chief pharmacist", "due_on": "2026-10-28"},
                        {"description": "Retrain ward staff on double checks",
                         "owner": "Director of nursing", "due_on": "2026-12-15"}]})
        assert r.status_code == 201, r.text
        actions = (await client.get("/v1/actions", params={"ods_code": ODS})).json()
        audit = next(a for a in actions if a["description"].startswith("Audit"))
        s.esc_clock[0] = datetime(2026, 10, 27, 12, 0, tzinfo=UTC)  # type: ignore[attr-defined]
        r = await client.post(f"/v1/actions/{audit['action_id']}/complete",
                              json={"evidence": "Audit report of 26 October (all wards)."})
        assert r.status_code == 200, r.text


def pdf_text(pdf: bytes) -> str:
    out = subprocess.run(["pdftotext", "-raw", "-", "-"], input=pdf, capture_output=True,
                         check=True)
    return " ".join(out.stdout.decode().split())


def png_of_page(pdf: bytes, name: str, page: int = 1) -> Path:
    """Page ``page`` of the PDF as PNG under var/test-artefacts/reports/ (to be looked at)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    source = ARTEFACTS / f"{name}.pdf"
    source.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", str(page), "-l", str(page),
                    "-singlefile", str(source), str(ARTEFACTS / name)], check=True)
    return ARTEFACTS / f"{name}.png"


def csv_tables(data: bytes) -> dict[str, list[dict[str, str]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n.removesuffix(".csv"): list(csv.DictReader(io.StringIO(z.read(n).decode())))
                for n in z.namelist()}


async def files(s: Stack, report_id: uuid.UUID) -> dict[str, bytes]:
    row = await s.pool.fetchrow("SELECT pdf, html, csv_zip, xlsx FROM monitor.reports"
                                " WHERE report_id = $1", report_id)
    return {"pdf": bytes(row["pdf"]), "html": row["html"].encode(),
            "csv": bytes(row["csv_zip"]), "xlsx": bytes(row["xlsx"])}


@needs_poppler
async def test_the_cqrm_pack_shows_the_months_figures(stack: Stack) -> None:
    stored = await stack.reports.generate(stack.pool, "cqrm_pack", ODS, MONTH,
                                          actor="tests", reason="test")
    assert (stored.version, stored.created) == (1, True)
    out = await files(stack, stored.report_id)
    png = png_of_page(out["pdf"], "cqrm-pack-page-1")
    assert png.stat().st_size > 10_000
    text = pdf_text(out["pdf"])
    assert "CQRM pack: Riverside Teaching Hospitals NHS Trust (RPT), October 2026" in text
    assert "version 1" in text
    # Complaints by KO41a subject area: received, acknowledged in time, late, responded, upheld.
    assert "Communications 4 3 1 0 1" in text
    assert "Appointments 3 2 1 0 1" in text
    assert "All subject areas 8 6 2 0 2" in text
    assert "GP alerts by theme" in text and "Admissions, discharges and transfers 3 2" in text
    # The meeting was held, with its outcome; the plan: one completed with evidence, one on track.
    assert "The trust will audit double dosing on every ward." in text
    assert "1 on track, 0 overdue, 1 completed with evidence." in text
    assert "Audit report of 26 October (all wards)." in text
    # Visits with recommendations; the service change's missing EIA.
    assert "Answer call bells within five minutes." in text
    assert "Minor injuries" in text and "Closing at night." in text
    assert "Riverside PPG" in text
    assert "Adult Inpatient Survey" in text and "about the same" in text
    # The latest return of each standard up to October: WRES October's (not July's), EDS
    # September's, the Quality Account priority; no AIS (November's is after the month).
    assert ("3 progress return(s), the latest of each standard and Quality Account priority"
            " up to October 2026: 0 on track, 1 at risk, 1 off track, 1 completed.") in text
    assert "No return yet on: Accessible Information Standard." in text
    assert "Shortlisting ratio 1.42; mentoring begun." in text
    assert "Shortlisting ratio 1.61" not in text and "three in four" not in text
    assert "Sepsis screening 2026-10 off track 61.5" in text
    # FFT inpatient, October: 60+10 of 935 answers poor or very poor = 7.5%... as Making Data
    # Count reads it (the SPC table), from the same figures as the CSV.
    tables = csv_tables(out["csv"])
    fft = next(r for r in tables["measures"] if r["Measure"] == "fft negative")
    poor = 20 + (13 % 3) + 30 + 10
    assert fft["Latest"] == f"{100 * poor / (600 + 250 + 40 + poor + 5):.1f}%"
    assert fft["Latest"] in text
    returns = [(r["Standard"], r["Priority"], r["Period"], r["Status"], r["Figure"])
               for r in tables["equality_returns"]]
    assert returns == [("Workforce Race Equality Standard", "", "2026-10", "at risk", "1.42"),
                       ("Equality Delivery System", "", "2026-09", "completed", "2"),
                       ("Quality Account priority", "Sepsis screening", "2026-10", "off track",
                        "61.5")]
    comp = {r["Subject area"]: r for r in tables["complaints"]}
    assert comp["Communications"]["Received"] == "4"
    assert comp["All subject areas"]["Upheld or partly upheld"] == "2"
    concerns = tables["concerns"]
    assert {r["Severity"] for r in concerns} >= {"serious", "moderate"}
    wb = load_workbook(io.BytesIO(out["xlsx"]))
    rows = list(wb["complaints"].iter_rows(values_only=True))
    assert rows[0][0] == "Subject area" and ("Communications", 4, 3, 1, 0, 1) in rows
    assert b"<h2>Complaints by KO41a subject area</h2>" in out["html"]


@needs_poppler
async def test_the_quality_and_performance_report_compares_providers(stack: Stack) -> None:
    stored = await stack.reports.generate(stack.pool, "quality_performance", "all", "2026-Q4",
                                          actor="tests", reason="test")
    out = await files(stack, stored.report_id)
    png_of_page(out["pdf"], "quality-performance-page-1")
    text = pdf_text(out["pdf"])
    assert "Quality and Performance report, quarter 4 of 2026 (October to December 2026)" in text
    assert "6 provider(s) with measures, feedback or concerns" in text
    tables = csv_tables(out["csv"])
    funnel = {r["Provider"]: r for r in tables["funnel"]}
    assert len(funnel) == 6 and {r["Setting"] for r in funnel.values()} == {"inpatient"}
    rpt = funnel["Riverside Teaching Hospitals NHS Trust (RPT)"]
    assert (rpt["Responses"], rpt["% negative"]) == ("956", "6.4%")
    assert "Riverside Teaching Hospitals NHS Trust (RPT) 956 6.4%" in text
    themes = {(r["Kind"], r["Theme"]): r["Items"] for r in tables["by_provider_theme"]
              if r["Provider"].endswith("(RPT)")}
    assert themes[("complaints", "Communications")] == "4"
    assert themes[("GP alerts", "Admissions, discharges and transfers")] == "3"
    assert themes[("visits", "visit: Ward 7")] == "1"
    changes = {r["Provider"]: r for r in tables["changes"]}["Riverside Teaching Hospitals NHS"
                                                            " Trust (RPT)"]
    assert (changes["Complaints"], changes["Complaints last quarter"]) == ("8", "0")
    summary = [r for r in tables["summary"] if r["Provider"].endswith("(RPT)")]
    assert {(r["Measure"], r["Latest"]) for r in summary} >= {("fft negative", "6.4%")}
    assert "The watch list of low concerns" in text and "Funnel plots" in text
    rows = list(load_workbook(io.BytesIO(out["xlsx"]))["funnel"].iter_rows(values_only=True))
    assert ("inpatient", MONTH, "Riverside Teaching Hospitals NHS Trust (RPT)", 956) in \
        [r[:4] for r in rows]


@needs_poppler
async def test_you_said_we_did_is_plain_and_suppresses_small_numbers(stack: Stack) -> None:
    stored = await stack.reports.generate(stack.pool, "you_said_we_did", ODS, "2026-Q4",
                                          actor="tests", reason="test")
    out = await files(stack, stored.report_id)
    png_of_page(out["pdf"], "you-said-we-did-page-1")
    text = pdf_text(out["pdf"])
    said = {(r["Theme"], r["How you told us"]): r["Number of times"]
            for r in csv_tables(out["csv"])["you_said"]}
    assert said[("Care in inpatient", "Friends and Family Test comments")] == "6"
    assert said[("Communications", "complaints")] == "fewer than 5"
    assert said[("Parking", "patient groups and forums")] == "fewer than 5"
    assert "Care in inpatient Friends and Family Test comments 6" in text
    assert ("We asked Riverside Teaching Hospitals NHS Trust to: Audit medication charts on all"
            " wards.") in text
    # Never an owner, the evidence of completion, a comment or a count of 1-4.
    for private in ("Chief pharmacist", "Audit report of 26 October", "noisy at night",
                    "Waited four hours"):
        assert private not in text and private.encode() not in out["html"]
    assert not any(v in {"1", "2", "3", "4"} for row in csv_tables(out["csv"])["you_said"]
                   for v in row.values())


async def test_a_rerun_after_late_data_is_version_2_and_version_1_is_kept(stack: Stack) -> None:
    first = await stack.reports.generate(stack.pool, "cqrm_pack", ODS, MONTH,
                                         actor="tests", reason="first")
    again = await stack.reports.generate(stack.pool, "cqrm_pack", ODS, MONTH,
                                         actor="tests", reason="same data")
    assert (again.version, again.created) == (first.version, False)
    await stack.accept("complaint", date(2026, 10, 30), "Communications", **complaint(
        "Communications", date(2026, 10, 30), date(2026, 11, 2),
        description="A late-arriving complaint."))
    late = await stack.reports.generate(stack.pool, "cqrm_pack", ODS, MONTH,
                                        actor="tests", reason="late data")
    assert (late.version, late.created) == (first.version + 1, True)
    old = csv_tables((await files(stack, first.report_id))["csv"])["complaints"]
    new = csv_tables((await files(stack, late.report_id))["csv"])["complaints"]
    assert next(r for r in old if r["Subject area"] == "Communications")["Received"] == "4"
    assert next(r for r in new if r["Subject area"] == "Communications")["Received"] == "5"
    with pytest.raises(asyncpg.RaiseError, match="keeps every version"):
        await stack.pool.execute("UPDATE monitor.reports SET title = 'x' WHERE report_id = $1",
                                 first.report_id)


async def test_the_cli_makes_lists_and_writes_reports_by_role(stack: Stack,
                                                             tmp_path: Path) -> None:
    env = {"CAREWATCH_REPORTS_ESCALATION_URL": f"http://127.0.0.1:{stack.escalation.http.port}",
           "CAREWATCH_REPORTS_TOKEN": stack.tokens["service"],
           "CAREWATCH_COMMISSIONER_NAME": "NHS Riverside ICB"}
    args = ("reports", "generate", "--kind", "cqrm", "--provider", ODS, "--period", MONTH,
            "--reason", "committee asked", "--json")
    code, out = await carewatch(stack.settings, *args,
                                env={**env, "CAREWATCH_TOKEN": stack.tokens["lay"]})
    assert code == 3 and "holds none of" in out, out
    code, out = await carewatch(stack.settings, *args,
                                env={**env, "CAREWATCH_TOKEN": stack.tokens["lead"]})
    assert code == 0, out
    made = json.loads(out)
    assert made["scope"] == ODS and made["version"] >= 1
    code, out = await carewatch(stack.settings, "reports", "list", "--kind", "cqrm", "--json",
                                env={**env, "CAREWATCH_TOKEN": stack.tokens["lay"]})
    assert code == 0 and made["report_id"] in out, out
    target = tmp_path / "pack.xlsx"
    get = ("reports", "get", "--kind", "cqrm", "--provider", ODS, "--period", MONTH,
           "--format", "xlsx", "--out", str(target))
    code, out = await carewatch(stack.settings, *get,
                                env={**env, "CAREWATCH_TOKEN": stack.tokens["other_provider"]})
    assert code == 1 and "no such report" in out and not target.exists(), out
    code, out = await carewatch(stack.settings, *get,
                                env={**env, "CAREWATCH_TOKEN": stack.tokens["lay"]})
    assert code == 0, out
    assert "complaints" in load_workbook(target).sheetnames


# -- no personal data in any output ------------------------------------------------------------
CORPUS = Path(__file__).resolve().parents[1] / "unit" / "redaction_corpus.jsonl"
PII_LABELS = {"[NHS NUMBER]", "[PHONE]", "[EMAIL]"}
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
NUMBER = re.compile(r"\+?\d[\d \-.()]{8,}\d")


def planted() -> list[tuple[str, list[str]]]:
    """The corpus's texts holding NHS numbers, phone numbers and e-mail addresses, each with
    the values it holds (as written)."""
    out = []
    for line in CORPUS.read_text().splitlines():
        row = json.loads(line)
        if not row["expect"] or not set(row["expect"]) <= PII_LABELS:
            continue
        values = EMAIL.findall(row["text"]) + [
            m for m in NUMBER.findall(row["text"]) if len(re.sub(r"\D", "", m)) >= 10]
        if values:
            out.append((row["text"], values))
    return out


def leaks(values: list[str], text: str) -> list[str]:
    """The values found in ``text``: numbers in any spacing, e-mails in any case."""
    found = []
    for v in values:
        if "@" in v:
            if v.lower() in text.lower():
                found.append(v)
            continue
        digits = re.sub(r"\D", "", v)
        if re.search(r"[^0-9]{0,3}".join(digits), text):
            found.append(v)
    return found


def every_text(out: dict[str, bytes]) -> dict[str, str]:
    """Each output as text: the PDF's extracted text, the HTML, every CSV, every XLSX cell."""
    with zipfile.ZipFile(io.BytesIO(out["csv"])) as z:
        csvs = "\n".join(z.read(n).decode() for n in z.namelist())
    wb = load_workbook(io.BytesIO(out["xlsx"]))
    cells = "\n".join(str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True)
                      for v in row if v is not None)
    return {"pdf": pdf_text(out["pdf"]), "html": html.unescape(out["html"].decode()),
            "csv": csvs, "xlsx": cells}


@needs_poppler
async def test_no_personal_data_reaches_any_report(stack: Stack) -> None:
    """The corpus's NHS numbers, phones and e-mails planted in every free-text field (as if a
    feed had slipped them past intake) and in escalation's texts: none is in any output."""
    corpus = planted()
    assert len(corpus) >= 60
    values = [v for _, vs in corpus for v in vs]
    texts = iter(t for t, _ in corpus * 3)

    def pii(prefix: str = "") -> str:
        return f"{prefix}{next(texts)} {next(texts)}"

    rpx = ProviderRef(ods_code="RPX", name="Planted Data NHS Trust", provider_type="acute",
                      quality_contact_email="q@rpx.example")
    accept = stack.accept_for
    d = date(2026, 10, 12)
    await accept(rpx, "complaint", d, "Communications", **complaint(
        "Communications", d, d, description=pii(), risk={"consequence": 5, "likelihood": 4}))
    await accept(rpx, "compliment", d, "x", received_on=d.isoformat(), service=pii(),
                 description=pii())
    await accept(rpx, "fft_response", d, "fft: inpatient", responded_on=d.isoformat(),
                 setting="inpatient", answer="very_poor", comment=pii())
    await accept(rpx, "online_review", d, "online review: nhs_website", source="nhs_website",
                 posted_on=d.isoformat(), rating=1, title=pii(), text=pii())
    survey = pii()
    await accept(rpx, "survey_result", d, f"survey: {survey}", survey=survey,
                 published_on=d.isoformat(), question=pii(), score=5.0, national_score=6.0,
                 comparison="worse")
    measure = pii()
    await accept(rpx, "prom_score", d, f"prom: {measure}", measure=measure, period=MONTH,
                 score=1.0, national_score=2.0, comparison="worse")
    await accept(rpx, "gp_alert", d, "Patient care", raised_on=d.isoformat(),
                 raised_by_practice="Y01234", theme_area="Patient care", patient_safety=True,
                 description=pii())
    service = pii()
    await accept(rpx, "insight_visit", d, f"visit: {service}", visit_type="insight_visit",
                 visited_on=d.isoformat(), service=service, rating="inadequate",
                 findings=pii(), recommendations=pii())
    changed = pii()
    await accept(rpx, "service_change_notice", d, f"service change: {changed}",
                 notified_on=d.isoformat(), service=changed, change=pii(),
                 effective_from="2027-02-01", engagement_plan=False, eia_done=False,
                 qia_done=False, informed=[])
    topic = pii()
    await accept(rpx, "engagement_feedback", d, topic, met_on=d.isoformat(), group=pii(),
                 topic=topic, summary=pii())
    await accept(rpx, "equality_return", date(2026, 10, 1),
                 "equality return: quality_account_priority",
                 standard="quality_account_priority", period=MONTH, status="at_risk",
                 figure=40.0, priority=pii(), summary=pii())
    await accept(rpx, "safeguarding_concern", d, "safeguarding: neglect",
                 raised_on=d.isoformat(), category="neglect", about="adult", description=pii())
    # escalation's own texts: the meeting's outcome, the actions, their owners and evidence.
    async with stack.escalation_client() as client:
        meetings = (await client.get("/v1/meetings", params={"ods_code": "RPX"})).json()
        assert meetings, "the serious complaint books a meeting"
        stack.esc_clock[0] = datetime(2026, 10, 30, 15, 0, tzinfo=UTC)  # type: ignore[attr-defined]
        r = await client.post(f"/v1/meetings/{meetings[0]['meeting_id']}/outcome", json={
            "outcome": pii(), "actions": [
                {"description": pii(), "owner": next(texts)[:200], "due_on": "2026-10-31"},
                {"description": pii(), "owner": next(texts)[:200], "due_on": "2026-12-31"}]})
        assert r.status_code == 201, r.text
        action = (await client.get("/v1/actions", params={"ods_code": "RPX"})).json()[0]
        r = await client.post(f"/v1/actions/{action['action_id']}/complete",
                              json={"evidence": pii()})
        assert r.status_code == 200, r.text
    planted_values = {v for v in values if leaks([v], json.dumps(
        await stack.pool.fetchval("SELECT json_agg(content) FROM monitor.feedback"
                                  " WHERE ods_code = 'RPX'")))}
    assert len(planted_values) >= 20, "the data really holds the planted values"
    for kind, scope, period in (("cqrm_pack", "RPX", MONTH), ("you_said_we_did", "RPX",
                                                               "2026-Q4"),
                                ("quality_performance", "all", "2026-Q4")):
        stored = await stack.reports.generate(stack.pool, kind, scope, period, actor="tests",
                                              reason="personal data check")
        out = await files(stack, stored.report_id)
        png_of_page(out["pdf"], f"planted-{kind}-page-1")
        outputs = every_text(out)
        outputs["stored document"] = await stack.pool.fetchval(
            "SELECT document::text FROM monitor.reports WHERE report_id = $1", stored.report_id)
        for name, text in outputs.items():
            assert not leaks(values, text), f"{kind} {name}: {leaks(values, text)[:3]}"
        assert "[NHS NUMBER]" in outputs["csv"] or kind == "quality_performance" or \
            "[PHONE]" in outputs["csv"] or "[EMAIL]" in outputs["csv"]


# -- the durable schedule, and the e-mail through notification ---------------------------------
async def test_the_schedule_makes_the_months_packs_and_notification_mails_them(
        stack: Stack, server_urls: Any) -> None:
    """On the first working day of November 2026 (the 1st is a Sunday: the 2nd), the durable
    schedule makes October's pack of every provider that has none yet; each new version goes
    through quality-monitor's outbox and the real broker to notification, which e-mails it
    with its PDF and XLSX attached. The next run is due on the first working day of December."""
    settings = stack.settings.model_copy(update={
        "amqp_url": server_urls.amqp, "broker_users": {"*": "guest"},
        "smtp_host": "127.0.0.1", "smtp_port": free_port(), "inbound_smtp_port": None,
        "quality_team_email": "team.reports@icb.example", "outbox_poll_interval": 0.2,
        "notification_backoff_base": 0.05, "notification_backoff_cap": 0.2,
        "graceful_timeout": 5})
    clock = [datetime(2026, 10, 15, 12, 0, tzinfo=UTC)]
    report_settings = ReportSettings(
        escalation_url=f"http://127.0.0.1:{stack.escalation.http.port}",
        token=stack.tokens["service"])
    runtime, monitor = build_monitor(settings, clock=lambda: clock[0],
                                     report_settings=report_settings)
    notification = build_notification(settings, clock=lambda: clock[0])
    async with stack.pool.acquire() as conn:
        await migrate(conn, notification.schema, notification.migrations)
    controller, inbox = smtp_server(settings.smtp_port)
    await runtime.start()
    await notification.start()
    try:
        await monitor.run_due_jobs(runtime.pool)  # the first run puts the jobs in place
        due = await stack.pool.fetchval(
            "SELECT due_at FROM monitor.schedule WHERE job = 'monthly_reports'")
        assert due == datetime(2026, 11, 2, 7, 0, tzinfo=LONDON)
        before = {r["scope"] for r in await stack.pool.fetch(
            "SELECT DISTINCT scope FROM monitor.reports WHERE kind = 'cqrm_pack'"
            " AND period = $1", MONTH)}
        clock[0] = datetime(2026, 11, 2, 7, 1, tzinfo=UTC)
        assert "monthly_reports" in await monitor.run_due_jobs(runtime.pool)
        assert "monthly_reports" not in await monitor.run_due_jobs(runtime.pool)  # once
        row = await stack.pool.fetchrow(
            "SELECT due_at, last_result FROM monitor.schedule WHERE job = 'monthly_reports'")
        assert row["due_at"] == datetime(2026, 12, 1, 7, 0, tzinfo=LONDON)
        made = {r["scope"]: r["version"] for r in await stack.pool.fetch(
            "SELECT scope, max(version) AS version FROM monitor.reports WHERE kind = 'cqrm_pack'"
            " AND period = $1 GROUP BY scope", MONTH)}
        new = set(made) - before
        assert {"RPA", "RPB", "RPC", "RPD", "RPE"} <= new
        assert row["last_result"]["made"] == len(new)
        assert row["last_result"]["already_kept"] == len(before)
        mails = await eventually(
            lambda: _async(inbox.to("team.reports@icb.example")
                           if len(inbox.to("team.reports@icb.example")) >= len(new) else None),
            what="an e-mail per new pack")
        rpa = next(m for m in mails if "Peer Trust RPA (RPA), October 2026" in m["Subject"])
        files = {a.get_filename(): a.get_payload(decode=True) for a in rpa.iter_attachments()}
        assert set(files) == {"cqrm_pack-RPA-2026-10-v1.pdf", "cqrm_pack-RPA-2026-10-v1.xlsx"}
        assert "CQRM pack: Peer Trust RPA (RPA), October 2026" in \
            pdf_text(files["cqrm_pack-RPA-2026-10-v1.pdf"])
        assert "complaints" in load_workbook(
            io.BytesIO(files["cqrm_pack-RPA-2026-10-v1.xlsx"])).sheetnames
    finally:
        await notification.stop()
        await runtime.stop()
        controller.stop()


async def _async(value: Any) -> Any:
    return value


async def test_the_http_api_lists_serves_and_makes_reports_by_role(stack: Stack) -> None:
    runtime, _ = build_monitor(stack.settings, clock=lambda: stack.clock[0],
                               report_settings=ReportSettings(
                                   escalation_url=f"http://127.0.0.1:{stack.escalation.http.port}",
                                   token=stack.tokens["service"]))
    runtime._pool = stack.pool
    rpt_user = await token_for(stack.pool, f"rpt.{uuid.uuid4().hex[:6]}@provider.example",
                               identity.PROVIDER_USER, ods_codes=(ODS,))
    transport = httpx.ASGITransport(app=runtime.http.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://monitor.test") as client:
        assert (await client.get("/v1/reports")).status_code == 401
        body = {"kind": "cqrm_pack", "period": MONTH, "provider": ODS, "reason": "board"}
        r = await client.post("/v1/reports", json=body, headers=bearer(stack.tokens["lay"]))
        assert r.status_code == 403
        r = await client.post("/v1/reports", json=body, headers=bearer(stack.tokens["lead"]))
        assert r.status_code == 201, r.text
        made = r.json()
        listed = (await client.get("/v1/reports", params={"kind": "cqrm_pack"},
                                   headers=bearer(rpt_user))).json()
        assert listed and {x["scope"] for x in listed} == {ODS}
        page = await client.get(f"/v1/reports/{made['report_id']}/html", headers=bearer(rpt_user))
        assert page.status_code == 200 and "default-src 'none'" in \
            page.headers["content-security-policy"]
        assert "<h2>Complaints by KO41a subject area</h2>" in page.text
        pdf = await client.get(f"/v1/reports/{made['report_id']}/pdf",
                               headers=bearer(stack.tokens["lay"]))
        assert pdf.content.startswith(b"%PDF") and "attachment" in \
            pdf.headers["content-disposition"]
        other = await client.get(f"/v1/reports/{made['report_id']}/pdf",
                                 headers=bearer(stack.tokens["other_provider"]))
        assert other.status_code == 404
