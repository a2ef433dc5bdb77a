"""quality-monitor's tables: its copy of accepted feedback, monthly series, concerns and the
schedule of its reviews. SQL only: the rules are in the pure modules."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from services.quality_monitor.clusters import Item
from services.quality_monitor.funnel import Funnel
from services.quality_monitor.handling import Complaint
from shared import concern_merge
from shared.events import (
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    Evidence,
    FeedbackAccepted,
    ProviderRef,
    Severity,
)
from shared.groupcommit import Batch

SCHEMA = "monitor"


async def record_feedback(batch: Batch, fb: FeedbackAccepted) -> None:
    """Keep the item; in a group commit, with the batch's other items, in one round trip
    (every reader of ``monitor.feedback`` below takes the batch and reads through it, which
    writes them first)."""
    await batch.defer(_insert_feedback, (
        fb.feedback_id, fb.submission_id, fb.provider.ods_code, fb.site_code, fb.kind,
        fb.theme, fb.occurred_on, fb.content))


async def _insert_feedback(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    # One statement for the batch's rows, in one order for every batch, so that concurrent
    # batches never deadlock.
    rows = sorted(rows, key=lambda r: r[0])
    await conn.execute(
        "INSERT INTO monitor.feedback (feedback_id, submission_id, ods_code, site_code, kind,"
        " theme, occurred_on, content) SELECT * FROM unnest($1::uuid[], $2::uuid[],"
        " $3::text[], $4::text[], $5::text[], $6::text[], $7::date[], $8::text[]::jsonb[])"
        " ON CONFLICT DO NOTHING",
        *([r[i] for r in rows] for i in range(7)), [json.dumps(r[7]) for r in rows])


async def raise_or_update(conn: asyncpg.Connection, *, fingerprint: str, provider: ProviderRef,
                          rule: str, theme: str, severity: Severity, reason: str,
                          figures: dict[str, Any], evidence: list[Evidence],
                          at: datetime) -> ConcernRaised | ConcernUpdated | None:
    """Open a concern for ``fingerprint`` or add the evidence to the open one (``at``: now,
    by the caller's clock).

    Severity may rise, never silently fall. Returns the event to publish, or None when the
    evidence was already on the concern, or (no concern open) when every piece of it was
    on the last resolved concern of this fingerprint: a signal the quality team closed is
    not raised again until new evidence arrives.
    """
    def merge(row: asyncpg.Record, new: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
        return (reason, figures) if new else None

    return await _open_or_update(conn, fingerprint=fingerprint, provider=provider, rule=rule,
                                 theme=theme, severity=severity, evidence=evidence,
                                 first=(reason, figures), merge=merge, at=at)


Merge = Callable[[asyncpg.Record, list[dict[str, Any]]], tuple[str, dict[str, Any]] | None]


async def _open_or_update(conn: asyncpg.Connection, *, fingerprint: str, provider: ProviderRef,
                          rule: str, theme: str, severity: Severity, evidence: list[Evidence],
                          first: tuple[str, dict[str, Any]],
                          merge: Merge, at: datetime) -> ConcernRaised | ConcernUpdated | None:
    """Open a concern with ``first`` (reason, figures), or update the open one with what
    ``merge(row, new evidence)`` gives (None: nothing new, no update). Severity may rise,
    never silently fall; evidence is the union (shared/concern_merge.py).

    An update reads and writes only the new evidence (the known items are matched and the
    new ones appended in PostgreSQL), and its event carries only those with the total count,
    so that it costs the same however much evidence the concern already holds."""
    evidence_json = [e.model_dump(mode="json") for e in evidence]
    while True:
        row = await conn.fetchrow(
            "SELECT concern_id, severity, reason, figures, raised_at,"
            " ARRAY(SELECT id FROM unnest($2::text[]) id WHERE c.evidence @>"
            "  jsonb_build_array(jsonb_build_object('feedback_id', id))) AS known"
            " FROM monitor.concerns c WHERE fingerprint = $1 AND status = 'open' FOR UPDATE",
            fingerprint, sorted({e["feedback_id"] for e in evidence_json}))
        if row is None:
            if await _all_seen_on_last_resolved(conn, fingerprint, evidence_json):
                return None
            reason, figures = first
            concern_id = uuid.uuid4()
            raised_at = await conn.fetchval(
                "INSERT INTO monitor.concerns (concern_id, fingerprint, ods_code, provider, rule,"
                " theme, severity, reason, figures, evidence, raised_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)"
                " ON CONFLICT (fingerprint) WHERE status = 'open' DO NOTHING RETURNING raised_at",
                concern_id, fingerprint, provider.ods_code, provider.model_dump(mode="json"),
                rule, theme, severity.value, reason, figures, evidence_json, at)
            if raised_at is None:  # another replica opened it first: update theirs
                continue
            return ConcernRaised(
                concern_id=concern_id, fingerprint=fingerprint, provider=provider, rule=rule,
                theme=theme, severity=severity, reason=reason, figures=figures,
                evidence=evidence, raised_at=raised_at)
        known = [{"feedback_id": k} for k in row["known"]]
        m = concern_merge.merge(Severity(row["severity"]), known, severity, evidence_json,
                                key=lambda e: e["feedback_id"])
        merged = merge(row, m.new_evidence)
        if merged is None:
            return None
        reason, figures = merged
        count = await conn.fetchval(
            "UPDATE monitor.concerns SET evidence = evidence || $2::jsonb, severity = $3,"
            " reason = $4, figures = $5, updated_at = $6 WHERE concern_id = $1"
            " RETURNING jsonb_array_length(evidence)",
            row["concern_id"], m.new_evidence, m.severity.value, reason, figures, at)
        by_id: dict[str, Evidence] = {}
        for e, j in zip(evidence, evidence_json, strict=True):
            by_id.setdefault(j["feedback_id"], e)
        return ConcernUpdated(
            concern_id=row["concern_id"], fingerprint=fingerprint, provider=provider, rule=rule,
            theme=theme, severity=m.severity, previous_severity=m.previous_severity,
            reason=reason, figures=figures,
            evidence=[by_id[e["feedback_id"]] for e in m.new_evidence],
            evidence_count=count, raised_at=row["raised_at"])


# -- one concern per signal: a measure family's signals on one concern -------------------------
def _active(signals: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for _, v in sorted(signals.items()) if v.get("active")]


def _family_reason(signals: dict[str, Any]) -> str:
    return "; ".join(v["reason"] for v in _active(signals))


async def raise_signal(conn: asyncpg.Connection, *, fingerprint: str, provider: ProviderRef,
                       rule: str, family: str, signal: str, signal_rule: str,
                       severity: Severity, reason: str, figures: dict[str, Any],
                       evidence: list[Evidence],
                       at: datetime) -> ConcernRaised | ConcernUpdated | None:
    """Put one signal (``signal``: e.g. ``spc:fft_negative``, raised by ``signal_rule``) on the
    open concern of its provider and measure ``family``, or open that concern.

    The concern's figures keep every signal (``figures["signals"][signal]``: its rule,
    severity, reason, figures, evidence ids, whether active); its evidence is the union; its
    severity the highest of its signals (never silently falls); its reason the active
    signals'. Returns the event to publish, or None when nothing is new: the signal already
    active with no new evidence, or (no concern open) every item already on the last
    resolved concern of this family."""
    evidence_json = [e.model_dump(mode="json") for e in evidence]
    entry: dict[str, Any] = {
        "rule": signal_rule, "severity": severity.value, "reason": reason, "figures": figures,
        "active": True, "evidence": sorted({e["feedback_id"] for e in evidence_json}),
        "last_on": max((e["occurred_on"] for e in evidence_json), default=None)}

    def merge(row: asyncpg.Record, new: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
        figures_now = dict(row["figures"])
        signals = dict(figures_now.get("signals") or {})
        before = signals.get(signal)
        if not new and before is not None and before.get("active"):
            return None
        earlier = set(before.get("evidence", [])) if before else set()
        signals[signal] = {**entry, "evidence": sorted(earlier | set(entry["evidence"]))}
        figures_now.update({"family": family, "signals": signals})
        return _family_reason(signals), figures_now

    return await _open_or_update(
        conn, fingerprint=fingerprint, provider=provider, rule=rule, theme=family,
        severity=severity, evidence=evidence, merge=merge, at=at,
        first=(reason, {"family": family, "signals": {signal: entry}}))


async def clear_signal(conn: asyncpg.Connection, fingerprint: str, signal: str, why: str,
                       at: datetime) -> ConcernResolved | None:
    """The signal is back to common cause: mark it so on its open concern; when no signal of
    the concern is active any more, the concern resolves (the event to publish)."""
    row = await conn.fetchrow(
        "SELECT * FROM monitor.concerns WHERE fingerprint = $1 AND status = 'open' FOR UPDATE",
        fingerprint)
    if row is None:
        return None
    figures_now = dict(row["figures"])
    signals = dict(figures_now.get("signals") or {})
    entry = signals.get(signal)
    if entry is None or not entry.get("active"):
        return None
    signals[signal] = {**entry, "active": False, "cleared": why}
    figures_now["signals"] = signals
    await conn.execute("UPDATE monitor.concerns SET figures = $2, updated_at = $3"
                       " WHERE concern_id = $1", row["concern_id"], figures_now, at)
    if _active(signals):
        return None
    return await resolve(conn, row["concern_id"], "; ".join(
        v["cleared"] for _, v in sorted(signals.items()) if v.get("cleared")), at)


async def list_concerns(conn: asyncpg.Connection, status: str | None = "open",
                        limit: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM monitor.concerns WHERE ($1::text IS NULL OR status = $1)"
        " ORDER BY raised_at DESC LIMIT $2", status, limit)


async def _all_seen_on_last_resolved(conn: asyncpg.Connection, fingerprint: str,
                                     evidence_json: list[dict[str, Any]]) -> bool:
    last = await conn.fetchval(
        "SELECT evidence FROM monitor.concerns WHERE fingerprint = $1 AND status = 'resolved'"
        " ORDER BY resolved_at DESC NULLS LAST LIMIT 1", fingerprint)
    if not last:
        return False
    seen = {e["feedback_id"] for e in last}
    return all(e["feedback_id"] in seen for e in evidence_json)


# -- serialising work on one provider ------------------------------------------------------
async def lock(conn: asyncpg.Connection, *keys: str) -> None:
    """Transaction-scoped advisory locks, taken in the order given. Work that counts other
    items (one provider's cluster, one provider's FFT series, one funnel) is serialised, so
    concurrent handlers and replicas count the same items: two GP alerts handled at once
    still see each other. Keys are narrow, so unrelated work never waits."""
    if not keys:
        return
    if len(keys) == 1:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                           f"monitor:{keys[0]}")
        return
    # One round trip: the function is volatile, so it runs row by row after the ORDER BY.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))"
        " FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
        [f"monitor:{key}" for key in keys])


# -- providers -----------------------------------------------------------------------------
async def record_provider(conn: asyncpg.Connection, provider: ProviderRef,
                          committed: dict[str, dict[str, Any]] | None = None) -> None:
    """Keep the provider's latest description. Read first: an upsert would lock the row on
    every item, serialising (and deadlocking) replicas' batches on busy providers.

    ``committed`` remembers descriptions already seen committed (rows are never deleted), so
    a busy provider costs no query at all once its row is known to be current."""
    data = provider.model_dump(mode="json")
    if committed is not None and committed.get(provider.ods_code) == data:
        return
    if await conn.fetchval("SELECT provider FROM monitor.providers WHERE ods_code = $1",
                           provider.ods_code) == data:
        if committed is not None:
            committed[provider.ods_code] = data
        return
    await conn.execute(
        "INSERT INTO monitor.providers (ods_code, provider) VALUES ($1, $2)"
        " ON CONFLICT (ods_code) DO UPDATE SET provider = EXCLUDED.provider, updated_at = now()",
        provider.ods_code, data)


async def provider_ref(conn: asyncpg.Connection, ods_code: str) -> ProviderRef | None:
    row = await conn.fetchval("SELECT provider FROM monitor.providers WHERE ods_code = $1",
                              ods_code)
    return ProviderRef.model_validate(row) if row else None


# -- concerns ------------------------------------------------------------------------------
async def open_concern(conn: asyncpg.Connection, fingerprint: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM monitor.concerns WHERE fingerprint = $1 AND status = 'open'", fingerprint)


async def open_concerns(conn: asyncpg.Connection, rule: str,
                        ods_code: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM monitor.concerns WHERE status = 'open' AND rule = $1"
        " AND ($2::text IS NULL OR ods_code = $2) ORDER BY fingerprint", rule, ods_code)


async def open_concern_counts(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    """Open concerns by (rule, severity), for the metrics endpoint."""
    rows = await conn.fetch("SELECT rule, severity, count(*) AS n FROM monitor.concerns"
                            " WHERE status = 'open' GROUP BY rule, severity")
    return {(r["rule"], r["severity"]): r["n"] for r in rows}


async def resolve(conn: asyncpg.Connection, concern_id: uuid.UUID, resolution: str,
                  at: datetime) -> ConcernResolved | None:
    """Mark an open concern resolved; the event to publish, or None if it was not open."""
    row = await conn.fetchrow(
        "UPDATE monitor.concerns SET status = 'resolved', resolved_at = $2, resolution = $3,"
        " updated_at = $2 WHERE concern_id = $1 AND status = 'open' RETURNING *",
        concern_id, at, resolution)
    if row is None:
        return None
    return ConcernResolved(
        concern_id=row["concern_id"], fingerprint=row["fingerprint"],
        provider=ProviderRef.model_validate(row["provider"]), rule=row["rule"],
        theme=row["theme"], severity=Severity(row["severity"]), resolution=resolution,
        resolved_at=at)


# -- feedback --------------------------------------------------------------------------------
async def theme_items(batch: Batch, ods_code: str, kinds: Sequence[str], theme: str,
                      start: date, end: date, site_code: str | None = None,
                      per_site: bool = False) -> list[Item]:
    """Feedback of ``kinds`` on one provider (and site) about ``theme`` dated start..end."""
    rows = await batch.fetch(
        "SELECT feedback_id, kind, occurred_on, site_code FROM monitor.feedback"
        " WHERE ods_code = $1 AND kind = ANY($2::text[]) AND lower(theme) = lower($3)"
        " AND occurred_on BETWEEN $4 AND $5"
        " AND (NOT $6 OR site_code IS NOT DISTINCT FROM $7)",
        ods_code, list(kinds), theme, start, end, per_site, site_code)
    return [Item(r["feedback_id"], r["kind"], r["occurred_on"], r["site_code"]) for r in rows]


async def feedback_dates(batch: Batch, ods_code: str, kind: str,
                         until: date) -> list[asyncpg.Record]:
    return await batch.fetch(
        "SELECT feedback_id, kind, occurred_on FROM monitor.feedback WHERE ods_code = $1"
        " AND kind = $2 AND occurred_on <= $3 ORDER BY occurred_on, feedback_id",
        ods_code, kind, until)


async def providers_with(batch: Batch, kinds: Sequence[str]) -> list[str]:
    rows = await batch.fetch(
        "SELECT DISTINCT ods_code FROM monitor.feedback WHERE kind = ANY($1::text[])"
        " ORDER BY ods_code", list(kinds))
    return [r["ods_code"] for r in rows]


async def complaints(batch: Batch, ods_code: str, since: date) -> list[Complaint]:
    """The provider's complaints received since ``since``, with their handling dates."""
    rows = await batch.fetch(
        "SELECT feedback_id, occurred_on, content->>'acknowledged_on' AS ack,"
        " content->>'responded_on' AS resp FROM monitor.feedback"
        " WHERE ods_code = $1 AND kind = 'complaint' AND occurred_on >= $2",
        ods_code, since)
    return [Complaint(r["feedback_id"], r["occurred_on"],
                      date.fromisoformat(r["ack"]) if r["ack"] else None,
                      date.fromisoformat(r["resp"]) if r["resp"] else None) for r in rows]


