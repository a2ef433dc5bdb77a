"""A reference written from NHSRplotthedots 0.2.2's R code, line by line (R/ptd_spc_standard.R,
R/ptd_calculate_point_type.R, R/ptd_calculate_assurance_type.R), vectorised the way R is, and
independent of services/quality_monitor/spc.py: the tests compare the two on random series.

R's 1-based padding tricks are kept (``vp <- c(rep(0, 6), v)`` etc.), so a reader can put this
next to the R source. Only what ptd_spc() computes for one facet is ported: rebase groups,
fix_after_n_points, screen_outliers, improvement_direction.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


def r_mean(xs: Sequence[float]) -> float:
    """R's mean(): the sum / n, then corrected by the mean of the residuals."""
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan
    s = math.fsum(xs) / len(xs)
    return s + math.fsum(x - s for x in xs) / len(xs)


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


@dataclass
class Row:
    y: float
    rebase_group: int
    mean_col: float
    lpl: float
    upl: float
    outside_limits: bool
    relative_to_mean: int
    close_to_limits: bool
    special_cause_type: str = ""
    point_type: str = ""


def ptd_spc_standard(y: Sequence[float], rebase: Sequence[int], fix_after_n_points: int | None,
                     screen_outliers: bool) -> list[Row]:
    limit = 2.66
    limitclose = 2 * (limit / 3)
    groups: list[int] = []
    acc = 0
    for r in rebase:  # rebase_group = cumsum(rebase)
        acc += r
        groups.append(acc)
    rows: list[Row] = []
    for g in sorted(set(groups)):
        ys = [v for v, gg in zip(y, groups, strict=True) if gg == g]
        fix_y = [v if i + 1 <= (fix_after_n_points or math.inf) else math.nan
                 for i, v in enumerate(ys)]
        mean_col = r_mean(fix_y)
        mr = [math.nan] + [abs(b - a) for a, b in itertools.pairwise(fix_y)]
        amr = r_mean(mr)
        if screen_outliers:
            mr = [m if (not math.isnan(m) and m < 3.267 * amr) else math.nan for m in mr]
        amr = r_mean(mr)
        lpl, upl = mean_col - limit * amr, mean_col + limit * amr
        nlpl, nupl = mean_col - limitclose * amr, mean_col + limitclose * amr
        for v in ys:
            outside = v > upl or v < lpl
            rows.append(Row(v, g, mean_col, lpl, upl, outside, sign(v - mean_col),
                            (not outside) and (v < nlpl or v > nupl)))
    return rows


def ptd_seven_point_one_side_mean(v: Sequence[int]) -> list[int]:
    vp = [0] * 6 + list(v)  # vp[[i]] in R is vp[i - 1] here
    out = []
    for i in range(7, len(v) + 7):
        cur = vp[i - 1]
        out.append(int(all(cur == vp[i - 1 - k] for k in range(1, 7)) and cur != 0))
    return out


def ptd_part_of_seven_trend(v: Sequence[int]) -> list[int]:
    vp = list(v) + [0] * 6
    return [int(any(abs(vp[i - 1 + k]) == 1 for k in range(7))) for i in range(1, len(v) + 1)]


def ptd_seven_point_trend(y: Sequence[float]) -> list[int]:
    if len(y) < 7:
        return [0] * len(y)
    out = [0] * 6
    for i in range(7, len(y) + 1):
        window = [y[i - 1 - k] for k in range(7)]  # y[i - 0:6]
        d = [-sign(b - a) for a, b in itertools.pairwise(window)]
        out.append(1 if all(x == 1 for x in d) else -1 if all(x == -1 for x in d) else 0)
    return out


