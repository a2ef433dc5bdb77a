"""Statistical process control of monthly series: NHS England "Making Data Count" XmR charts.

Pure functions over a list of values (oldest first). The calculation follows the NHS-R
community's plot-the-dots implementation (NHSRplotthedots 0.2.x, ``ptd_spc_standard`` and
``ptd_calculate_point_type``):

- centre line: the mean; moving ranges |x[i] - x[i-1]|, their mean MR̄; when
  ``screen_outliers`` (the default, as in Making Data Count), moving ranges of 3.267 × MR̄ or
  more are left out and MR̄ is recalculated;
- process limits: mean ± 2.66 × MR̄ (3σ); the "near" limits at mean ± 2·(2.66/3)·MR̄ (2σ);
- with ``fix_after`` the mean and MR̄ come from the first ``fix_after`` points (a baseline)
  and later points are judged against them; otherwise from every point;
- rebasing: the series may be cut into groups (``breaks``, the index where each new group
  starts: a known change); each group has its own limits and its own tests, as
  NHSRplotthedots' ``rebase_group``;
- fewer than ``min_points`` (12) points: no verdict at all.

Special-cause tests, each a :class:`Signal` with a direction and the points it covers:

- ``beyond_limits``: a point above the upper or below the lower process limit;
- ``run``: 7 or more consecutive points on one side of the mean; a point ON the mean breaks
  the run;
- ``trend``: 7 or more consecutive points each higher (or each lower) than the one before;
  a tie (equal neighbours) breaks the trend; a trend points the way it moves (both readings);
- ``two_of_three``: 2 of 3 consecutive points near a process limit, on one side. Two readings
  (:class:`TwoOfThree`):

  * ``near_only`` (NHSRplotthedots): only points between the 2σ and 3σ lines count as
    "near", and all three points of the window must be strictly on that side of the mean (a
    third point on the mean, or across it, breaks the window); the signal covers the near
    points only;
  * ``near_or_beyond`` (carewatch before issue 16): a point beyond the process limit also
    counts as near, and the third point may be anywhere.

Which signal a point shows when several cover it (:class:`Precedence`):

- ``rule_order`` (NHSRplotthedots' ``case_when``): beyond limits, then trend, then 2 of 3,
  then run; the first that covers the point decides whether it is concern or improvement
  (a trend point takes the direction of the step beside it, as the package's ``sdy``);
- ``concern_first`` (carewatch before issue 16): a point covered by any signal in the way of
  concern is a concern, whatever else covers it.

The two together are a named mode (:data:`MODES`): ``nhsr`` (``near_only`` + ``rule_order``)
is identical to NHSRplotthedots 0.2.x, labels and limits, on the package's own test vectors
and on random series against a reference port of its R code (tests/unit/ptd_reference.py);
``carewatch`` is the behaviour before issue 16. **The default is ``nhsr``**: quality teams and
boards read Making Data Count charts drawn by that package (or NHS England's tool, which it
mirrors), and a concern raised on a point their own chart shows as common cause would be
argued about rather than acted on. ``carewatch`` is more sensitive (a point beyond the limit
also starts a 2-of-3, a concern signal is never hidden by an improvement one), for a team
that wants earlier warning at the price of a chart that differs from the board's; on the 3,000
random series of tests/unit/test_spc_reference.py the two modes disagree on at least one
point's variation of 287 (9.6%).

Whether a direction is a concern or an improvement depends on the measure: for FFT % negative,
complaints and GP alerts, up is a concern; for FFT % positive, down is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import fmean
from typing import Any

LIMIT = 2.66  # 3σ in units of MR̄ (3 / d2, d2 = 1.128)
NEAR_LIMIT = 2 * (LIMIT / 3)  # 2σ, computed as NHSRplotthedots does (limitclose)
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


class TwoOfThree(StrEnum):
    """The two readings of the 2-of-3 rule (see the module docstring)."""

    NEAR_ONLY = "near_only"  # NHSRplotthedots
    NEAR_OR_BEYOND = "near_or_beyond"  # carewatch before issue 16


class Precedence(StrEnum):
    """Which signal a point shows when several cover it (see the module docstring)."""

    RULE_ORDER = "rule_order"  # NHSRplotthedots: beyond limits > trend > 2 of 3 > run
    CONCERN_FIRST = "concern_first"  # carewatch before issue 16


RULE_ORDER = ("beyond_limits", "trend", "two_of_three", "run")


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
class Label:
    """The signal a point shows: its test and direction (None on a point: common cause)."""

    test: str
    direction: Direction

    @property
    def nhsr(self) -> str:
        """NHSRplotthedots' ``special_cause_type`` text for this label."""
        above = self.direction is Direction.UP
        if self.test == "beyond_limits":
            return "Above UCL" if above else "Below LCL"
        if self.test == "trend":
            return f"7 Point Trend ({'In' if above else 'De'}creasing)"
        side = "Above" if above else "Below"
        if self.test == "two_of_three":
            return f"2 in 3 {side} CL"
        return f"7 Points {side} CL"


