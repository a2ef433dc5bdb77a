"""The verdicts on the measures: a provider's monthly series (SPC) and the funnel of the
providers of one setting and month (peer outlier).

Pure functions over plain data (``handling.py``'s ``handling_verdicts`` is the model): the
monitor loads the series or the month's figures, asks for the verdict here, stores it and
publishes what it raised or resolved. Both are signals of the provider's one concern per
measure family (see ``store.raise_signal``).

- ``series_verdict``: the latest month of one series. Special cause in the direction of
  concern raises (or adds to) the signal; improvement is noted; enough months of common
  cause clear the signal; a sustained shift proposes a rebase (a person accepts it).
- ``month_funnel`` and ``funnel_verdicts``: the funnel of FFT % negative across providers;
  above the 99.8% limit in the month judged raises the signal, within the limit for the
  latest ``resolve_after_periods`` months clears it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.quality_monitor import fft, spc
from services.quality_monitor.config import FunnelRules, SpcRules
from services.quality_monitor.funnel import Z95, Z998, Band, Funnel, Unit, funnel
from services.quality_monitor.lifecycle import outlier_resolved, spc_resolved
from services.quality_monitor.series import ALL_SETTINGS, Metric, month_start
from shared.events import Evidence, Severity

SPC_RULE = "spc_special_cause"
FUNNEL_RULE = "peer_outlier"
FUNNEL_SIGNAL = "funnel:fft_negative"
METRIC_FAMILY = {"complaints": "complaints", "gp_alerts": "GP alerts"}


def family_of(metric: str, setting: str) -> str:
    """The measure family of a metric: FFT in one setting, complaints, or GP alerts."""
    return METRIC_FAMILY.get(metric) or f"FFT: {setting}"


@dataclass(frozen=True)
class RaiseSignal:
    """Raise (or add to) the signal ``signal`` of the provider's concern on ``family``."""

    family: str
    signal: str
    rule: str
    severity: Severity
    reason: str
    figures: dict[str, Any]
    evidence: list[Evidence]


@dataclass(frozen=True)
class ClearSignal:
    """The signal is back to common cause (its concern resolves when it was the last)."""

    family: str
    signal: str
    why: str


# -- SPC ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RebaseProposal:
    period: str  # the first month of the new group
    reason: str


@dataclass(frozen=True)
class Improvement:
    """Special-cause improvement at the latest month, to note."""

    period: str
    value: float
    signals: list[dict[str, Any]]
    figures: dict[str, Any]


@dataclass(frozen=True)
class SeriesVerdict:
    rebase: RebaseProposal | None
    improvement: Improvement | None
    signal: RaiseSignal | ClearSignal | None


def signals_json(signals: Sequence[spc.Signal], periods: Sequence[str]) -> list[dict[str, Any]]:
    return [{"test": s.test, "direction": s.direction.value,
             "periods": [periods[i] for i in s.points]} for s in signals]


def rebase_proposal(chart: spc.Chart, periods: Sequence[str],
                    min_run: int | None) -> RebaseProposal | None:
    """After a sustained shift (``min_run`` months on one side of the mean, to the latest),
    a rebase from its first month; None when there is none, or ``min_run`` is None."""
    start = None if min_run is None else spc.rebase_proposal(chart, min_run)
    if start is None:
        return None
    side = "above" if chart.values[start] > chart.group_of(start).limits.mean else "below"
    run = len(periods) - start
    return RebaseProposal(periods[start], f"sustained shift: {run} months in a row {side} the"
                                          f" mean from {periods[start]} to {periods[-1]}")


def series_verdict(spc_rules: SpcRules, metric: Metric, setting: str, provider_name: str,
                   periods: Sequence[str], values: Sequence[float],
                   evidence: Sequence[Sequence[Evidence]],
                   rebased: Sequence[str]) -> SeriesVerdict | None:
    """The verdict on the latest month of one series (``periods`` oldest first, ``values``
    and ``evidence`` per month; ``rebased``: the months starting accepted rebases). None:
    no verdict (the metric is not judged, or too few points in the latest group)."""
    metric_rules = spc_rules.metric(metric.name)
    breaks = spc.breaks_at(periods, rebased)
    verdict = spc.assess(values, metric.concern, spc_rules.options, breaks)
    if verdict is None or metric_rules is None:
        return None
    rebase = rebase_proposal(verdict.chart, periods, spc_rules.propose_rebase_after_run)
    lim = verdict.chart.limits
    unit = "%" if metric.percent else ""
    figures: dict[str, Any] = {
        "metric": metric.name, "setting": setting, "period": periods[-1],
        "value": round(values[-1], 3), "mean": round(lim.mean, 3),
        "lower_limit": round(lim.lower, 3), "upper_limit": round(lim.upper, 3),
        "mr_bar": round(lim.mr_bar, 3), "points": len(values),
        "rebased_from": [periods[b] for b in breaks],
        "series": [[p, round(v, 3)] for p, v in zip(periods, values, strict=True)]}
    improvement = None if not verdict.improvement else Improvement(
        periods[-1], values[-1], signals_json(verdict.improvement, periods), dict(figures))
    family, signal = family_of(metric.name, setting), f"spc:{metric.name}"
    if verdict.concern:
        flagged = sorted({i for s in verdict.concern for i in s.points})
        reason = (f"{metric.label}{'' if setting == ALL_SETTINGS else f' ({setting})'} at"
                  f" {provider_name}: special cause variation of concern in {periods[-1]}"
                  f" ({spc.describe(verdict.concern)}); latest {values[-1]:.1f}{unit}, mean"
                  f" {lim.mean:.1f}{unit}, process limits {lim.lower:.1f}{unit} to"
                  f" {lim.upper:.1f}{unit} over {len(values)} months")
        return SeriesVerdict(rebase, improvement, RaiseSignal(
            family, signal, SPC_RULE, metric_rules.severity, reason,
            {**figures, "signals": signals_json(verdict.concern, periods)},
            [e for i in flagged for e in evidence[i]]))
    tail = verdict.common_cause_tail()
    cleared = None if not spc_resolved(tail, spc_rules.resolve_after_common_cause_points) \
        else ClearSignal(family, signal, f"signal returned to common cause: no special cause of"
                                         f" concern in the latest {tail} months of"
                                         f" {metric.theme(setting)} (to {periods[-1]})")
    return SeriesVerdict(rebase, improvement, cleared)


