"""What the reports read: quality-monitor's own tables, and escalation's HTTP API (meetings,
outcomes, action plans, the ladder, the watch list, visits planned), called with the
service's own token. No other service's tables are read.

When escalation's API is not configured or does not answer, the reports say so in the
sections that need it (never a silent gap): :class:`EscalationView` carries the reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg
import httpx

from services.quality_monitor.charts import load_funnel, load_spc, render
from services.quality_monitor.config import MonitorRules
from services.quality_monitor.lifecycle import month_close_at
from services.quality_monitor.reports.document import Chart
from services.quality_monitor.reports.periods import LONDON, Period
from services.quality_monitor.summary import Row
from services.quality_monitor.summary import load as load_summary


@dataclass
class EscalationView:
    """Escalation's records of one provider (or of all), as its API answered."""

    available: bool
    reason: str = ""
    meetings: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)
    watch_list: list[dict[str, Any]] = field(default_factory=list)
    concerns: list[dict[str, Any]] = field(default_factory=list)

    def of(self, ods_code: str) -> EscalationView:
        def mine(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rows if r.get("ods_code") == ods_code]
        return EscalationView(self.available, self.reason, mine(self.meetings),
                              mine(self.actions), mine(self.visits), mine(self.watch_list),
                              mine(self.concerns))


class EscalationReader:
    """escalation's read API, as quality-monitor's service account."""

    def __init__(self, base_url: str | None, token: str | None, timeout: float = 20) -> None:
        self.base_url = (base_url or "").rstrip("/")
        self.token = token
        self.timeout = timeout

    async def view(self, ods_code: str | None = None) -> EscalationView:
        if not self.base_url or not self.token:
            return EscalationView(False, "escalation's API is not configured for reports"
                                  " (CAREWATCH_REPORTS_ESCALATION_URL, CAREWATCH_REPORTS_TOKEN)")
        scoped = {"ods_code": ods_code} if ods_code else {}
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout,
                                         headers={"Authorization": f"Bearer {self.token}"}
                                         ) as client:
                async def get(path: str, **params: Any) -> list[dict[str, Any]]:
                    response = await client.get(path, params=params)
                    response.raise_for_status()
                    rows = response.json()
                    assert isinstance(rows, list)
                    return rows
                meetings, actions, visits, watch, concerns = await asyncio.gather(
                    get("/v1/meetings", limit=1000, **scoped),
                    get("/v1/actions", limit=1000, **scoped),
                    get("/v1/visits", **scoped),
                    get("/v1/watch-list", **scoped),
                    get("/v1/concerns", limit=1000))
                for m in meetings:
                    if m.get("status") == "held":
                        full = await client.get(f"/v1/meetings/{m['meeting_id']}")
                        if full.status_code == 200:
                            m["outcome"] = full.json().get("outcome")
        except (httpx.HTTPError, AssertionError) as exc:
            return EscalationView(False, f"escalation's API did not answer: {exc}")
        if ods_code:
            concerns = [c for c in concerns if c.get("ods_code") == ods_code]
        return EscalationView(True, "", meetings, actions, visits, watch, concerns)


def within(value: str | date | datetime | None, p: Period) -> bool:
    """Whether a date or an ISO timestamp falls in the period (London dates)."""
    if value is None:
        return False
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value or " " in value \
            else date.fromisoformat(value)
    day = value.astimezone(LONDON).date() if isinstance(value, datetime) else value
    return p.start <= day < p.end


@dataclass
class MonitorData:
    """One provider's records in quality-monitor's tables, for one period."""

    ods_code: str
    name: str
    feedback: list[dict[str, Any]]  # the period's feedback, any kind
    recent: list[dict[str, Any]]  # surveys, PROMs and visits of the 12 months to the end
    concerns: list[dict[str, Any]]  # open at some time in the period
    summary: list[Row]
    previous_feedback: list[dict[str, Any]] = field(default_factory=list)
    # The latest equality and Quality Account progress return of each standard (and
    # priority) for a month up to the end of the period.
    returns: list[dict[str, Any]] = field(default_factory=list)


async def provider_names(conn: asyncpg.Connection) -> dict[str, str]:
    return {r["ods_code"]: r["provider"]["name"] for r in await conn.fetch(
        "SELECT ods_code, provider FROM monitor.providers ORDER BY ods_code")}


