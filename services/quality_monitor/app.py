"""quality-monitor: turns accepted feedback into explainable concerns, and ends them.

Consumes: ``feedback.accepted.v1``, ``feedback.accepted_batch.v1`` (a bulk message's items),
``concern.closed.v1``.
Publishes: ``concern.raised.v1``, ``concern.updated.v2``, ``concern.resolved.v1``,
``report.published.v1`` (outbox).
Stores: schema ``monitor`` (feedback, providers, fft_months, equality_returns, concerns,
improvements, funnel_results, schedule; reviews, review_audit and harm_evaluation for the
review of possible serious risks).
Serves: the review of possible serious risks over HTTP (``http.py``).

Each handler loads what the rule needs from the monitor's own tables, calls the pure rule
(``rules``, ``clusters``, ``measure_verdicts`` over ``spc`` and ``funnel``, ``handling``,
``lifecycle``), stores the result and publishes through the outbox. Time-driven work (a
month's close, the daily review, the reports) is recurring jobs of the shared durable
scheduler (``shared.scheduler``, ``monitor.jobs``), claimed with ``FOR UPDATE SKIP LOCKED``,
on the injectable clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from faststream.rabbit import Channel

from services.quality_monitor import clusters, fft, review, rules, store
from services.quality_monitor.config import ClusterRule, MonitorRules, load_rules
from services.quality_monitor.handling import OverThreshold, handling_verdicts, handling_window
from services.quality_monitor.harm.pipeline import Mention, analyser, read_harm
from services.quality_monitor.http import ACCESS, add_review_routes, add_routes
from services.quality_monitor.lifecycle import (
    last_closed_month,
    month_close_at,
    next_daily_review,
    today_in_london,
    visit_resolves,
)
from services.quality_monitor.measure_verdicts import (
    ClearSignal,
    FunnelFigures,
    RaiseSignal,
    funnel_verdicts,
    month_funnel,
    series_verdict,
)
from services.quality_monitor.measures import load_fft_months
from services.quality_monitor.reports import periods
from services.quality_monitor.reports.config import ReportSettings
from services.quality_monitor.reports.http import add_report_routes
from services.quality_monitor.reports.service import Reports
from services.quality_monitor.series import (
    ALL_SETTINGS,
    COUNTED_KINDS,
    METRICS,
    Metric,
    count_series,
    fft_month_series,
    month_range,
    month_start,
    shift_month,
)
from shared.clock import Clock, utc_now
from shared.events import (
    ConcernClosed,
    ConcernRaised,
    ConcernUpdated,
    Event,
    Evidence,
    FeedbackAccepted,
    FeedbackAcceptedBatch,
    ProviderRef,
    Severity,
)
from shared.groupcommit import Batch
from shared.outbox import Outbox
from shared.retry import Backoff
from shared.runtime import BatchEventHandler, ServiceRuntime, subscriptions_of
from shared.scheduler import Again, Scheduler
from shared.scheduler import Job as SchedulerJob
from shared.scheduler import ensure as ensure_job
from shared.settings import Settings
from shared.topology import Subscription, Topology

log = logging.getLogger(__name__)
NAME = "quality_monitor"
OutboxFactory = Callable[[asyncpg.Connection], Outbox]

CLUSTER_RULE = "cluster"
HANDLING_RULE = "complaint_handling"
MONTH_CLOSE = "month_close"
DAILY_REVIEW = "daily_review"
# Reports (reports/): on the first working day of each month and of each quarter.
MONTHLY_REPORTS = "monthly_reports"
QUARTERLY_REPORTS = "quarterly_reports"
# One concern per provider and measure family: SPC (either side), funnel outlier and clusters
# of the family are its signals (see store.raise_signal).
MEASURE_RULE = "measure_signals"
KIND_FAMILY = {"complaint": "complaints", "gp_alert": "GP alerts"}


def cluster_family(kinds: Sequence[str]) -> str | None:
    """The family of a cluster rule's kinds, when they all belong to one (else None: the
    cluster is a concern of its own)."""
    families = {KIND_FAMILY.get(k) for k in kinds}
    return families.pop() if len(families) == 1 else None




class Monitor:
    """The handlers and reviews, with the rules and a clock."""

    def __init__(self, monitor_rules: MonitorRules, clock: Clock = utc_now,
                 outbox_for: OutboxFactory | None = None, reports: Reports | None = None) -> None:
        self.rules = monitor_rules
        self.clock = clock
        self.outbox_for = outbox_for
        self.reports = reports  # None: no scheduled reports (the CLI still makes them)
        self._providers_committed: dict[str, dict[str, Any]] = {}

    # -- consumed events ------------------------------------------------------------------
    async def on_feedback_accepted(self, batch: Batch, fb: FeedbackAccepted,
                                   outbox: Outbox, mentions: list[Mention] | None = None
                                   ) -> None:
        """Record the feedback and run every rule it can trigger: immediate serious risk,
        visit rating, service change, clusters, and for a monthly FFT return its SPC series
        and the funnel of its setting and month."""
        # ``mentions``: the harm pipeline's reading of its free text, when read already (a
        # batch reads each distinct text once: on_feedback_batch).
        conn = batch.conn
        ods = fb.provider.ods_code
        fft = fb.kind == "fft_monthly" and {"setting", "period"} <= fb.content.keys()
        cluster_rules = self.rules.clusters_for(fb.kind, fb.theme)
        keys = [f"cluster:{ods}:{c.name}" for c in sorted(cluster_rules, key=lambda c: c.name)]
        if fft:
            keys += [f"fft:{ods}:{fb.content['setting']}",
                     f"funnel:{fb.content['setting']}:{fb.content['period']}"]
        if mentions is None:
            mentions = await read_harm(rules.free_text(fb))  # off the loop when it is long
        await store.lock(conn, *keys)
        await store.record_feedback(batch, fb)
        await store.record_provider(conn, fb.provider, self._providers_committed)
        for finding in self.item_findings(fb, mentions):
            event = await self.raise_concern(
                conn, outbox, fb.provider, finding.rule, finding.theme, finding.severity,
                finding.reason, finding.figures,
                [Evidence(feedback_id=fb.feedback_id, kind=fb.kind, occurred_on=fb.occurred_on,
                          matched=finding.matched)])
            if finding.review and event is not None:
                await review.request(conn, event.concern_id, self.clock())
        await self.resolve_by_later_item(conn, fb, outbox)
        for cluster_rule in cluster_rules:
            await self.check_cluster(batch, fb, cluster_rule, outbox)
        if fb.kind == "equality_return":
            await store.record_equality_return(conn, fb)
        if fft:
            setting, period = await store.record_fft_month(conn, fb)
            for metric in ("fft_negative", "fft_positive"):
                await self.check_fft_series(batch, fb.provider, METRICS[metric], setting,
                                            outbox)
            await self.check_funnel(batch, setting, period, outbox)

    async def on_feedback_batch(self, batch: Batch, accepted: FeedbackAcceptedBatch,
                                outbox: Outbox) -> None:
        """A bulk message's accepted items, in one event (once, by its id, in the inbox):
        each handled exactly as ``feedback.accepted`` would be, every rule it can trigger
        run (a harm in an FFT comment raises its concern as it would alone), its row
        written with the group commit's others in one statement. A free text repeated in
        the batch (FFT comments often are) is read by the harm pipeline once."""
        readings: dict[str, list[Mention]] = {}
        for fb in accepted.items:
            text = rules.free_text(fb)
            if text not in readings:
                readings[text] = await read_harm(text)
            await self.on_feedback_accepted(batch, fb, outbox, readings[text])

    async def on_concern_closed(self, batch: Batch, closed: ConcernClosed,
                                outbox: Outbox) -> None:
        """The quality team closed the concern on the escalation side: it is resolved."""
        event = await store.resolve(
            batch.conn, closed.concern_id,
            f"closed by escalation ({closed.closed_by}): {closed.reason}", closed.closed_at)
        if event is not None:
            await outbox.add(event)

    # -- rules on one item ----------------------------------------------------------------
    def item_findings(self, fb: FeedbackAccepted,
                      mentions: list[Mention] | None = None) -> list[rules.Finding]:
        findings = [
            rules.immediate_serious_risk(fb, self.rules.immediate.risk_score_threshold,
                                         mentions),
            rules.visit_rating(fb, self.rules.visits),
            rules.service_change(fb, self.rules.service_change),
        ]
        return [f for f in findings if f is not None]

    async def resolve_by_later_item(self, conn: asyncpg.Connection, fb: FeedbackAccepted,
                                    outbox: Outbox) -> None:
        """A later visit rated good or outstanding ends a visit concern on the service; a later
        notice for the service with no failings ends a service-change concern."""
        if fb.kind == "insight_visit" and visit_resolves(str(fb.content.get("rating"))):
            rule, why = rules.VISIT_RULE, f"a later visit on {fb.occurred_on} rated" \
                                          f" {fb.content.get('rating')}"
        elif fb.kind == "service_change_notice" and not rules.service_change_failings(
                fb.content, self.rules.service_change):
            rule, why = rules.SERVICE_CHANGE_RULE, \
                f"a later notice of {fb.occurred_on} has an engagement plan, EIA, QIA, an" \
                " adequate consultation and the bodies informed"
        else:
            return
        theme = fb.theme or fb.kind
        row = await store.open_concern(conn, rules.fingerprint(fb.provider.ods_code, rule, theme))
        if row is not None and all(date.fromisoformat(e["occurred_on"]) <= fb.occurred_on
                                   for e in row["evidence"]):
            await self.resolve_concern(conn, outbox, row, f"resolved: {why}")

    # -- clusters -------------------------------------------------------------------------
    async def check_cluster(self, batch: Batch, fb: FeedbackAccepted,
                            rule: ClusterRule, outbox: Outbox) -> None:
        conn = batch.conn
        days = rule.window_days
        items = await store.theme_items(
            batch, fb.provider.ods_code, rule.kinds, rule.theme,
            fb.occurred_on - timedelta(days=days - 1), fb.occurred_on + timedelta(days=days - 1),
            fb.site_code, rule.per_site)
        window = clusters.find_cluster(items, count=rule.count, days=days,
                                       anchor=fb.occurred_on, today=self.today())
        if window is None:
            return
        site = f" at site {fb.site_code}" if rule.per_site and fb.site_code else ""
        kinds = " or ".join(k.replace("_", " ") + "s" for k in rule.kinds)
        reason = (f"{window.count} {kinds} about {rule.theme}{site} at {fb.provider.name} in"
                  f" {days} days ({window.start} to {window.end}): the threshold is"
                  f" {rule.count} in {days} days")
        figures = {"cluster": rule.name, "count": window.count, "threshold": rule.count,
                   "window_days": days, "window_start": window.start.isoformat(),
                   "window_end": window.end.isoformat(), "kinds": rule.kinds,
                   "site_code": fb.site_code if rule.per_site else None}
        evidence = [Evidence(feedback_id=i.feedback_id, kind=i.kind, occurred_on=i.occurred_on,
                             matched=f"{rule.theme} ({i.occurred_on})") for i in window.items]
        family = cluster_family(rule.kinds)
        if family is None:
            await self.raise_concern(conn, outbox, fb.provider, CLUSTER_RULE, rule.theme + site,
                                     rule.severity, reason, figures, evidence)
            return
        signal = _cluster_signal(rule.name, fb.site_code if rule.per_site else None)
        await self.raise_signal(conn, outbox, fb.provider, family, signal, CLUSTER_RULE,
                                rule.severity, reason, figures, evidence)

    async def review_clusters(self, conn: asyncpg.Connection, outbox: Outbox) -> int:
        """Resolve the cluster concerns (and clear the cluster signals of family concerns)
        whose window has passed."""
        by_name = {c.name: c for c in self.rules.clusters}
        today = self.today()
        resolved = 0
        found: list[tuple[asyncpg.Record, str | None, dict[str, Any], date]] = [
            (row, None, row["figures"],
             max(date.fromisoformat(e["occurred_on"]) for e in row["evidence"]))
            for row in await store.open_concerns(conn, CLUSTER_RULE)]
        for row in await store.open_concerns(conn, MEASURE_RULE):
            for key, entry in sorted(row["figures"].get("signals", {}).items()):
                if key.startswith("cluster:") and entry.get("active") and entry.get("last_on"):
                    found.append((row, key, entry["figures"],
                                  date.fromisoformat(entry["last_on"])))
        for row, key, figures, last in found:
            rule = by_name.get(str(figures.get("cluster")))
            if rule is None:
                continue
            days = rule.window_days
            items = await store.theme_items(
                Batch(conn), row["ods_code"], rule.kinds, rule.theme, today - timedelta(days=days - 1),
                today, figures.get("site_code"), rule.per_site)
            current = clusters.window_ending(items, today, days)
            if not clusters.has_passed(last, current, rule.count):
                continue
            why = (f"window passed: {current.count} {rule.theme} item(s) in the {days} days to"
                   f" {today}, below the threshold of {rule.count}")
            if key is None:
                await self.resolve_concern(conn, outbox, row, why)
                resolved += 1
            elif await self.clear_signal(conn, outbox, row["ods_code"], row["theme"], key, why):
                resolved += 1
        return resolved

    # -- SPC --------------------------------------------------------------------------------
    async def fft_months(self, batch: Batch, ods_code: str,
                         setting: str) -> tuple[list[fft.Month], dict[str, list[Any]]]:
        closed = last_closed_month(self.clock(), self.rules.schedule.month_close_days)
        return await load_fft_months(batch, ods_code, setting, closed)

    async def check_fft_series(self, batch: Batch, provider: ProviderRef,
                               metric: Metric, setting: str, outbox: Outbox) -> None:
        if self.rules.spc.metric(metric.name) is None:
            return
        months, behind = await self.fft_months(batch, provider.ods_code, setting)
        series = fft_month_series(months, metric.name, behind)
        source = {m.period: m.source for m in months}
        evidence = [[Evidence(feedback_id=f, kind="fft_monthly" if source[p] == "return"
                              else "fft_response", occurred_on=d,
                              matched=f"{metric.label} {v:.1f}% in {p}") for f, d in items]
                    for p, v, items in zip(series.periods, series.values, series.feedback,
                                           strict=True)]
        await self.judge_series(batch.conn, outbox, provider, metric, setting, series.periods,
                                series.values, evidence)

    async def check_count_series(self, batch: Batch, outbox: Outbox,
                                 provider: ProviderRef, metric: Metric, last_month: str) -> None:
        if self.rules.spc.metric(metric.name) is None:
            return
        kind = COUNTED_KINDS[metric.name]
        until = month_start(shift_month(last_month, 1)) - timedelta(days=1)
        rows = await store.feedback_dates(batch, provider.ods_code, kind, until)
        series = count_series([(r["feedback_id"], r["occurred_on"]) for r in rows], last_month)
        if not series.periods:
            return
        evidence = [[Evidence(feedback_id=f, kind=kind, occurred_on=d,
                              matched=f"{metric.label}: {p}") for f, d in items]
                    for p, items in zip(series.periods, series.feedback, strict=True)]
        await self.judge_series(batch.conn, outbox, provider, metric, ALL_SETTINGS,
                                series.periods,
                                series.values, evidence)

    async def judge_series(self, conn: asyncpg.Connection, outbox: Outbox,
                           provider: ProviderRef, metric: Metric, setting: str,
                           periods: Sequence[str], values: Sequence[float],
                           evidence: Sequence[Sequence[Evidence]]) -> None:
        """Judge the latest month of one series (``measure_verdicts.series_verdict``): raise
        or add to a concern on special cause in the direction of concern, note an
        improvement, resolve after enough common cause; propose a rebase after a shift."""
        rebased = await store.rebase_periods(conn, provider.ods_code, metric.name, setting)
        verdict = series_verdict(self.rules.spc, metric, setting, provider.name, periods,
                                 values, evidence, rebased)
        if verdict is None:
            return  # fewer than the minimum points (in the latest rebase group): no verdict
        if verdict.rebase is not None and await store.propose_rebase(
                conn, ods_code=provider.ods_code, metric=metric.name, setting=setting,
                period=verdict.rebase.period, at=self.clock(), reason=verdict.rebase.reason):
            log.info("proposed a rebase of %s %s (%s) from %s", provider.ods_code, metric.name,
                     setting, verdict.rebase.period)
        if verdict.improvement is not None:
            i = verdict.improvement
            await store.record_improvement(
                conn, ods_code=provider.ods_code, metric=metric.name, setting=setting,
                period=i.period, value=i.value, signals=i.signals, figures=i.figures)
        await self.apply_signal(conn, outbox, provider, verdict.signal)

    # -- funnel ------------------------------------------------------------------------------
    async def check_funnel(self, batch: Batch, setting: str, period: str,
                           outbox: Outbox) -> None:
        """Compare the providers of one setting and month on FFT % negative
        (``measure_verdicts.month_funnel`` and ``funnel_verdicts``)."""
        conn = batch.conn
        cfg = self.rules.funnel
        closed = period <= last_closed_month(self.clock(), self.rules.schedule.month_close_days)
        figures = [FunnelFigures(r["ods_code"], r["negative"], r["responses"],
                                 tuple(r["feedback_ids"] or ()), r["source"])
                   for r in await store.fft_period_combined(batch, setting, period, closed)]
        f = month_funnel(figures, cfg)
        if f is None:
            return
        await store.save_funnel(conn, setting, period, f)
        providers: dict[str, ProviderRef] = {}
        history: dict[str, list[tuple[str, str]]] = {}
        for r in figures:  # sorted by ODS code: concern rows are always locked in one order
            if f.point(r.ods_code) is None:
                continue  # too few responses to show
            provider = await store.provider_ref(conn, r.ods_code)
            if provider is None:
                continue
            providers[r.ods_code] = provider
            history[r.ods_code] = await store.funnel_history(conn, r.ods_code, setting)
        names = {ods: p.name for ods, p in providers.items()}
        for ods, verdict in funnel_verdicts(f, figures, setting, period, names, history, cfg):
            await self.apply_signal(conn, outbox, providers[ods], verdict)

    async def apply_signal(self, conn: asyncpg.Connection, outbox: Outbox,
                           provider: ProviderRef,
                           verdict: RaiseSignal | ClearSignal | None) -> None:
        """Store and publish a measure verdict: raise or clear a signal of the family."""
        if isinstance(verdict, RaiseSignal):
            await self.raise_signal(conn, outbox, provider, verdict.family, verdict.signal,
                                    verdict.rule, verdict.severity, verdict.reason,
                                    verdict.figures, verdict.evidence)
        elif isinstance(verdict, ClearSignal):
            await self.clear_signal(conn, outbox, provider.ods_code, verdict.family,
                                    verdict.signal, verdict.why)

    # -- a month's close ------------------------------------------------------------------
    async def close_month(self, pool: asyncpg.Pool, month: str) -> dict[str, Any]:
        """Count the month just closed: complaints and GP alerts per month (SPC) and complaint
        handling, for every provider, one transaction per provider."""
        providers = 0
        async with pool.acquire() as conn:
            ods_codes = await store.providers_with(Batch(conn), list(COUNTED_KINDS.values()))
        for ods in ods_codes:
            async with pool.acquire() as conn, conn.transaction():
                provider = await store.provider_ref(conn, ods)
                if provider is None:
                    continue
                outbox = self._outbox(conn)
                for name in COUNTED_KINDS:
                    await self.check_count_series(Batch(conn), outbox, provider, METRICS[name],
                                                  month)
                await self.check_complaint_handling(Batch(conn), outbox, provider, month)
                providers += 1
        fft_series_judged = await self.close_fft_month(pool, month)
        return {"month": month, "providers": providers, "fft_series": fft_series_judged}

    async def close_fft_month(self, pool: asyncpg.Pool, month: str) -> int:
        """FFT from individual responses: once a month has closed, judge the series of every
        provider and setting with responses in it, then the funnel of each setting."""
        async with pool.acquire() as conn:
            pairs = await store.fft_response_providers(
                Batch(conn), month_start(month), month_start(shift_month(month, 1)))
        for r in pairs:
            async with pool.acquire() as conn, conn.transaction():
                await store.lock(conn, f"fft:{r['ods_code']}:{r['setting']}")
                provider = await store.provider_ref(conn, r["ods_code"])
                if provider is None:
                    continue
                outbox = self._outbox(conn)
                for metric in ("fft_negative", "fft_positive"):
                    await self.check_fft_series(Batch(conn), provider, METRICS[metric],
                                                r["setting"], outbox)
        for setting in sorted({r["setting"] for r in pairs}):
            async with pool.acquire() as conn, conn.transaction():
                await store.lock(conn, f"funnel:{setting}:{month}")
                await self.check_funnel(Batch(conn), setting, month, self._outbox(conn))
        return len(pairs)

    async def check_complaint_handling(self, batch: Batch, outbox: Outbox,
                                       provider: ProviderRef, month: str) -> None:
        conn = batch.conn
        cfg = self.rules.complaint_handling
        months = month_range(shift_month(month, 1 - cfg.window_months), month)
        since = month_start(shift_month(months[0], -cfg.respond_within_months - 1))
        window = handling_window(
            await store.complaints(batch, provider.ods_code, since), months, self.today(),
            acknowledge_within=cfg.acknowledge_within_working_days,
            respond_within=cfg.respond_within_months)
        for verdict in handling_verdicts(window, months, provider.name, cfg):
            if isinstance(verdict, OverThreshold):
                await self.raise_concern(
                    conn, outbox, provider, HANDLING_RULE, verdict.theme, verdict.severity,
                    verdict.reason, verdict.figures, verdict.evidence)
                continue
            row = await store.open_concern(
                conn, rules.fingerprint(provider.ods_code, HANDLING_RULE, verdict.theme))
            if row is not None:
                await self.resolve_concern(conn, outbox, row, verdict.resolution)

    # -- the schedule ---------------------------------------------------------------------
    def scheduler(self, pool: Callable[[], asyncpg.Pool]) -> Scheduler:
        """The reviews as recurring jobs of the shared durable scheduler (``monitor.jobs``):
        each runs once across replicas when due and says when it is next due."""
        sched = self.rules.schedule
        jobs: dict[str, SchedulerJob] = {
            MONTH_CLOSE: lambda conn, row, now: self._month_close_job(pool(), now),
            DAILY_REVIEW: lambda conn, row, now: self._daily_review_job(pool(), now),
            MONTHLY_REPORTS: lambda conn, row, now: self.scheduled_reports(
                pool(), MONTHLY_REPORTS, now),
            QUARTERLY_REPORTS: lambda conn, row, now: self.scheduled_reports(
                pool(), QUARTERLY_REPORTS, now),
        }
        return Scheduler(store.SCHEMA, pool, jobs, self.clock, interval=sched.poll_seconds,
                         retry=Backoff(first=sched.poll_seconds, cap=3600.0),
                         before_run=self._ensure_jobs)

    async def run_due_jobs(self, pool: asyncpg.Pool) -> list[str]:
        """Run every review that is due by the clock, each once across replicas."""
        return await self.scheduler(lambda: pool).run_due(self.clock())

    async def _ensure_jobs(self, conn: asyncpg.Connection, now: datetime) -> None:
        sched = self.rules.schedule
        await ensure_job(conn, store.SCHEMA, MONTH_CLOSE, month_close_at(
            last_closed_month(now, sched.month_close_days), sched.month_close_days))
        await ensure_job(conn, store.SCHEMA, DAILY_REVIEW, now)
        if self.reports is not None and self.reports.settings.schedule:
            at = self.reports.settings.run_at
            # First due at the end of the current month and quarter: a fresh install
            # does not make last month's reports retroactively.
            await ensure_job(conn, store.SCHEMA, MONTHLY_REPORTS, periods.due_at(
                periods.last_month_before(now).next(), at))
            await ensure_job(conn, store.SCHEMA, QUARTERLY_REPORTS, periods.due_at(
                periods.last_quarter_before(now).next(), at))

    async def _month_close_job(self, pool: asyncpg.Pool, now: datetime) -> Again:
        sched = self.rules.schedule
        month = last_closed_month(now, sched.month_close_days)
        result = await self.close_month(pool, month)
        return Again(month_close_at(shift_month(month, 1), sched.month_close_days), result)

    async def _daily_review_job(self, pool: asyncpg.Pool, now: datetime) -> Again:
        async with pool.acquire() as work, work.transaction():
            result = {"clusters_resolved": await self.review_clusters(work, self._outbox(work))}
        return Again(next_daily_review(now, self.rules.schedule.daily_review_at), result)

    async def scheduled_reports(self, pool: asyncpg.Pool, job: str, now: datetime) -> Again:
        """The reports of the month (CQRM packs) or quarter (Q&P, "you said, we did") that
        has just ended; and when the next are due (its first working day)."""
        if self.reports is None:
            log.warning("scheduled job %r without reports configured: left alone", job)
            return Again(now + timedelta(days=365), {"error": "unknown job"})
        at = self.reports.settings.run_at
        if job == MONTHLY_REPORTS:
            p = periods.last_month_before(now)
            result = await self.reports.monthly(pool, p)
            following = p.next()
        else:
            p = periods.last_quarter_before(now)
            result = await self.reports.quarterly(pool, p)
            following = p.next()
        return Again(periods.due_at(following, at), {"period": p.label, **result})

    async def schedule_loop(self, pool: Callable[[], asyncpg.Pool]) -> None:
        """Run the due reviews every ``poll_seconds`` for the life of the process (errors
        are logged and retried with backoff)."""
        await self.scheduler(pool).run()

    # -- helpers ------------------------------------------------------------------------------
    def today(self) -> date:
        return today_in_london(self.clock())

    def _outbox(self, conn: asyncpg.Connection) -> Outbox:
        if self.outbox_for is None:
            raise RuntimeError("Monitor has no outbox factory (build() wires the runtime's)")
        return self.outbox_for(conn)

    async def raise_concern(self, conn: asyncpg.Connection, outbox: Outbox,
                            provider: ProviderRef, rule: str, theme: str, severity: Severity,
                            reason: str, figures: dict[str, Any],
                            evidence: list[Evidence]) -> ConcernRaised | ConcernUpdated | None:
        event = await store.raise_or_update(
            conn, fingerprint=rules.fingerprint(provider.ods_code, rule, theme),
            provider=provider, rule=rule, theme=theme, severity=severity, reason=reason,
            figures=figures, evidence=evidence, at=self.clock())
        if event is not None:
            await outbox.add(event)
        return event

    async def raise_signal(self, conn: asyncpg.Connection, outbox: Outbox,
                           provider: ProviderRef, family: str, signal: str, rule: str,
                           severity: Severity, reason: str, figures: dict[str, Any],
                           evidence: list[Evidence]) -> None:
        event = await store.raise_signal(
            conn, fingerprint=rules.fingerprint(provider.ods_code, MEASURE_RULE, family),
            provider=provider, rule=MEASURE_RULE, family=family, signal=signal,
            signal_rule=rule, severity=severity, reason=reason, figures=figures,
            evidence=evidence, at=self.clock())
        if event is not None:
            await outbox.add(event)

    async def clear_signal(self, conn: asyncpg.Connection, outbox: Outbox, ods_code: str,
                           family: str, signal: str, why: str) -> bool:
        """Mark a family signal back to common cause; True when that resolved its concern."""
        event = await store.clear_signal(
            conn, rules.fingerprint(ods_code, MEASURE_RULE, family), signal, why, self.clock())
        if event is not None:
            await outbox.add(event)
        return event is not None

    async def resolve_concern(self, conn: asyncpg.Connection, outbox: Outbox,
                              row: asyncpg.Record, resolution: str) -> None:
        event = await store.resolve(conn, row["concern_id"], resolution, self.clock())
        if event is not None:
            await outbox.add(event)


def _cluster_signal(name: str, site_code: str | None) -> str:
    return f"cluster:{name}" + (f":{site_code}" if site_code else "")


def handlers(monitor: Monitor) -> list[tuple[type[Event], BatchEventHandler[Any]]]:
    """What this service does, in one table: event consumed -> handler."""
    return [
        (FeedbackAccepted, monitor.on_feedback_accepted),
        (FeedbackAcceptedBatch, monitor.on_feedback_batch),
        (ConcernClosed, monitor.on_concern_closed),
    ]


# Each batch event carries up to 1,000 items: a few at a time in hand, not the default
# prefetch's hundreds of events.
BATCH_EVENT_PREFETCH = 4


def subscriptions(topology: Topology) -> list[Subscription]:
    return subscriptions_of(build, topology)


def build_monitor(settings: Settings, clock: Clock = utc_now,
                  monitor_rules: MonitorRules | None = None,
                  report_settings: ReportSettings | None = None
                  ) -> tuple[ServiceRuntime, Monitor]:
    """The runtime and its Monitor (tests drive the Monitor's clock and schedule). With
    ``report_settings``, the schedule makes the reports too (``build`` reads them from the
    environment)."""
    runtime = ServiceRuntime(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
    analyser()  # the clinical-text pipeline, built once per process, before any message
    the_rules = monitor_rules or load_rules(settings.monitor_rules_file)

    def outbox_for(conn: asyncpg.Connection) -> Outbox:
        return runtime.outbox(conn)

    reports = None if report_settings is None else Reports(
        the_rules, report_settings, settings.commissioner_name, clock, outbox_for)
    monitor = Monitor(the_rules, clock, outbox_for=outbox_for, reports=reports)
    for event_cls, handler in handlers(monitor):
        runtime.on_batch_event(event_cls, handler, channel=Channel(
            prefetch_count=BATCH_EVENT_PREFETCH) if event_cls is FeedbackAcceptedBatch else None)

    async def schedule_loop() -> None:
        await monitor.schedule_loop(lambda: runtime.pool)

    runtime.background(schedule_loop)
    add_routes(runtime, monitor)
    open_concerns = runtime.metrics.gauge(
        "carewatch_monitor_open_concerns", "Open concerns by rule and severity.",
        ["rule", "severity"])

    async def refresh(conn: asyncpg.Connection) -> None:
        open_concerns.clear()
        for (rule, severity), n in (await store.open_concern_counts(conn)).items():
            open_concerns.labels(NAME, rule, severity).set(n)

    runtime.gauge_refreshers.append(refresh)
    add_review_routes(runtime, monitor)
    add_report_routes(runtime, monitor)
    runtime.http.declare(ACCESS)
    return runtime, monitor


def build(settings: Settings, clock: Clock = utc_now) -> ServiceRuntime:
    return build_monitor(settings, clock, report_settings=ReportSettings())[0]