COMMON_CAUSE_TEXT = "Common Cause"


@dataclass(frozen=True)
class Group:
    """One rebase group of a chart: points ``start`` .. ``end - 1`` and their limits."""

    start: int
    end: int
    limits: Limits


@dataclass(frozen=True)
class Chart:
    """An XmR chart of a series: its limits (per rebase group) and every special-cause signal
    in it (indices into the whole series)."""

    values: tuple[float, ...]
    groups: tuple[Group, ...]
    signals: tuple[Signal, ...]
    precedence: Precedence = Precedence.RULE_ORDER

    @property
    def limits(self) -> Limits:
        """The limits of the latest rebase group (the whole series when never rebased)."""
        return self.groups[-1].limits

    def group_of(self, index: int) -> Group:
        i = index % len(self.values)
        return next(g for g in self.groups if g.start <= i < g.end)

    def labels(self, concern: Direction) -> list[Label | None]:
        """The signal each point shows, by the chart's precedence (None: common cause)."""
        covering: list[list[Signal]] = [[] for _ in self.values]
        for sig in self.signals:
            for i in sig.points:
                covering[i].append(sig)
        out: list[Label | None] = []
        for i, sigs in enumerate(covering):
            if not sigs:
                out.append(None)
                continue
            if self.precedence is Precedence.CONCERN_FIRST:
                pool = [s for s in sigs if s.direction is concern] or sigs
            else:
                pool = sigs
            first = min(pool, key=lambda s: RULE_ORDER.index(s.test))
            direction = first.direction
            if first.test == "trend" and self.precedence is Precedence.RULE_ORDER:
                direction = self._trend_direction(i)
            out.append(Label(first.test, direction))
        return out

    def _trend_direction(self, i: int) -> Direction:
        """NHSRplotthedots' ``sdy``: a trend point takes the step to the next point when that
        point is in a trend too, else the step from the previous point; a step that is not a
        rise reads as decreasing."""
        in_trend = {j for s in self.signals if s.test == "trend" for j in s.points}
        v = self.values
        if i + 1 < len(v) and i + 1 in in_trend and self.group_of(i) is self.group_of(i + 1):
            step = _side(v[i + 1], v[i])
        else:
            step = _side(v[i], v[i - 1]) if i > self.group_of(i).start else 0
        return Direction.UP if step > 0 else Direction.DOWN

    def point_types(self, concern: Direction) -> list[PointType]:
        """Each point's variation: concern or improvement by the signal it shows, else common
        cause."""
        return [PointType.COMMON_CAUSE if lab is None
                else PointType.CONCERN if lab.direction is concern else PointType.IMPROVEMENT
                for lab in self.labels(concern)]

    def nhsr_labels(self, concern: Direction) -> list[str]:
        """NHSRplotthedots' ``special_cause_type`` of each point."""
        return [COMMON_CAUSE_TEXT if lab is None else lab.nhsr for lab in self.labels(concern)]

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