# -- FFT monthly returns ---------------------------------------------------------------------
async def record_fft_month(conn: asyncpg.Connection, fb: FeedbackAccepted) -> tuple[str, str]:
    """Keep one monthly FFT return (the latest replaces an earlier one for the same provider,
    site, setting and month). Returns (setting, period)."""
    c = fb.content
    counts = {k: int(c.get(k) or 0) for k in (
        "very_good", "good", "neither_good_nor_poor", "poor", "very_poor", "dont_know")}
    setting, period = str(c["setting"]), str(c["period"])
    await conn.execute(
        "INSERT INTO monitor.fft_months (ods_code, site_code, setting, period, feedback_id,"
        " responses, positive, negative) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (ods_code, site_code, setting, period) DO UPDATE SET"
        " feedback_id = EXCLUDED.feedback_id, responses = EXCLUDED.responses,"
        " positive = EXCLUDED.positive, negative = EXCLUDED.negative, received_at = now()",
        fb.provider.ods_code, fb.site_code or "", setting, period, fb.feedback_id,
        sum(counts.values()), counts["very_good"] + counts["good"],
        counts["poor"] + counts["very_poor"])
    return setting, period


async def record_equality_return(conn: asyncpg.Connection, fb: FeedbackAccepted) -> None:
    """Keep one equality or Quality Account progress return (the latest replaces an earlier
    one for the same provider, standard, priority and period)."""
    c = fb.content
    figure = c.get("figure")
    await conn.execute(
        "INSERT INTO monitor.equality_returns (ods_code, standard, priority, period,"
        " feedback_id, status, figure, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (ods_code, standard, priority, period) DO UPDATE SET"
        " feedback_id = EXCLUDED.feedback_id, status = EXCLUDED.status,"
        " figure = EXCLUDED.figure, summary = EXCLUDED.summary, received_at = now()",
        fb.provider.ods_code, str(c["standard"]), str(c.get("priority") or ""),
        str(c["period"]), fb.feedback_id, str(c["status"]),
        None if figure is None else float(figure), str(c.get("summary") or ""))


