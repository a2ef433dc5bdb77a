"""Statistical process control of monthly series: NHS England "Making Data Count" XmR charts.

Pure functions over a list of values (oldest first). The calculation follows the NHS-R
community's plot-the-dots implementation (NHSRplotthedots, ``ptd_spc_standard`` and
``ptd_calculate_point_type``):

- centre line: the mean; moving ranges |x[i] - x[i-1]|, their mean MR̄; when
  ``screen_outliers`` (the default, as in Making Data Count), moving ranges of 3.267 × MR̄ or
  more are left out and MR̄ is recalculated;
- process limits: mean ± 2.66 × MR̄ (3σ); the "near" limits at mean ± (2/3)·2.66·MR̄ (2σ);
- with ``fix_after`` the mean and MR̄ come from the first ``fix_after`` points (a baseline)
  and later points are judged against them; otherwise from every point;
- fewer than ``min_points`` (12) points: no verdict at all.

Special-cause tests, each a :class:`Signal` with a direction and the points it covers:

- ``beyond_limits``: a point above the upper or below the lower process limit;
- ``run``: 7 or more consecutive points on one side of the mean; a point ON the mean breaks
  the run;
- ``trend``: 7 or more consecutive points each higher (or each lower) than the one before;
  a tie (equal neighbours) breaks the trend;
- ``two_of_three``: 2 of 3 consecutive points beyond the same 2σ line (mean ± (2/3)·2.66·MR̄),
  on one side. A point beyond the process limit is also beyond 2σ and counts; the third
  point of the three may be anywhere. (NHSRplotthedots counts only points between 2σ and 3σ
  and requires all three on one side; the two agree on its published cases.)

A run, beyond-limits and two-of-three signal points the way of its side of the mean; a trend
points the way it moves (NHSRplotthedots colours a trend by its side of the mean instead).
Whether a direction is a concern or an improvement depends on the measure: for FFT % negative,
complaints and GP alerts, up is a concern; for FFT % positive, down is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import fmean

LIMIT = 2.66  # 3σ in units of MR̄ (3 / d2, d2 = 1.128)
NEAR_LIMIT = 2 * LIMIT / 3  # 2σ
MR_SCREEN = 3.267  # upper range limit (D4 × MR̄): moving ranges at or above it are outliers
MIN_POINTS = 12
RUN_LENGTH = 7
TREND_LENGTH = 7


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"

    @property
    def opposite(self) -> Direction:
        return Direction.DOWN if self is Direction.UP else Direction.UP


class PointType(StrEnum):
    """Making Data Count's variation icons, per point."""

    COMMON_CAUSE = "common_cause"
    CONCERN = "special_cause_concern"
    IMPROVEMENT = "special_cause_improvement"


@dataclass(frozen=True)
class Limits:
    mean: float
    lower: float
    upper: float
    near_lower: float
    near_upper: float
    mr_bar: float
    baseline_points: int
    screened_ranges: int = 0  # moving ranges left out as outliers


@dataclass(frozen=True)
class Signal:
    """One special-cause test that fired: which, which way, on which points (indices)."""

    test: str
    direction: Direction
    points: tuple[int, ...]


@dataclass(frozen=True)
class Chart:
    """An XmR chart of a series: its limits and every special-cause signal in it."""

    values: tuple[float, ...]
    limits: Limits
    signals: tuple[Signal, ...]

    def point_types(self, concern: Direction) -> list[PointType]:
        """Each point's variation: concern if any concern-direction signal covers it, else
        improvement if an improvement signal does, else common cause."""
        types = [PointType.COMMON_CAUSE] * len(self.values)
        for sig in self.signals:
            for i in sig.points:
                if sig.direction is concern:
                    types[i] = PointType.CONCERN
                elif types[i] is PointType.COMMON_CAUSE:
                    types[i] = PointType.IMPROVEMENT
        return types

    def signals_at(self, index: int, direction: Direction) -> list[Signal]:
        """The signals of one direction that cover point ``index`` (negative counts back)."""
        i = index % len(self.values)
        return [s for s in self.signals if s.direction is direction and i in s.points]


def limits(values: Sequence[float], *, screen_outliers: bool = True) -> Limits:
    """Mean, MR̄ and the 2σ / 3σ lines of ``values`` (at least two points)."""
    if len(values) < 2:
        raise ValueError("an XmR chart needs at least two points")
    mean = fmean(values)
    ranges = [abs(b - a) for a, b in itertools.pairwise(values)]
    mr_bar = fmean(ranges)
    screened = 0
    if screen_outliers:
        kept = [r for r in ranges if r < MR_SCREEN * mr_bar]
        screened = len(ranges) - len(kept)
        if kept:
            mr_bar = fmean(kept)
    return Limits(mean=mean, lower=mean - LIMIT * mr_bar, upper=mean + LIMIT * mr_bar,
                  near_lower=mean - NEAR_LIMIT * mr_bar, near_upper=mean + NEAR_LIMIT * mr_bar,
                  mr_bar=mr_bar, baseline_points=len(values), screened_ranges=screened)