def two_of_three(values: Sequence[float], lim: Limits,
                 reading: TwoOfThree = TwoOfThree.NEAR_ONLY) -> list[Signal]:
    """Two of three consecutive points near the same process limit, in either reading."""
    found: dict[tuple[Direction, tuple[int, ...]], None] = {}
    for start in range(len(values) - 2):
        window = range(start, start + 3)
        for direction, sign in ((Direction.UP, 1), (Direction.DOWN, -1)):
            if reading is TwoOfThree.NEAR_ONLY:
                if any(_side(values[i], lim.mean) != sign for i in window):
                    continue
                points = tuple(i for i in window if _near(values[i], lim) == sign)
            else:
                near = lim.near_upper if sign > 0 else lim.near_lower
                points = tuple(i for i in window if _side(values[i], near) == sign)
            if len(points) >= 2:
                found[(direction, points)] = None
    return [Signal("two_of_three", d, p) for d, p in found]


def _near(value: float, lim: Limits) -> int:
    """+1 / -1 for a point between the 2σ and 3σ lines above / below the mean, else 0."""
    if value > lim.upper or value < lim.lower:
        return 0
    return 1 if value > lim.near_upper else -1 if value < lim.near_lower else 0


@dataclass(frozen=True)
class SpcOptions:
    min_points: int = MIN_POINTS
    fix_after: int | None = None
    screen_outliers: bool = True
    run_length: int = RUN_LENGTH
    trend_length: int = TREND_LENGTH
    two_of_three: TwoOfThree = TwoOfThree.NEAR_ONLY
    precedence: Precedence = Precedence.RULE_ORDER

    @classmethod
    def mode(cls, name: str, **overrides: Any) -> SpcOptions:
        """The options of a named mode (:data:`MODES`), with any other field overridden."""
        try:
            reading, precedence = MODES[name]
        except KeyError:
            raise ValueError(f"unknown SPC mode {name!r}: one of {', '.join(MODES)}") from None
        return cls(two_of_three=reading, precedence=precedence, **overrides)


MODES: dict[str, tuple[TwoOfThree, Precedence]] = {
    "nhsr": (TwoOfThree.NEAR_ONLY, Precedence.RULE_ORDER),  # NHSRplotthedots 0.2.x (default)
    "carewatch": (TwoOfThree.NEAR_OR_BEYOND, Precedence.CONCERN_FIRST),
}
DEFAULT_MODE = "nhsr"


def group_bounds(n: int, breaks: Sequence[int] = ()) -> list[tuple[int, int]]:
    """(start, end) of each rebase group of ``n`` points cut at ``breaks`` (indices where a
    new group starts; out-of-range and repeated breaks are ignored)."""
    cuts = sorted({b for b in breaks if 0 < b < n})
    edges = [0, *cuts, n]
    return list(itertools.pairwise(edges))