async def fft_settings(conn: asyncpg.Connection, ods_code: str) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT setting FROM monitor.fft_months WHERE ods_code = $1"
                            " ORDER BY setting", ods_code)
    return [r["setting"] for r in rows]


# -- FFT from both sources (see services/quality_monitor/fft.py) -----------------------------
# Monthly returns are kept as all / positive / negative: as six answers they read
# very_good = positive, poor = negative, neither = the rest, which gives the same figures.
_RETURN_AS_ANSWERS = (
    "positive AS very_good, 0 AS good, responses - positive - negative AS neither_good_nor_poor,"
    " negative AS poor, 0 AS very_poor, 0 AS dont_know")
_RESPONSE_ANSWERS = ", ".join(
    f"count(*) FILTER (WHERE content->>'answer' = '{a}')::int AS {a}" for a in (
        "very_good", "good", "neither_good_nor_poor", "poor", "very_poor", "dont_know"))


async def fft_returns(conn: asyncpg.Connection, ods_code: str,
                      setting: str) -> list[asyncpg.Record]:
    """The provider's monthly returns in one setting, one row per site and month."""
    return await conn.fetch(
        f"SELECT period, site_code, feedback_id, {_RETURN_AS_ANSWERS} FROM monitor.fft_months"
        " WHERE ods_code = $1 AND setting = $2 ORDER BY period, site_code", ods_code, setting)