def _side(value: float, mean: float) -> int:
    return (value > mean) - (value < mean)


def beyond_limits(values: Sequence[float], lim: Limits) -> list[Signal]:
    out: list[Signal] = []
    for i, v in enumerate(values):
        if v > lim.upper:
            out.append(Signal("beyond_limits", Direction.UP, (i,)))
        elif v < lim.lower:
            out.append(Signal("beyond_limits", Direction.DOWN, (i,)))
    return out


def runs(values: Sequence[float], mean: float, length: int = RUN_LENGTH) -> list[Signal]:
    """Maximal stretches of ``length`` or more points on one side of the mean."""
    out: list[Signal] = []
    start = 0
    sides = [_side(v, mean) for v in values]
    for i in range(1, len(values) + 1):
        if i == len(values) or sides[i] != sides[start]:
            if sides[start] != 0 and i - start >= length:
                direction = Direction.UP if sides[start] > 0 else Direction.DOWN
                out.append(Signal("run", direction, tuple(range(start, i))))
            start = i
    return out


def trends(values: Sequence[float], length: int = TREND_LENGTH) -> list[Signal]:
    """Maximal stretches of ``length`` or more points each strictly above (or below) the one
    before; equal neighbours end a trend."""
    out: list[Signal] = []
    steps = [_side(b, a) for a, b in itertools.pairwise(values)]
    start = 0  # index into steps
    for i in range(1, len(steps) + 1):
        if i == len(steps) or steps[i] != steps[start]:
            if steps[start] != 0 and i - start + 1 >= length:
                direction = Direction.UP if steps[start] > 0 else Direction.DOWN
                out.append(Signal("trend", direction, tuple(range(start, i + 1))))
            start = i
    return out


def two_of_three(values: Sequence[float], lim: Limits) -> list[Signal]:
    """Two of three consecutive points beyond the same 2σ line."""
    found: dict[tuple[Direction, tuple[int, ...]], None] = {}
    for start in range(len(values) - 2):
        window = range(start, start + 3)
        for direction, beyond in ((Direction.UP, lambda v: v > lim.near_upper),
                                  (Direction.DOWN, lambda v: v < lim.near_lower)):
            points = tuple(i for i in window if beyond(values[i]))
            if len(points) >= 2:
                found[(direction, points)] = None
    return [Signal("two_of_three", d, p) for d, p in found]


@dataclass(frozen=True)
class SpcOptions:
    min_points: int = MIN_POINTS
    fix_after: int | None = None
    screen_outliers: bool = True
    run_length: int = RUN_LENGTH
    trend_length: int = TREND_LENGTH


def chart(values: Sequence[float], options: SpcOptions = SpcOptions()) -> Chart | None:
    """The XmR chart of ``values`` with its signals, or None below ``min_points`` points."""
    if len(values) < max(options.min_points, 2):
        return None
    baseline = values[: options.fix_after] if options.fix_after else values
    lim = limits(baseline, screen_outliers=options.screen_outliers)
    signals = [*beyond_limits(values, lim), *runs(values, lim.mean, options.run_length),
               *trends(values, options.trend_length), *two_of_three(values, lim)]
    return Chart(tuple(values), lim, tuple(signals))


@dataclass(frozen=True)
class Verdict:
    """What the latest point of a series says, for a measure whose ``concern`` way is known."""

    chart: Chart
    concern_direction: Direction
    concern: list[Signal] = field(default_factory=list)  # concern signals covering the latest
    improvement: list[Signal] = field(default_factory=list)

    @property
    def point_types(self) -> list[PointType]:
        return self.chart.point_types(self.concern_direction)

    def common_cause_tail(self) -> int:
        """How many of the latest points in a row carry no concern signal."""
        n = 0
        for t in reversed(self.point_types):
            if t is PointType.CONCERN:
                break
            n += 1
        return n


def assess(values: Sequence[float], concern: Direction,
           options: SpcOptions = SpcOptions()) -> Verdict | None:
    """Judge the latest point of ``values``; None when there are too few points for a verdict."""
    c = chart(values, options)
    if c is None:
        return None
    return Verdict(c, concern, concern=c.signals_at(-1, concern),
                   improvement=c.signals_at(-1, concern.opposite))


def describe(signals: Sequence[Signal]) -> str:
    """Plain words for the quality team, e.g. "a point above the upper limit; a run of 8"."""
    words = []
    for s in signals:
        way = "above" if s.direction is Direction.UP else "below"
        if s.test == "beyond_limits":
            words.append(f"a point {way} the {'upper' if way == 'above' else 'lower'} process limit")
        elif s.test == "run":
            words.append(f"a run of {len(s.points)} points {way} the mean")
        elif s.test == "trend":
            words.append(f"a trend of {len(s.points)} points "
                         f"{'rising' if s.direction is Direction.UP else 'falling'}")
        elif s.test == "two_of_three":
            words.append(f"2 of 3 points {way} the 2-sigma line")
    return "; ".join(dict.fromkeys(words))
