"""Charts as data for an inline SVG (pure): the template draws the bars, and shows the same
figures as a table, so the chart has a text alternative."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

WIDTH, HEIGHT, MARGIN = 640, 220, 30


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class BarChart:
    title: str
    description: str
    bars: tuple[Bar, ...]
    width: int = WIDTH
    height: int = HEIGHT
    baseline: float = HEIGHT - MARGIN


def months(first: date, n: int) -> list[date]:
    out, y, m = [], first.year, first.month
    for _ in range(n):
        out.append(date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def window_start(today: date, n: int) -> date:
    """The first month of the ``n`` months that end with ``today``'s."""
    index = today.year * 12 + today.month - 1 - (n - 1)
    return date(index // 12, index % 12 + 1, 1)


def monthly_bars(rows: list[dict[str, Any]], first: date, n: int, *, title: str) -> BarChart:
    """One bar per month from ``first`` (``rows``: month, n), months without rows at 0."""
    counts = {r["month"]: int(r["n"]) for r in rows}
    values = [(m, counts.get(m, 0)) for m in months(first, n)]
    top = max([v for _, v in values] + [1])
    slot = (WIDTH - 2 * MARGIN) / n
    plot = HEIGHT - 2 * MARGIN
    bars = tuple(
        Bar(m.strftime("%b %Y"), v, MARGIN + i * slot + slot * 0.15,
            HEIGHT - MARGIN - plot * v / top, slot * 0.7, plot * v / top)
        for i, (m, v) in enumerate(values))
    total = sum(v for _, v in values)
    busiest = max(values, key=lambda mv: mv[1])
    description = (f"{total} concern(s) in the {n} months from {values[0][0]:%B %Y};"
                   + (f" most in {busiest[0]:%B %Y} ({busiest[1]})." if total else " none."))
    return BarChart(title, description, bars)


# -- Making Data Count: the XmR chart and the funnel position of a provider's measures --------
@dataclass(frozen=True)
class Point:
    label: str
    value: float
    x: float
    y: float
    special: bool  # part of a special-cause signal


@dataclass(frozen=True)
class XmrChart:
    """An XmR (SPC) chart: the series, its mean and process limits, the points of signals."""

    title: str
    description: str
    points: tuple[Point, ...]
    mean: float
    lower: float
    upper: float
    mean_y: float
    lower_y: float
    upper_y: float
    line: str  # the polyline's points
    width: int = WIDTH
    height: int = HEIGHT


def xmr(figures: dict[str, Any], title: str) -> XmrChart | None:
    """The chart of an SPC signal's figures (quality-monitor's ``series``, ``mean``,
    ``lower_limit``, ``upper_limit``, ``signals``), or None without a series (pure)."""
    series = [(str(p), float(v)) for p, v in figures.get("series") or []]
    if not series:
        return None
    mean, lower, upper = (float(figures[k]) for k in ("mean", "lower_limit", "upper_limit"))
    special = {p for s in figures.get("signals") or [] for p in s.get("periods", [])}
    top = max([v for _, v in series] + [upper])
    bottom = min([v for _, v in series] + [lower])
    span = (top - bottom) or 1.0
    plot, slot = HEIGHT - 2 * MARGIN, (WIDTH - 2 * MARGIN) / max(len(series) - 1, 1)

    def y(value: float) -> float:
        return round(HEIGHT - MARGIN - plot * (value - bottom) / span, 1)

    points = tuple(Point(p, v, round(MARGIN + i * slot, 1), y(v), p in special)
                   for i, (p, v) in enumerate(series))
    flagged = [p.label for p in points if p.special]
    description = (f"{len(series)} months from {series[0][0]} to {series[-1][0]}; latest"
                   f" {series[-1][1]:g}, mean {mean:g}, process limits {lower:g} to {upper:g}; "
                   + (f"special cause in {', '.join(flagged)}." if flagged
                      else "common cause variation only."))
    return XmrChart(title, description, points, mean, lower, upper, y(mean), y(lower), y(upper),
                    " ".join(f"{p.x},{p.y}" for p in points))


def measure_signals(concerns: list[dict[str, Any]]) -> tuple[list[XmrChart], list[dict[str, Any]]]:
    """From a provider's ``measure_signals`` concerns, newest first: the XmR chart of each SPC
    signal and the funnel position of each peer comparison, the newest of each (pure)."""
    charts: dict[str, XmrChart] = {}
    funnels: dict[str, dict[str, Any]] = {}
    for concern in concerns:
        for key, signal in (concern.get("figures") or {}).get("signals", {}).items():
            figures = signal.get("figures") or {}
            name = f"{key}:{figures.get('setting', 'all')}"
            if signal.get("rule") == "spc_special_cause" and name not in charts:
                metric = str(figures.get("metric", key)).replace("_", " ")
                chart = xmr(figures, f"{metric.capitalize()} ({figures.get('setting', 'all')}),"
                                     " each month, with its mean and process limits")
                if chart is not None:
                    charts[name] = chart
            elif signal.get("rule") == "peer_outlier" and name not in funnels:
                funnels[name] = figures
    return list(charts.values()), list(funnels.values())