async def fft_response_counts(batch: Batch, ods_code: str, setting: str,
                              before: date) -> list[asyncpg.Record]:
    """The provider's individual FFT responses in one setting counted by site and month, for
    responses dated before ``before``."""
    return await batch.fetch(
        "SELECT to_char(occurred_on, 'YYYY-MM') AS period, coalesce(site_code, '') AS site_code,"
        f" {_RESPONSE_ANSWERS} FROM monitor.feedback WHERE ods_code = $1 AND kind = 'fft_response'"
        " AND theme = $2 AND occurred_on < $3 GROUP BY 1, 2 ORDER BY 1, 2",
        ods_code, f"fft: {setting}", before)


async def fft_response_evidence(batch: Batch, ods_code: str, setting: str,
                                answers: Sequence[str], before: date,
                                per_month: int = 20) -> list[asyncpg.Record]:
    """Up to ``per_month`` responses of ``answers`` per month (the earliest), as evidence."""
    return await batch.fetch(
        "SELECT period, feedback_id, occurred_on FROM (SELECT to_char(occurred_on, 'YYYY-MM')"
        " AS period, feedback_id, occurred_on, row_number() OVER (PARTITION BY"
        " date_trunc('month', occurred_on) ORDER BY occurred_on, feedback_id) AS n"
        " FROM monitor.feedback WHERE ods_code = $1 AND kind = 'fft_response' AND theme = $2"
        " AND occurred_on < $3 AND content->>'answer' = ANY($4::text[])) AS x WHERE n <= $5"
        " ORDER BY period, n", ods_code, f"fft: {setting}", before, list(answers), per_month)