# -- funnel -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunnelFigures:
    """One provider's FFT totals for a setting and month, with the feedback behind them."""

    ods_code: str
    negative: int
    responses: int
    feedback_ids: tuple[uuid.UUID, ...] = ()
    source: str = "return"  # or "responses"


def month_funnel(figures: Sequence[FunnelFigures], cfg: FunnelRules) -> Funnel | None:
    """The funnel of the providers with enough responses to show (1-4 are suppressed); None
    when fewer than ``min_providers`` have."""
    shown = [f for f in figures if f.responses >= fft.SUPPRESS_BELOW]
    if len(shown) < cfg.min_providers:
        return None
    return funnel([Unit(f.ods_code, f.negative, f.responses) for f in shown],
                  winsorise_by=cfg.winsorise, overdispersion=cfg.overdispersion,
                  phi_fallback=cfg.phi_fallback)


def funnel_verdicts(f: Funnel, figures: Sequence[FunnelFigures], setting: str, period: str,
                    names: Mapping[str, str], history: Mapping[str, Sequence[tuple[str, str]]],
                    cfg: FunnelRules) -> list[tuple[str, RaiseSignal | ClearSignal]]:
    """(ODS code, verdict) for each provider on the funnel ``f`` of ``setting`` in
    ``period``, in the order of ``figures``. ``names``: the providers known (by ODS code);
    ``history``: each one's (period, band) on this setting's funnels, newest first (this
    month's included)."""
    verdicts: list[tuple[str, RaiseSignal | ClearSignal]] = []
    family = family_of("fft_negative", setting)
    for r in figures:
        point = f.point(r.ods_code)
        name = names.get(r.ods_code)
        if point is None or name is None:
            continue
        past = history.get(r.ods_code, [])
        if point.band is Band.ABOVE_998 and past[0][0] == period:
            low, high = f.limits(point.n, Z998)
            reason = (f"FFT % negative ({setting}) at {name} in {period} is"
                      f" {100 * point.proportion:.1f}% of {point.n} responses, above the upper"
                      f" 99.8% limit of {100 * high:.1f}% around the {len(f.points)}-provider"
                      f" average of {100 * f.target:.1f}%: further from the average than"
                      " chance explains"
                      + (", even allowing for how much providers differ (overdispersion)"
                         if f.adjusted and f.tau2 > 0 else ""))
            numbers = {"setting": setting, "period": period, "events": point.events,
                       "responses": point.n, "proportion": round(point.proportion, 5),
                       "target": round(f.target, 5), "z": round(point.z, 3),
                       "z_adjusted": round(point.z_adjusted, 3),
                       "upper_998": round(high, 5), "lower_998": round(low, 5),
                       "upper_95": round(f.limits(point.n, Z95)[1], 5),
                       "phi": round(f.phi, 4), "tau2": round(f.tau2, 6),
                       "providers": len(f.points), "band": point.band.value}
            verdicts.append((r.ods_code, RaiseSignal(
                family, FUNNEL_SIGNAL, FUNNEL_RULE, cfg.severity, reason, numbers,
                [Evidence(feedback_id=fid, kind="fft_monthly" if r.source == "return"
                          else "fft_response", occurred_on=month_start(period),
                          matched=f"{100 * point.proportion:.1f}% negative in {period}")
                 for fid in r.feedback_ids])))
            continue
        flags = [band == Band.ABOVE_998.value for _, band in past]
        if outlier_resolved(flags, cfg.resolve_after_periods):
            verdicts.append((r.ods_code, ClearSignal(
                family, FUNNEL_SIGNAL,
                f"signal returned to common cause: within the upper 99.8% limit of the"
                f" {setting} funnel in the latest {cfg.resolve_after_periods} months"
                f" (to {period})")))
    return verdicts