async def reported_providers(conn: asyncpg.Connection, p: Period) -> list[str]:
    """The providers with feedback in the period or a concern open in it."""
    rows = await conn.fetch(
        "SELECT DISTINCT ods_code FROM monitor.feedback WHERE occurred_on >= $1"
        " AND occurred_on < $2 UNION SELECT DISTINCT ods_code FROM monitor.concerns"
        " WHERE raised_at < $2 AND (resolved_at IS NULL OR resolved_at >= $1)"
        " ORDER BY 1", p.start, p.end)
    return [r["ods_code"] for r in rows]


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r) for r in records]


async def feedback_between(conn: asyncpg.Connection, ods_code: str | None, start: date,
                           end: date, kinds: list[str] | None = None) -> list[dict[str, Any]]:
    return _rows(await conn.fetch(
        "SELECT feedback_id, ods_code, kind, theme, occurred_on, content FROM monitor.feedback"
        " WHERE ($1::text IS NULL OR ods_code = $1) AND occurred_on >= $2 AND occurred_on < $3"
        " AND ($4::text[] IS NULL OR kind = ANY($4)) ORDER BY occurred_on, feedback_id",
        ods_code, start, end, kinds))


async def latest_returns(conn: asyncpg.Connection, ods_code: str,
                         p: Period) -> list[dict[str, Any]]:
    """The provider's latest progress return per standard (and Quality Account priority),
    of the period's last month or before it."""
    return _rows(await conn.fetch(
        "SELECT DISTINCT ON (standard, priority) standard, priority, period, status, figure,"
        " summary, feedback_id FROM monitor.equality_returns WHERE ods_code = $1"
        " AND period <= $2 ORDER BY standard, priority, period DESC", ods_code, p.months[-1]))


async def concerns_in(conn: asyncpg.Connection, ods_code: str | None,
                      p: Period) -> list[dict[str, Any]]:
    """The concerns open at some time in the period, or resting on evidence from it (a
    concern raised later from the period's late data is in a re-run of its report)."""
    return _rows(await conn.fetch(
        "SELECT * FROM (SELECT concern_id, ods_code, provider->>'name' AS provider, rule, theme,"
        " severity, status, reason, resolution, jsonb_array_length(evidence) AS evidence_items,"
        " raised_at, resolved_at, (SELECT min((e->>'occurred_on')::date)"
        " FROM jsonb_array_elements(evidence) e) AS first_evidence,"
        " EXISTS (SELECT 1 FROM jsonb_array_elements(evidence) e"
        " WHERE (e->>'occurred_on')::date >= $2 AND (e->>'occurred_on')::date < $3) AS in_period"
        " FROM monitor.concerns WHERE ($1::text IS NULL OR ods_code = $1)) c"
        " WHERE (raised_at < $3::date::timestamptz AND (resolved_at IS NULL"
        " OR resolved_at >= $2::date::timestamptz)) OR in_period"
        " ORDER BY ods_code, raised_at", ods_code, p.start, p.end))


def report_clock(rules: MonitorRules, p: Period) -> datetime:
    """The moment the period's last month closed: measures are read as of then, so a report
    of a past period shows that period's latest points, not today's."""
    return month_close_at(p.months[-1], rules.schedule.month_close_days)


async def monitor_data(conn: asyncpg.Connection, rules: MonitorRules, ods_code: str,
                       p: Period, name: str | None = None) -> MonitorData:
    year_before = date(p.end.year - 1, p.end.month, 1)
    prev = p.previous()
    return MonitorData(
        ods_code=ods_code, name=name or ods_code,
        feedback=await feedback_between(conn, ods_code, p.start, p.end),
        recent=await feedback_between(conn, ods_code, year_before, p.end,
                                      ["survey_result", "prom_score", "insight_visit"]),
        concerns=await concerns_in(conn, ods_code, p),
        summary=await load_summary(conn, rules, report_clock(rules, p), ods_code),
        previous_feedback=await feedback_between(conn, ods_code, prev.start, prev.end,
                                                 ["complaint", "gp_alert", "insight_visit"]),
        returns=await latest_returns(conn, ods_code, p))


async def spc_chart(conn: asyncpg.Connection, rules: MonitorRules, p: Period, ods_code: str,
                    metric: str, setting: str, name: str) -> Chart | None:
    fig = await load_spc(conn, rules, report_clock(rules, p), ods_code, metric, setting,
                         until=p.months[-1])
    if isinstance(fig, str):
        return None
    return Chart(name, render(fig, "svg").decode(), "")


async def funnel_chart(conn: asyncpg.Connection, rules: MonitorRules, p: Period, month: str,
                       setting: str, name: str) -> Chart | None:
    fig = await load_funnel(conn, rules, report_clock(rules, p), setting, month)
    if isinstance(fig, str):
        return None
    return Chart(name, render(fig, "svg").decode(), "")