def chart(values: Sequence[float], options: SpcOptions = SpcOptions(),
          breaks: Sequence[int] = ()) -> Chart | None:
    """The XmR chart of ``values`` with its signals, or None below ``min_points`` points (in
    the latest rebase group). ``breaks``: indices where a rebase group starts."""
    bounds = group_bounds(len(values), breaks)
    last_start, last_end = bounds[-1]
    if last_end - last_start < max(options.min_points, 2):
        return None
    groups: list[Group] = []
    signals: list[Signal] = []
    for start, end in bounds:
        part = list(values[start:end])
        if len(part) < 2:  # a single point after a rebase: its own mean, no range
            lim = Limits(part[0], part[0], part[0], part[0], part[0], 0.0, 1)
        else:
            baseline = part[: options.fix_after] if options.fix_after else part
            lim = limits(baseline, screen_outliers=options.screen_outliers)
        groups.append(Group(start, end, lim))
        found = [*beyond_limits(part, lim), *runs(part, lim.mean, options.run_length),
                 *trends(part, options.trend_length),
                 *two_of_three(part, lim, options.two_of_three)]
        signals += [Signal(s.test, s.direction, tuple(i + start for i in s.points))
                    for s in found]
    return Chart(tuple(values), tuple(groups), tuple(signals), options.precedence)


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
           options: SpcOptions = SpcOptions(), breaks: Sequence[int] = ()) -> Verdict | None:
    """Judge the latest point of ``values``; None when there are too few points for a verdict.

    With ``rule_order`` precedence the latest point is a concern (or an improvement) only
    when the signal it shows is one; the verdict lists every signal of that direction that
    covers it. With ``concern_first``, any concern signal covering it is a concern."""
    c = chart(values, options, breaks)
    if c is None:
        return None
    concern_signals = c.signals_at(-1, concern)
    improvement_signals = c.signals_at(-1, concern.opposite)
    if c.precedence is Precedence.RULE_ORDER:
        latest = c.point_types(concern)[-1]
        if latest is not PointType.CONCERN:
            concern_signals = []
        if latest is not PointType.IMPROVEMENT:
            improvement_signals = []
    return Verdict(c, concern, concern=concern_signals, improvement=improvement_signals)


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


# -- Making Data Count icons ---------------------------------------------------------------------

class Assurance(StrEnum):
    """Making Data Count's assurance icons: will the process meet its target?"""

    PASS = "consistent_pass"  # the target is outside the limits, on the good side
    FAIL = "consistent_fail"  # the target is outside the limits, on the bad side
    HIT_AND_MISS = "inconsistent"  # the target is within the limits


def assurance(lim: Limits, target: float | None, concern: Direction) -> Assurance | None:
    """The assurance icon of a process with limits ``lim`` against ``target`` (None without a
    target), as NHSRplotthedots' ``ptd_calculate_assurance_type``."""
    if target is None:
        return None
    increasing = concern is Direction.DOWN  # improvement is up
    if target > lim.upper:
        return Assurance.FAIL if increasing else Assurance.PASS
    if target < lim.lower:
        return Assurance.PASS if increasing else Assurance.FAIL
    return Assurance.HIT_AND_MISS


def variation_icon(point_type: PointType, concern: Direction) -> str:
    """Making Data Count's variation icon of a point: ``common_cause``, ``concern_high`` /
    ``concern_low`` or ``improvement_high`` / ``improvement_low`` (the file names of
    NHSRplotthedots' icons, without ``.svg``)."""
    if point_type is PointType.COMMON_CAUSE:
        return "common_cause"
    if point_type is PointType.CONCERN:
        return f"concern_{'high' if concern is Direction.UP else 'low'}"
    return f"improvement_{'low' if concern is Direction.UP else 'high'}"


# -- rebasing ----------------------------------------------------------------------------------

def breaks_at(periods: Sequence[str], rebase_periods: Sequence[str]) -> list[int]:
    """The index where each rebase group starts: a rebase from month ``p`` starts its group at
    the first charted month on or after ``p`` (ignored when that is the first point, or none)."""
    out: set[int] = set()
    for p in rebase_periods:
        i = next((k for k, q in enumerate(periods) if q >= p), None)
        if i:
            out.add(i)
    return sorted(out)


REBASE_AFTER_RUN = 9


def rebase_proposal(c: Chart, min_run: int = REBASE_AFTER_RUN) -> int | None:
    """Where to propose a rebase after a sustained shift: the first point of a run of at least
    ``min_run`` points on one side of the mean that reaches the latest point and starts after
    the latest rebase group does (a shift, not a group that was never centred). None
    otherwise: a person decides; the monitor only proposes."""
    last = len(c.values) - 1
    start = c.group_of(last).start
    for s in c.signals:
        if s.test == "run" and last in s.points and len(s.points) >= min_run \
                and s.points[0] > start:
            return s.points[0]
    return None
