"""quality-monitor's operator commands: concerns, improvements, and charts for people."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from services.cli.common import (
    JsonOption,
    acting,
    choice,
    fail,
    joined,
    month,
    print_record,
    print_rows,
    with_db,
)
from services.quality_monitor.series import (
    ALL_SETTINGS,
    METRICS,
)
from shared.clock import utc_now
from shared.groupcommit import Batch
from shared.roles import DECIDERS
from shared.settings import get_settings
from shared.severity import Severity

# What the commands use loads when a command runs, not for `--help` (issue 20).
if TYPE_CHECKING:
    from services.quality_monitor import config, fft, lifecycle, measures, spc, store, summary
    from services.quality_monitor import funnel as funnels
else:
    from services.cli.lazy import modules

    config, fft, funnels, lifecycle, measures, spc, store, summary = modules(
        "services.quality_monitor.config", "services.quality_monitor.fft",
        "services.quality_monitor.funnel", "services.quality_monitor.lifecycle",
        "services.quality_monitor.measures", "services.quality_monitor.spc",
        "services.quality_monitor.store", "services.quality_monitor.summary")


T = TypeVar("T")

if TYPE_CHECKING:
    import asyncpg

    from shared.outbox import Outbox

# The chart and rule modules (and matplotlib) load only for the commands that use them.


class ConcernStatus(StrEnum):
    open = "open"
    resolved = "resolved"
    all = "all"


class Metric(StrEnum):
    fft_negative = "fft_negative"
    fft_positive = "fft_positive"
    complaints = "complaints"
    gp_alerts = "gp_alerts"


concerns_app = typer.Typer(help="Concerns raised by quality-monitor.", no_args_is_help=True)
improvements_app = typer.Typer(help="Special-cause improvement seen by quality-monitor.",
                               no_args_is_help=True)
charts_app = typer.Typer(help="SPC charts and funnel plots (PNG) from quality-monitor's data.",
                         no_args_is_help=True)
review_app = typer.Typer(help="Possible serious risks for the quality team to confirm or dismiss.",
                         no_args_is_help=True)
concerns_app.add_typer(review_app, name="review")
rebases_app = typer.Typer(help="Rebases of SPC series: recorded by the quality team, or"
                          " proposed by the monitor after a sustained shift.",
                          no_args_is_help=True)
measures_app = typer.Typer(help="Measures as Making Data Count reads them.",
                           no_args_is_help=True)
COMMAND_GROUPS = {"concerns": concerns_app, "improvements": improvements_app,
                  "charts": charts_app, "rebases": rebases_app, "measures": measures_app}
Provider = Annotated[str, typer.Option("--provider", help="ODS code of the provider")]
MetricOpt = Annotated[str, typer.Option("--metric", help="fft_negative, fft_positive,"
                                        " complaints or gp_alerts")]
SettingOpt = Annotated[str, typer.Option("--setting", help="FFT setting (e.g. inpatient);"
                                         " 'all' for complaints and GP alerts")]
FromOpt = Annotated[str, typer.Option("--from", help="First month of the new group (YYYY-MM)")]


@concerns_app.command("list")
def concerns_list(
    as_json: JsonOption = False,
    status: Annotated[ConcernStatus, typer.Option(help="Which concerns.")] = ConcernStatus.open,
    provider: Annotated[str | None, typer.Option(help="Only this provider (ODS code).")] = None,
    severity: Annotated[Severity | None, typer.Option(help="Only this severity.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
) -> None:
    """Concerns, newest first."""
    wanted = None if status is ConcernStatus.all else status.value
    ods = provider.strip().upper() if provider else None

    async def work(conn: asyncpg.Connection) -> tuple[list[dict[str, Any]], int]:
        if ods:
            await _known_provider(conn, ods)
        where = ("($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR ods_code = $2)"
                 " AND ($3::text IS NULL OR severity = $3)")
        args = (wanted, ods, choice(severity))
        total = await conn.fetchval(f"SELECT count(*) FROM monitor.concerns WHERE {where}", *args)
        rows = await conn.fetch(f"SELECT * FROM monitor.concerns WHERE {where}"
                                " ORDER BY raised_at DESC LIMIT $4", *args, limit)
        return [dict(r) for r in rows], total

    rows, total = with_db(work)
    if not as_json:
        for r in rows:
            r["evidence"] = len(r["evidence"] or [])
    print_rows(rows, as_json, ["concern_id", "ods_code", "rule", "theme", "severity", "status",
                               "evidence", "raised_at"], total=total)


async def _known_provider(conn: asyncpg.Connection, ods_code: str) -> str:
    """The provider's name (as quality-monitor has seen it, else from intake's registry);
    an unknown ODS code fails the command."""
    import asyncpg

    ref = await store.provider_ref(conn, ods_code)
    if ref is not None:
        return ref.name
    try:
        name = await conn.fetchval("SELECT name FROM intake.providers WHERE ods_code = $1",
                                   ods_code)
    except asyncpg.UndefinedTableError:
        name = None
    if name is None:
        raise fail(f"unknown provider {ods_code!r}: not in the provider registry"
                   " (see carewatch providers list)", 1)
    return str(name)


@concerns_app.command("show")
def concerns_show(concern_id: uuid.UUID, as_json: JsonOption = False) -> None:
    """One concern with its rule, figures and evidence."""
    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        row = await conn.fetchrow("SELECT * FROM monitor.concerns WHERE concern_id = $1",
                                  concern_id)
        return dict(row) if row else None

    row = with_db(work)
    if row is None:
        raise fail(f"no concern {concern_id}", 1)
    if as_json:
        print_record(row, as_json=True)
        return
    provider = row.pop("provider") or {}
    evidence = row.pop("evidence") or []
    row.pop("fingerprint", None)
    row["ods_code"] = f"{row['ods_code']} ({provider.get('name', '?')})"
    print_record(row)
    typer.echo(f"evidence ({len(evidence)}):")
    for e in evidence[:10]:
        typer.echo(f"  - {_evidence_line(e)}")
    if len(evidence) > 10:
        typer.echo(f"  (+{len(evidence) - 10} more; --json for all)")


def _evidence_line(e: dict[str, Any]) -> str:
    """One piece of evidence: its kind, when, and what it says (first reasons)."""
    parts = [str(e.get(k)) for k in ("kind", "occurred_on", "feedback_id") if e.get(k)]
    reasons = e.get("reasons") or e.get("matched") or []
    if isinstance(reasons, list) and reasons:
        parts.append(joined([str(r) for r in reasons]))
    return "  ".join(parts) or json.dumps(e, default=str)


def _review_command(work: Callable[[asyncpg.Connection, Outbox, str], Awaitable[T]]) -> T:
    """Run a review command in one transaction with quality-monitor's outbox, as the
    console's actor (one of DECIDERS)."""
    from services.quality_monitor import review
    from shared.outbox import Outbox
    from shared.topology import Topology

    settings = get_settings()
    exchange = Topology(settings.namespace, settings.delivery_limit).events_exchange

    async def run(conn: asyncpg.Connection) -> T:
        actor = await acting(conn, DECIDERS)
        async with conn.transaction():
            return await work(conn, Outbox(conn, store.SCHEMA, exchange,
                                           "carewatch/quality_monitor"), actor)

    try:
        return with_db(run, settings)
    except (review.ReviewNotFound, review.ReviewConflict) as exc:
        raise fail(str(exc), 1) from exc