async def fft_response_providers(batch: Batch, start: date,
                                 before: date) -> list[asyncpg.Record]:
    """(ods_code, setting) of every provider with FFT responses dated start..before."""
    return await batch.fetch(
        "SELECT DISTINCT ods_code, content->>'setting' AS setting FROM monitor.feedback"
        " WHERE kind = 'fft_response' AND occurred_on >= $1 AND occurred_on < $2"
        " ORDER BY ods_code, setting", start, before)


async def fft_period_combined(batch: Batch, setting: str, period: str,
                              responses_closed: bool) -> list[asyncpg.Record]:
    """Every provider's FFT totals for one setting and month, the monthly return winning
    over the responses (counted only when ``responses_closed``: the month has closed), with
    the feedback behind each (returns; or up to 20 negative responses)."""
    start = date(int(period[:4]), int(period[5:]), 1)
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return await batch.fetch(
        "WITH r AS (SELECT ods_code, sum(responses)::int AS responses,"
        " sum(negative)::int AS negative, array_agg(feedback_id ORDER BY site_code) AS"
        " feedback_ids, 'return' AS source FROM monitor.fft_months"
        " WHERE setting = $1 AND period = $2 GROUP BY ods_code),"
        " s AS (SELECT ods_code, count(*)::int AS responses, count(*) FILTER (WHERE"
        " content->>'answer' IN ('poor', 'very_poor'))::int AS negative,"
        " (array_agg(feedback_id ORDER BY occurred_on, feedback_id) FILTER (WHERE"
        " content->>'answer' IN ('poor', 'very_poor')))[1:20] AS feedback_ids,"
        " 'responses' AS source FROM monitor.feedback WHERE $5 AND kind = 'fft_response'"
        " AND theme = $6 AND occurred_on >= $3 AND occurred_on < $4 GROUP BY ods_code)"
        " SELECT * FROM r UNION ALL SELECT * FROM s WHERE ods_code NOT IN"
        " (SELECT ods_code FROM r) ORDER BY ods_code",
        setting, period, start, end, responses_closed, f"fft: {setting}")


