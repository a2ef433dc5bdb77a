"""The monthly series quality-monitor charts, and calendar months as plain strings (YYYY-MM)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from services.quality_monitor.fft import Month
from services.quality_monitor.spc import Direction

ALL_SETTINGS = "all"  # complaints and GP alerts are counted across settings


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    concern: Direction  # the way that is a concern; the other way is an improvement
    percent: bool = False

    def theme(self, setting: str) -> str:
        """The concern theme: what is measured, and where."""
        return self.label if setting == ALL_SETTINGS else f"{self.label}: {setting}"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fft_negative", "FFT % negative", Direction.UP, percent=True),
    Metric("fft_positive", "FFT % positive", Direction.DOWN, percent=True),
    Metric("complaints", "complaints per month", Direction.UP),
    Metric("gp_alerts", "GP alerts per month", Direction.UP),
)}
COUNTED_KINDS = {"complaints": "complaint", "gp_alerts": "gp_alert"}


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_start(month: str) -> date:
    year, mon = map(int, month.split("-"))
    return date(year, mon, 1)


def shift_month(month: str, n: int) -> str:
    year, mon = map(int, month.split("-"))
    year, index = divmod(year * 12 + mon - 1 + n, 12)
    return f"{year:04d}-{index + 1:02d}"


def month_range(first: str, last: str) -> list[str]:
    """Every month from ``first`` to ``last`` inclusive (empty if last < first)."""
    out: list[str] = []
    current = first
    while current <= last:
        out.append(current)
        current = shift_month(current, 1)
    return out


def contiguous_tail(months: Iterable[str]) -> list[str]:
    """The consecutive months that end at the latest one (a gap ends the series: an XmR chart
    needs every month)."""
    ordered = sorted(set(months))
    if not ordered:
        return []
    tail = [ordered[-1]]
    for m in reversed(ordered[:-1]):
        if m != shift_month(tail[-1], -1):
            break
        tail.append(m)
    return tail[::-1]


def counts_by_month(days: Sequence[date], first: str, last: str) -> list[int]:
    """How many of ``days`` fall in each month from ``first`` to ``last`` (zeros included)."""
    months = month_range(first, last)
    index = {m: i for i, m in enumerate(months)}
    counts = [0] * len(months)
    for d in days:
        i = index.get(month_of(d))
        if i is not None:
            counts[i] += 1
    return counts


def percent(part: int, whole: int) -> float | None:
    return None if whole <= 0 else 100 * part / whole


@dataclass(frozen=True)
class Series:
    """A monthly series ready for an XmR chart, with the feedback behind each month."""

    periods: list[str]
    values: list[float]
    feedback: list[list[tuple[uuid.UUID, date]]]


def fft_month_series(months: Sequence[Month], metric: str,
                     feedback: Mapping[str, list[tuple[uuid.UUID, date]]]) -> Series:
    """FFT % negative or % positive from combined months (:func:`fft.combine`), over the
    consecutive months that end at the latest. A month with 1-4 responses is suppressed: left
    out of the chart, but it does not break the run of months. ``feedback``: the items behind
    each month (by period)."""
    by_period = {m.period: m for m in months if m.counts.responses > 0}
    periods = [p for p in contiguous_tail(by_period) if not by_period[p].counts.suppressed]
    return Series(periods, [by_period[p].counts.percent(metric) or 0.0 for p in periods],
                  [list(feedback.get(p, [])) for p in periods])


def count_series(items: Sequence[tuple[uuid.UUID, date]], last_month: str) -> Series:
    """Items per month from the month of the first item to ``last_month`` (empty months 0)."""
    dated = sorted((d, f) for f, d in items if month_of(d) <= last_month)
    if not dated:
        return Series([], [], [])
    periods = month_range(month_of(dated[0][0]), last_month)
    index = {p: i for i, p in enumerate(periods)}
    feedback: list[list[tuple[uuid.UUID, date]]] = [[] for _ in periods]
    for d, f in dated:
        feedback[index[month_of(d)]].append((f, d))
    return Series(periods, [float(len(x)) for x in feedback], feedback)