@review_app.command("list")
def review_list(as_json: JsonOption = False,
                status: Annotated[str, typer.Option(help="pending, confirmed, dismissed or all")]
                = "pending") -> None:
    """Possible serious risks marked for review, oldest first, with the phrase, category,
    context and sentence the pipeline read."""
    from services.quality_monitor import review

    if status != "all" and status not in review.STATUSES:
        raise fail(f"--status is one of {', '.join(review.STATUSES)} or all")

    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return await review.list_reviews(conn, None if status == "all" else status)

    rows = with_db(work)
    if as_json:
        print_rows(rows, True, [])
        return
    for r in rows:
        typer.echo(f"{r['concern_id']}  {r['review']:<9}  {r['ods_code']}  {r['theme']}"
                   f"  ({r['severity']}, {r['status']})")
        for m in r["figures"].get("harm_in_text", {}).get("mentions", []):
            typer.echo(f"    {m['category']}: \"{m['phrase']}\" [{m['tier']}; {m['context']}]")
            typer.echo(f"      {m['sentence']}")


@review_app.command("confirm")
def review_confirm(concern_id: uuid.UUID,
                   reason: Annotated[str | None, typer.Option(help="Why it is serious")] = None
                   ) -> None:
    """Confirm a possible risk: the concern becomes serious and escalation books its meeting."""
    from services.quality_monitor import review
    from shared.clock import utc_now

    event = _review_command(lambda conn, outbox, actor: review.confirm(
        conn, outbox, concern_id, actor=actor, at=utc_now(), reason=reason))
    typer.echo(f"confirmed: concern {event.concern_id} is now {event.severity}")


