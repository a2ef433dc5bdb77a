"""quality-monitor's operator commands: concerns, improvements, and charts for people."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from services.cli.common import JsonOption, fail, print_record, print_rows, with_db
from services.quality_monitor import charts, store
from services.quality_monitor.config import load_rules
from services.quality_monitor.funnel import Unit, funnel
from services.quality_monitor.lifecycle import last_closed_month
from services.quality_monitor.series import (
    ALL_SETTINGS,
    COUNTED_KINDS,
    METRICS,
    Series,
    count_series,
    fft_series,
    month_start,
    shift_month,
)
from services.quality_monitor.spc import assess
from shared.settings import get_settings

concerns_app = typer.Typer(help="Concerns raised by quality-monitor.", no_args_is_help=True)
improvements_app = typer.Typer(help="Special-cause improvement seen by quality-monitor.",
                               no_args_is_help=True)
charts_app = typer.Typer(help="SPC charts and funnel plots (PNG) from quality-monitor's data.",
                         no_args_is_help=True)
COMMAND_GROUPS = {"concerns": concerns_app, "improvements": improvements_app,
                  "charts": charts_app}


@concerns_app.command("list")
def concerns_list(as_json: JsonOption = False,
                  status: Annotated[str, typer.Option(help="open, resolved or all")] = "open"
                  ) -> None:
    """Concerns, newest first."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_concerns(conn, None if status == "all" else status)]

    print_rows(with_db(work), as_json,
               ["concern_id", "ods_code", "rule", "theme", "severity", "status", "raised_at"])


@concerns_app.command("show")
def concerns_show(concern_id: uuid.UUID) -> None:
    """One concern with its rule, figures and evidence."""
    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        row = await conn.fetchrow("SELECT * FROM monitor.concerns WHERE concern_id = $1",
                                  concern_id)
        return dict(row) if row else None

    row = with_db(work)
    if row is None:
        raise fail(f"no concern {concern_id}", 1)
    print_record(row)


@improvements_app.command("list")
def improvements_list(as_json: JsonOption = False,
                      provider: Annotated[str | None, typer.Option(help="ODS code")] = None
                      ) -> None:
    """Special-cause improvement by provider, measure and month, newest first."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_improvements(conn, provider)]

    print_rows(with_db(work), as_json,
               ["ods_code", "metric", "setting", "period", "value", "recorded_at"])


async def load_series(conn: asyncpg.Connection, ods_code: str, metric: str, setting: str,
                      until: str) -> Series:
    """The monthly series quality-monitor judges, from its own tables."""
    if metric in COUNTED_KINDS:
        rows = await store.feedback_dates(conn, ods_code, COUNTED_KINDS[metric],
                                          month_start(shift_month(until, 1)))
        return count_series([(r["feedback_id"], r["occurred_on"]) for r in rows], until)
    rows = [r for r in await store.fft_series(conn, ods_code, setting) if r["period"] <= until]
    return fft_series(rows, metric)


def _write(out: Path, png: bytes) -> None:
    out.write_bytes(png)
    typer.echo(f"wrote {out} ({len(png):,} bytes)")


@charts_app.command("spc")
def chart_spc(
    provider: Annotated[str, typer.Option(help="ODS code of the provider")],
    metric: Annotated[str, typer.Option(help="fft_negative, fft_positive, complaints or"
                                        " gp_alerts")],
    setting: Annotated[str, typer.Option(help="FFT setting (e.g. inpatient); not used for"
                                         " complaints and GP alerts")] = ALL_SETTINGS,
    until: Annotated[str | None, typer.Option(help="Last month (YYYY-MM); default: the last"
                                              " closed month for counts, the latest for FFT")]
    = None,
    out: Annotated[Path | None, typer.Option(help="PNG file to write")] = None,
    as_json: JsonOption = False,
) -> None:
    """The XmR chart of one provider's monthly series, as Making Data Count draws it."""
    if metric not in METRICS:
        raise fail(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    if metric.startswith("fft_") and setting == ALL_SETTINGS:
        raise fail("FFT measures need --setting (e.g. inpatient)")
    rules = load_rules(get_settings().monitor_rules_file)
    last = until or (last_closed_month(datetime.now(UTC), rules.schedule.month_close_days)
                     if metric in COUNTED_KINDS else "9999-12")
    measure = METRICS[metric]

    async def work(conn: asyncpg.Connection) -> tuple[Series, str]:
        ref = await store.provider_ref(conn, provider)
        return (await load_series(conn, provider, metric, setting, last),
                ref.name if ref else provider)

    series, name = with_db(work)
    verdict = assess(series.values, measure.concern, rules.spc.options)
    if as_json:
        types = verdict.point_types if verdict else [None] * len(series.values)
        typer.echo(json.dumps({
            "provider": provider, "metric": metric, "setting": setting,
            "points": [{"period": p, "value": v, "type": t}
                       for p, v, t in zip(series.periods, series.values, types, strict=True)],
            "limits": verdict.chart.limits.__dict__ if verdict else None,
            "verdict": None if verdict is None else {
                "concern": [s.test for s in verdict.concern],
                "improvement": [s.test for s in verdict.improvement]}}, indent=2))
        return
    if verdict is None:
        raise fail(f"{len(series.values)} months of {measure.label} for {provider}: at least"
                   f" {rules.spc.min_points} are needed for a chart", 1)
    if out is None:
        raise fail("give --out FILE.png (or --json)")
    _write(out, charts.spc_png(f"{name} ({provider}): {measure.theme(setting)}",
                               series.periods, verdict.chart, measure.concern,
                               y_label=measure.label, percent=measure.percent))


@charts_app.command("funnel")
def chart_funnel(
    setting: Annotated[str, typer.Option(help="FFT setting (e.g. inpatient)")],
    period: Annotated[str, typer.Option(help="Month (YYYY-MM)")],
    out: Annotated[Path | None, typer.Option(help="PNG file to write")] = None,
    as_json: JsonOption = False,
) -> None:
    """The funnel plot of FFT % negative across the providers of one setting and month."""
    rules = load_rules(get_settings().monitor_rules_file)

    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.fft_period(conn, setting, period)]

    units = [Unit(r["ods_code"], r["negative"], r["responses"]) for r in with_db(work)
             if r["responses"] > 0]
    if len(units) < 2:
        raise fail(f"{len(units)} provider(s) with FFT {setting} returns for {period}", 1)
    f = funnel(units, winsorise_by=rules.funnel.winsorise,
               overdispersion=rules.funnel.overdispersion)
    if as_json:
        typer.echo(json.dumps({"setting": setting, "period": period, "target": f.target,
                               "phi": f.phi, "tau2": f.tau2,
                               "points": [p.__dict__ for p in f.points]}, default=str, indent=2))
        return
    if out is None:
        raise fail("give --out FILE.png (or --json)")
    _write(out, charts.funnel_png(f"FFT % negative, {setting}, {period}", f))