async def save_funnel(conn: asyncpg.Connection, setting: str, period: str, f: Funnel) -> None:
    await conn.execute("DELETE FROM monitor.funnel_results WHERE setting = $1 AND period = $2",
                       setting, period)
    await conn.executemany(
        "INSERT INTO monitor.funnel_results (setting, period, ods_code, events, responses,"
        " proportion, z, z_adjusted, band, target, phi, tau2, providers)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        [(setting, period, p.key, p.events, p.n, p.proportion, p.z, p.z_adjusted, p.band.value,
          f.target, f.phi, f.tau2, len(f.points)) for p in f.points])


async def funnel_history(conn: asyncpg.Connection, ods_code: str,
                         setting: str) -> list[tuple[str, str]]:
    """(period, band) of the provider on the funnels of one setting, newest month first."""
    rows = await conn.fetch(
        "SELECT period, band FROM monitor.funnel_results WHERE ods_code = $1 AND setting = $2"
        " ORDER BY period DESC", ods_code, setting)
    return [(r["period"], r["band"]) for r in rows]


# -- improvements ------------------------------------------------------------------------------
async def record_improvement(conn: asyncpg.Connection, *, ods_code: str, metric: str,
                             setting: str, period: str, value: float,
                             signals: list[dict[str, Any]], figures: dict[str, Any]) -> bool:
    """Note special-cause improvement at the latest point of a series (once per month)."""
    return bool(await conn.fetchval(
        "INSERT INTO monitor.improvements (ods_code, metric, setting, period, value, signals,"
        " figures) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING true",
        ods_code, metric, setting, period, value, signals, figures))


