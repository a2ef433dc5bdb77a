"""Making reports: load (quality-monitor's tables, escalation's API), build (pure), redact
again, render and keep as the next version; announce each new version through the outbox
(``report.published.v1``: notification e-mails the distribution list)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from services.quality_monitor.config import MonitorRules
from services.quality_monitor.reports import archive, cqrm, public, quarterly, sources
from services.quality_monitor.reports.config import ReportSettings
from services.quality_monitor.reports.document import Chart, Report, sanitised
from services.quality_monitor.reports.periods import Period, month, quarter
from services.quality_monitor.series import ALL_SETTINGS
from services.quality_monitor.store import provider_ref
from services.quality_monitor.summary import load as load_summary
from shared.clock import Clock
from shared.events import ReportAttachment, ReportPublished
from shared.outbox import Outbox

log = logging.getLogger(__name__)
KINDS = ("cqrm_pack", "quality_performance", "you_said_we_did")
OutboxFactory = Callable[[asyncpg.Connection], Outbox]


def period_of(kind: str, label: str) -> Period:
    return month(label) if kind == "cqrm_pack" else quarter(label)


@dataclass
class Reports:
    rules: MonitorRules
    settings: ReportSettings
    organisation: str
    clock: Clock
    outbox_for: OutboxFactory | None = None

    @property
    def escalation(self) -> sources.EscalationReader:
        return sources.EscalationReader(self.settings.escalation_url, self.settings.token)

    # -- building --------------------------------------------------------------------------
    async def cqrm_report(self, conn: asyncpg.Connection, ods_code: str, p: Period,
                          esc: sources.EscalationView | None = None,
                          name: str | None = None) -> Report:
        names = {ods_code: name} if name else await sources.provider_names(conn)
        data = await sources.monitor_data(conn, self.rules, ods_code, p, names.get(ods_code))
        esc = esc.of(ods_code) if esc is not None else await self.escalation.view(ods_code)
        charts: list[Chart] = []
        for row in data.summary:
            if row.metric in ("fft_negative", "complaints") and len(charts) < 6:
                where = "" if row.setting == ALL_SETTINGS else f", {row.setting}"
                chart = await sources.spc_chart(conn, self.rules, p, ods_code, row.metric,
                                                row.setting, f"spc_{row.metric}_{row.setting}")
                if chart is not None:
                    charts.append(Chart(chart.name, chart.svg,
                                        f"XmR chart of {row.metric.replace('_', ' ')}{where}"
                                        f" to {row.period}: latest {row.value},"
                                        f" {row.variation_words}."))
        return cqrm.cqrm_pack(data, esc, p, charts)

    async def quarterly_report(self, conn: asyncpg.Connection, p: Period,
                               esc: sources.EscalationView | None = None) -> Report:
        kinds = list(quarterly.COUNTED)
        prev = p.previous()
        # The funnels of the quarter's latest month that has any (a month's FFT returns
        # arrive in the month after it).
        last = await conn.fetchval("SELECT max(period) FROM monitor.funnel_results"
                                   " WHERE period = ANY($1::text[])", p.months) or p.months[-1]
        funnels = [dict(r) for r in await conn.fetch(
            "SELECT * FROM monitor.funnel_results WHERE period = $1 ORDER BY setting, ods_code",
            last)]
        data = quarterly.QuarterData(
            names=await sources.provider_names(conn),
            summary=await load_summary(conn, self.rules,
                                               sources.report_clock(self.rules, p)),
            feedback=await sources.feedback_between(conn, None, p.start, p.end, kinds),
            previous=await sources.feedback_between(conn, None, prev.start, prev.end, kinds),
            concerns=await sources.concerns_in(conn, None, p),
            previous_concerns=await sources.concerns_in(conn, None, prev),
            funnels=funnels)
        charts = []
        for setting in sorted({f["setting"] for f in funnels}):
            chart = await sources.funnel_chart(conn, self.rules, p, last, setting,
                                               f"funnel_{setting}")
            if chart is not None:
                charts.append(Chart(chart.name, chart.svg, f"Funnel plot of FFT % negative,"
                                    f" {setting.replace('_', ' ')}, {last}: each provider"
                                    " against the 95% and 99.8% limits."))
        esc = esc if esc is not None else await self.escalation.view()
        return quarterly.quality_performance(data, esc, p, charts)

    async def public_report(self, conn: asyncpg.Connection, ods_code: str, p: Period,
                            esc: sources.EscalationView | None = None) -> Report:
        names = await sources.provider_names(conn)
        esc = esc.of(ods_code) if esc is not None else await self.escalation.view(ods_code)
        themes = {str(r["concern_id"]): r["theme"] for r in await conn.fetch(
            "SELECT concern_id, theme FROM monitor.concerns WHERE ods_code = $1", ods_code)}
        data = public.PublicData(
            ods_code, names.get(ods_code, ods_code),
            await sources.feedback_between(conn, ods_code, p.start, p.end, list(public.SOURCES)),
            themes)
        return public.you_said_we_did(data, esc, p)

    async def build(self, conn: asyncpg.Connection, kind: str, scope: str,
                    p: Period, esc: sources.EscalationView | None = None) -> Report:
        if kind == "cqrm_pack":
            return await self.cqrm_report(conn, scope, p, esc)
        if kind == "quality_performance":
            return await self.quarterly_report(conn, p, esc)
        if kind == "you_said_we_did":
            return await self.public_report(conn, scope, p, esc)
        raise ValueError(f"unknown report kind {kind!r}: one of {', '.join(KINDS)}")

    # -- keeping ---------------------------------------------------------------------------
    async def generate(self, pool: asyncpg.Pool, kind: str, scope: str, label: str, *,
                       actor: str, reason: str, only_if_new: bool = False) -> archive.Stored:
        """Build, redact, render and keep one report (the next version, unless the latest
        says the same); a new version is announced through the outbox."""
        p = period_of(kind, label)
        async with pool.acquire() as conn:
            report = sanitised(await self.build(conn, kind, scope, p))
        return await self.keep(pool, report, actor=actor, reason=reason,
                               only_if_new=only_if_new)

    async def keep(self, pool: asyncpg.Pool, report: Report, *, actor: str, reason: str,
                   only_if_new: bool = False) -> archive.Stored:
        async with pool.acquire() as conn, conn.transaction():
            stored = await archive.keep(conn, report, at=self.clock(), actor=actor,
                                        reason=reason, organisation=self.organisation,
                                        only_if_new=only_if_new)
            if stored.created and self.outbox_for is not None:
                await self.outbox_for(conn).add(await self.published(conn, report, stored))
        log.info("report %s %s %s: version %d%s", report.kind, report.scope, report.period,
                 stored.version, "" if stored.created else " (unchanged)")
        return stored

    async def published(self, conn: asyncpg.Connection, report: Report,
                        stored: archive.Stored) -> ReportPublished:
        """The event that announces a new version, with its PDF and XLSX attached."""
        assert stored.rendered is not None
        files = {"pdf": stored.rendered.pdf, "xlsx": stored.rendered.xlsx}
        first = next((s.paragraphs[0] for s in report.sections if s.paragraphs), "")
        return ReportPublished(
            report_id=stored.report_id, kind=report.kind, scope=report.scope,
            period=report.period, version=stored.version, title=report.title, summary=first,
            generated_at=self.clock(),
            provider=None if report.scope == "all" else await provider_ref(conn, report.scope),
            attachments=[ReportAttachment(filename=stored.file_name(fmt),
                                          media_type=archive.FORMATS[fmt],
                                          content_base64=base64.b64encode(body).decode())
                         for fmt, body in files.items()])

    # -- the schedule ----------------------------------------------------------------------
    async def monthly(self, pool: asyncpg.Pool, p: Period) -> dict[str, int]:
        """The CQRM pack of every provider with feedback or a concern in the month (a version
        only where none exists yet: a re-run after late data is made on demand)."""
        return await self._each(pool, "cqrm_pack", p, with_all=False)

    async def quarterly(self, pool: asyncpg.Pool, p: Period) -> dict[str, int]:
        """The Quality & Performance report, and "you said, we did" for every provider."""
        return await self._each(pool, "you_said_we_did", p, with_all=True)

    async def _each(self, pool: asyncpg.Pool, kind: str, p: Period,
                    with_all: bool) -> dict[str, int]:
        async with pool.acquire() as conn:
            providers = await sources.reported_providers(conn, p)
        esc = await self.escalation.view()
        jobs = [(kind, ods) for ods in providers]
        if with_all:
            jobs.insert(0, ("quality_performance", "all"))
        made = kept = 0
        for k, scope in jobs:
            async with pool.acquire() as conn:
                report = sanitised(await self.build(conn, k, scope, p, esc))
            stored = await self.keep(pool, report, actor="quality-monitor (schedule)",
                                     reason="scheduled: first working day", only_if_new=True)
            made, kept = made + stored.created, kept + (not stored.created)
        return {"made": made, "already_kept": kept}
