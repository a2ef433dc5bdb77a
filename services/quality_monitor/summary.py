"""The Making Data Count summary: the latest point of every provider's measures with its
variation icon and assurance icon, as a board's integrated performance report shows them.

``row`` is pure (a series in, a row out); ``load`` reads quality-monitor's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.quality_monitor import spc, store
from services.quality_monitor.config import MonitorRules
from services.quality_monitor.lifecycle import last_closed_month
from services.quality_monitor.measures import load_series
from services.quality_monitor.series import ALL_SETTINGS, COUNTED_KINDS, METRICS, Series
from shared.groupcommit import Batch

VARIATION_WORDS = {
    "common_cause": "common cause",
    "concern_high": "special cause: concern (high)",
    "concern_low": "special cause: concern (low)",
    "improvement_high": "special cause: improvement (high)",
    "improvement_low": "special cause: improvement (low)",
}
ASSURANCE_WORDS = {
    spc.Assurance.PASS: "consistently passes the target",
    spc.Assurance.FAIL: "consistently fails the target",
    spc.Assurance.HIT_AND_MISS: "hit and miss: passes or fails by chance",
}


@dataclass(frozen=True)
class Row:
    ods_code: str
    provider: str
    metric: str
    setting: str
    period: str
    value: str  # as a person may see it (suppression applied)
    points: int
    mean: float
    lower: float
    upper: float
    variation: str  # icon name (NHSRplotthedots' file names)
    variation_words: str
    assurance: str | None
    assurance_words: str | None
    target: float | None
    rebased_from: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def row(ods_code: str, provider: str, metric: str, setting: str, series: Series,
        options: spc.SpcOptions, breaks: Sequence[int], target: float | None) -> Row | None:
    """The summary row of one series: None when there are too few points for a chart."""
    measure = METRICS[metric]
    verdict = spc.assess(series.values, measure.concern, options, breaks)
    if verdict is None:
        return None
    lim = verdict.chart.limits
    icon = spc.variation_icon(verdict.point_types[-1], measure.concern)
    assurance = spc.assurance(lim, target, measure.concern)
    value = series.values[-1]
    shown = f"{value:.1f}%" if measure.percent else f"{value:.0f}"
    return Row(ods_code, provider, metric, setting, series.periods[-1], shown,
               len(series.values), round(lim.mean, 3), round(lim.lower, 3), round(lim.upper, 3),
               icon, VARIATION_WORDS[icon], assurance and assurance.value,
               assurance and ASSURANCE_WORDS[assurance], target,
               [series.periods[b] for b in breaks])


async def load(conn: asyncpg.Connection, rules: MonitorRules, now: datetime,
               ods_code: str | None = None) -> list[Row]:
    """Every provider's measures (or one provider's), latest point each, sorted."""
    closed = last_closed_month(now, rules.schedule.month_close_days)
    names = {r["ods_code"]: r["provider"]["name"] for r in await conn.fetch(
        "SELECT ods_code, provider FROM monitor.providers")}
    wanted: list[tuple[str, str, str]] = []
    for r in await conn.fetch(
            "SELECT DISTINCT ods_code, setting FROM monitor.fft_months UNION SELECT DISTINCT"
            " ods_code, content->>'setting' FROM monitor.feedback WHERE kind = 'fft_response'"):
        wanted += [(r["ods_code"], m, r["setting"]) for m in ("fft_negative", "fft_positive")]
    for metric, kind in COUNTED_KINDS.items():
        wanted += [(o, metric, ALL_SETTINGS) for o in await store.providers_with(Batch(conn), [kind])]
    out = []
    for ods, metric, setting in sorted(set(wanted)):
        if (ods_code and ods != ods_code) or rules.spc.metric(metric) is None:
            continue
        series = await load_series(conn, ods, metric, setting, closed)
        rebased = await store.rebase_periods(conn, ods, metric, setting)
        r = row(ods, names.get(ods, ods), metric, setting, series, rules.spc.options,
                spc.breaks_at(series.periods, rebased), rules.spc.target(metric, setting))
        if r is not None:
            out.append(r)
    return out