async def list_improvements(conn: asyncpg.Connection, ods_code: str | None = None,
                            limit: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM monitor.improvements WHERE ($1::text IS NULL OR ods_code = $1)"
        " ORDER BY recorded_at DESC, ods_code, metric LIMIT $2", ods_code, limit)


# -- rebases ------------------------------------------------------------------------------------
MONITOR_ACTOR = "quality-monitor"


async def rebase_periods(conn: asyncpg.Connection, ods_code: str, metric: str,
                         setting: str) -> list[str]:
    """The months from which accepted rebases start a new group, oldest first."""
    rows = await conn.fetch(
        "SELECT period FROM monitor.rebases WHERE ods_code = $1 AND metric = $2 AND setting = $3"
        " AND status = 'accepted' ORDER BY period", ods_code, metric, setting)
    return [r["period"] for r in rows]


async def record_rebase(conn: asyncpg.Connection, *, ods_code: str, metric: str, setting: str,
                        period: str, reason: str, actor: str, at: datetime) -> asyncpg.Record:
    """The quality team records a rebase (a known change): accepted at once; a proposal for
    the same month becomes accepted, with this reason."""
    return await conn.fetchrow(
        "INSERT INTO monitor.rebases (ods_code, metric, setting, period, reason, status,"
        " proposed_by, proposed_at, decided_by, decided_at)"
        " VALUES ($1, $2, $3, $4, $5, 'accepted', $6, $7, $6, $7)"
        " ON CONFLICT (ods_code, metric, setting, period) DO UPDATE SET status = 'accepted',"
        " reason = EXCLUDED.reason, decided_by = EXCLUDED.decided_by,"
        " decided_at = EXCLUDED.decided_at RETURNING *",
        ods_code, metric, setting, period, reason, actor, at)


async def propose_rebase(conn: asyncpg.Connection, *, ods_code: str, metric: str, setting: str,
                         period: str, reason: str, at: datetime) -> bool:
    """The monitor proposes a rebase (once: a month already proposed, accepted or rejected is
    left alone). True when the proposal is new."""
    return bool(await conn.fetchval(
        "INSERT INTO monitor.rebases (ods_code, metric, setting, period, reason, status,"
        " proposed_by, proposed_at) VALUES ($1, $2, $3, $4, $5, 'proposed', $6, $7)"
        " ON CONFLICT DO NOTHING RETURNING true",
        ods_code, metric, setting, period, reason, MONITOR_ACTOR, at))


async def decide_rebase(conn: asyncpg.Connection, *, ods_code: str, metric: str, setting: str,
                        period: str, accept: bool, actor: str,
                        at: datetime) -> asyncpg.Record | None:
    """A person accepts or rejects a proposed rebase; None when no proposal is pending."""
    return await conn.fetchrow(
        "UPDATE monitor.rebases SET status = $5, decided_by = $6, decided_at = $7"
        " WHERE ods_code = $1 AND metric = $2 AND setting = $3 AND period = $4"
        " AND status = 'proposed' RETURNING *",
        ods_code, metric, setting, period, "accepted" if accept else "rejected", actor, at)


async def list_rebases(conn: asyncpg.Connection, ods_code: str | None = None,
                       status: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM monitor.rebases WHERE ($1::text IS NULL OR ods_code = $1)"
        " AND ($2::text IS NULL OR status = $2) ORDER BY ods_code, metric, setting, period",
        ods_code, status)