@review_app.command("dismiss")
def review_dismiss(concern_id: uuid.UUID,
                   reason: Annotated[str, typer.Option(help="Why it is not a serious risk")]
                   ) -> None:
    """Dismiss a possible risk with a reason: the concern is resolved; the redacted text is
    kept with the verdict for the evaluation corpus."""
    from services.quality_monitor import review
    from shared.clock import utc_now

    event = _review_command(lambda conn, outbox, actor: review.dismiss(
        conn, outbox, concern_id, actor=actor, at=utc_now(), reason=reason))
    typer.echo(f"dismissed: concern {event.concern_id} resolved")


@improvements_app.command("list")
def improvements_list(as_json: JsonOption = False,
                      provider: Annotated[str | None, typer.Option(help="ODS code")] = None
                      ) -> None:
    """Special-cause improvement by provider, measure and month, newest first."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_improvements(conn, provider)]

    print_rows(with_db(work), as_json,
               ["ods_code", "metric", "setting", "period", "value", "recorded_at"])


def _write(out: Path, fig: Any) -> None:
    from services.quality_monitor import charts  # matplotlib: only when drawing

    fmt: charts.Format = "svg" if out.suffix.lower() == ".svg" else "png"
    data = charts.render(fig, fmt)
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data):,} bytes, {fmt.upper()})")


@charts_app.command("spc")
def chart_spc(
    provider: Annotated[str, typer.Option(help="ODS code of the provider")],
    metric: Annotated[Metric, typer.Option(help="The measure.")],
    setting: Annotated[str, typer.Option(help="FFT setting (e.g. inpatient); not used for"
                                         " complaints and GP alerts")] = ALL_SETTINGS,
    until: Annotated[str | None, typer.Option(
        callback=month, help="Last month (YYYY-MM); default: the last closed month for counts,"
        " the latest for FFT")] = None,
    out: Annotated[Path | None, typer.Option(help="File to write: .svg or .png")] = None,
    as_json: JsonOption = False,
) -> None:
    """The XmR chart of one provider's monthly series, as Making Data Count draws it: icons,
    target, rebase lines, and what the latest month shows in plain words."""
    metric = choice(metric)
    provider = provider.strip().upper()
    with_db(lambda conn: _known_provider(conn, provider))
    if metric.startswith("fft_") and setting == ALL_SETTINGS:
        raise fail("FFT measures need --setting (e.g. inpatient)")
    rules = config.load_rules(get_settings().monitor_rules_file)
    now = utc_now()
    if as_json:
        closed = lifecycle.last_closed_month(now, rules.schedule.month_close_days)

        async def rows(conn: asyncpg.Connection) -> Any:
            series = await measures.load_series(conn, provider, metric, setting, closed, until)
            rebased = await store.rebase_periods(conn, provider, metric, setting)
            return series, spc.breaks_at(series.periods, rebased)

        series, breaks = with_db(rows)
        measure = METRICS[metric]
        verdict = spc.assess(series.values, measure.concern, rules.spc.options, breaks)
        types = verdict.point_types if verdict else [None] * len(series.values)
        typer.echo(json.dumps({
            "provider": provider, "metric": metric, "setting": setting,
            "points": [{"period": p, "value": v, "type": t}
                       for p, v, t in zip(series.periods, series.values, types, strict=True)],
            "rebased_from": [series.periods[b] for b in breaks],
            "limits": [g.limits.__dict__ for g in verdict.chart.groups] if verdict else None,
            "verdict": None if verdict is None else {
                "concern": [s.test for s in verdict.concern],
                "improvement": [s.test for s in verdict.improvement]}}, indent=2))
        return
    if out is None:
        raise fail("give --out FILE.svg or FILE.png (or --json)")
    from services.quality_monitor import charts  # matplotlib: only when drawing

    drawn = with_db(lambda conn: charts.load_spc(conn, rules, now, provider, metric, setting,
                                                 until))
    if isinstance(drawn, str):
        raise fail(drawn, 1)
    _write(out, drawn)


@charts_app.command("funnel")
def chart_funnel(
    setting: Annotated[str, typer.Option(help="FFT setting (e.g. inpatient)")],
    period: Annotated[str, typer.Option(callback=month, help="Month (YYYY-MM)")],
    selected: Annotated[str | None, typer.Option(help="ODS code of a provider to label")]
    = None,
    out: Annotated[Path | None, typer.Option(help="File to write: .svg or .png")] = None,
    as_json: JsonOption = False,
) -> None:
    """The funnel plot of FFT % negative across the providers of one setting and month."""
    rules = config.load_rules(get_settings().monitor_rules_file)
    now = utc_now()
    if as_json:
        closed = period <= lifecycle.last_closed_month(now, rules.schedule.month_close_days)

        async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            return [dict(r) for r in await store.fft_period_combined(
                Batch(conn), setting, period, closed)]

        units = [funnels.Unit(r["ods_code"], r["negative"], r["responses"]) for r in with_db(work)
                 if r["responses"] >= fft.SUPPRESS_BELOW]  # 1-4 responses: suppressed
        if len(units) < 2:
            raise fail(f"{len(units)} provider(s) with FFT {setting} figures for {period}", 1)
        f = funnels.funnel(units, winsorise_by=rules.funnel.winsorise,
                   overdispersion=rules.funnel.overdispersion,
                   phi_fallback=rules.funnel.phi_fallback)
        typer.echo(json.dumps({"setting": setting, "period": period, "target": f.target,
                               "phi": f.phi, "tau2": f.tau2, "adjusted": f.adjusted,
                               "points": [p.__dict__ for p in f.points]}, default=str,
                              indent=2))
        return
    if out is None:
        raise fail("give --out FILE.svg or FILE.png (or --json)")
    from services.quality_monitor import charts  # matplotlib: only when drawing

    drawn = with_db(lambda conn: charts.load_funnel(conn, rules, now, setting, period,
                                                    selected))
    if isinstance(drawn, str):
        raise fail(drawn, 1)
    _write(out, drawn)


@measures_app.command("summary")
def measures_summary(as_json: JsonOption = False,
                     provider: Annotated[str | None, typer.Option(help="ODS code")] = None
                     ) -> None:
    """The latest month of every provider's measures with the Making Data Count variation
    and assurance icons (as a board's integrated performance report)."""
    rules = config.load_rules(get_settings().monitor_rules_file)
    rows = with_db(lambda conn: summary.load(conn, rules, utc_now(), provider))
    print_rows([r.as_dict() for r in rows], as_json,
               ["ods_code", "metric", "setting", "period", "value", "variation_words",
                "assurance_words", "target"], width=44)

def _rebase_key(metric: str, setting: str, period: str) -> None:
    if metric not in METRICS:
        raise fail(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    if metric.startswith("fft_") == (setting == ALL_SETTINGS):
        raise fail("FFT measures need --setting (e.g. inpatient); complaints and GP alerts"
                   " take --setting all")
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise fail(f"--from must be a month, YYYY-MM (got {period!r})")


REBASE_COLUMNS = ["ods_code", "metric", "setting", "period", "status", "reason", "proposed_by",
                  "decided_by", "decided_at"]


@rebases_app.command("add")
def rebases_add(provider: Provider, metric: MetricOpt, period: FromOpt,
                reason: Annotated[str, typer.Option(help="The known change (e.g. new ward"
                                                    " opened)")],
                setting: SettingOpt = ALL_SETTINGS, as_json: JsonOption = False) -> None:
    """Record a rebase: from this month on, the series has new limits (a known change)."""
    provider = provider.strip().upper()
    _rebase_key(metric, setting, period)

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        actor = await acting(conn, DECIDERS)
        return dict(await store.record_rebase(
            conn, ods_code=provider, metric=metric, setting=setting, period=period,
            reason=reason, actor=actor, at=utc_now()))

    print_rows([with_db(work)], as_json, REBASE_COLUMNS)


@rebases_app.command("list")
def rebases_list(as_json: JsonOption = False,
                 provider: Annotated[str | None, typer.Option(help="ODS code")] = None,
                 status: Annotated[str | None, typer.Option(
                     help="proposed, accepted or rejected")] = None) -> None:
    """Rebases recorded and proposed."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_rebases(conn, provider, status)]

    print_rows(with_db(work), as_json, REBASE_COLUMNS)


def _decide(provider: str, metric: str, setting: str, period: str, accept: bool,
            as_json: bool) -> None:
    provider = provider.strip().upper()
    _rebase_key(metric, setting, period)

    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        actor = await acting(conn, DECIDERS)
        row = await store.decide_rebase(conn, ods_code=provider, metric=metric, setting=setting,
                                        period=period, accept=accept, actor=actor,
                                        at=utc_now())
        return dict(row) if row else None

    row = with_db(work)
    if row is None:
        raise fail(f"no proposed rebase of {provider} {metric} ({setting}) from {period}", 1)
    print_rows([row], as_json, REBASE_COLUMNS)


@rebases_app.command("accept")
def rebases_accept(provider: Provider, metric: MetricOpt, period: FromOpt,
                   setting: SettingOpt = ALL_SETTINGS, as_json: JsonOption = False) -> None:
    """Accept the monitor's proposed rebase."""
    _decide(provider, metric, setting, period, True, as_json)


@rebases_app.command("reject")
def rebases_reject(provider: Provider, metric: MetricOpt, period: FromOpt,
                   setting: SettingOpt = ALL_SETTINGS, as_json: JsonOption = False) -> None:
    """Reject the monitor's proposed rebase (it is not proposed again)."""
    _decide(provider, metric, setting, period, False, as_json)