def ptd_two_in_three(v: Sequence[int], rtm: Sequence[int]) -> list[int]:
    if not v:
        return []
    vp = [0, 0, *v, 0, 0]
    rtmp = [0, 0, *rtm, 0, 0]
    if len(rtmp) < len(vp):  # R recycles nothing here: short rtm is padded by NA -> FALSE
        rtmp += [0] * (len(vp) - len(rtmp))

    def window(i: int, a: int) -> bool:  # R's vp[i + a:(a+2)], 1-based
        idx = [i + a + k - 1 for k in range(3)]
        return sum(vp[j] for j in idx) >= 2 and abs(sum(rtmp[j] for j in idx)) == 3

    return [int(window(i, 0) or window(i, 1) or window(i, 2)) for i in range(1, len(v) + 1)]


def ptd_part_of_two_in_three(v: Sequence[int], x: Sequence[int]) -> list[int]:
    return [int(a == 1 and abs(b) == 1) for a, b in zip(v, x, strict=True)]


def ptd_special_cause_type(y: Sequence[float], relative_to_mean: Sequence[int],
                           close_to_limits: Sequence[int], outside_limits: Sequence[int]
                           ) -> list[str]:
    n = len(y)
    part_trend = ptd_part_of_seven_trend(ptd_seven_point_trend(y))
    part_two = ptd_part_of_two_in_three(ptd_two_in_three(close_to_limits, relative_to_mean),
                                        close_to_limits)
    part_run = ptd_part_of_seven_trend(ptd_seven_point_one_side_mean(relative_to_mean))
    sdy0 = [sign(b - a) for a, b in itertools.pairwise(y)]
    yes = sdy0 + sdy0[-1:]
    no = [0, *sdy0]
    nxt = [*part_trend[1:], 0]
    sdy = [yes[i] if (nxt[i] and part_trend[i]) else no[i] for i in range(n)]
    out = []
    for i in range(n):
        above_or_below = "Above" if relative_to_mean[i] > 0 else "Below"
        if outside_limits[i] != 0:
            out.append("Above UCL" if relative_to_mean[i] == 1 else "Below LCL")
        elif part_trend[i] != 0:
            out.append(f"7 Point Trend ({'In' if sdy[i] == 1 else 'De'}creasing)")
        elif part_two[i] != 0:
            out.append(f"2 in 3 {above_or_below} CL")
        elif part_run[i] != 0:
            out.append(f"7 Points {above_or_below} CL")
        else:
            out.append("Common Cause")
    return out


def ptd_point_type(special_cause_type: Sequence[str], improvement_direction: int) -> list[str]:
    out = []
    for t in special_cause_type:
        v = 1 if ("Above" in t or "Increasing" in t) else -1 if (
            "Below" in t or "Decreasing" in t) else 0
        v *= improvement_direction
        out.append("special_cause_improvement" if v > 0 else "special_cause_concern" if v < 0
                   else "common_cause")
    return out


def ptd_spc(y: Sequence[float], *, rebase: Sequence[int] | None = None,
            fix_after_n_points: int | None = None, improvement_direction: int = 1,
            screen_outliers: bool = True) -> list[Row]:
    """ptd_spc() for one facet: every row with its limits, special_cause_type, point_type."""
    rows = ptd_spc_standard(y, rebase or [0] * len(y), fix_after_n_points, screen_outliers)
    for g in sorted({r.rebase_group for r in rows}):
        grp = [r for r in rows if r.rebase_group == g]
        types = ptd_special_cause_type([r.y for r in grp], [r.relative_to_mean for r in grp],
                                       [int(r.close_to_limits) for r in grp],
                                       [int(r.outside_limits) for r in grp])
        for r, t, p in zip(grp, types, ptd_point_type(types, improvement_direction),
                           strict=True):
            r.special_cause_type, r.point_type = t, p
    return rows


def ptd_assurance_type(lpl: float, upl: float, target: float | None,
                       improvement_direction: int) -> str | None:
    if target is None or improvement_direction == 0:
        return None
    increasing = improvement_direction == 1
    if target > upl:
        return "consistent_fail" if increasing else "consistent_pass"
    if target < lpl:
        return "consistent_pass" if increasing else "consistent_fail"
    return "inconsistent"
