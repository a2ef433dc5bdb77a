"""A reference written from FunnelPlotR 0.6.0's R code (R/funnel_plot.R, R/od_adjustment.R,
R/build_limits_lookup.R, R/calculate_limits.R, R/outliers_func.R) for proportions
(``data_type = "PR"``), independent of services/quality_monitor/funnel.py: the φ ≤ 1 fall-back
to unadjusted limits, the [0, 1] truncation and the monotonicity truncation of the limits
lookup, and the outlier flags on the limits (``limit`` 95 or 99)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def quantile7(xs: Sequence[float], q: float) -> float:
    v = sorted(xs)
    h = (len(v) - 1) * q
    lo = math.floor(h)
    return v[lo] + (h - lo) * (v[min(lo + 1, len(v) - 1)] - v[lo])


def r_seq(start: float, to: float, length_out: int) -> list[float]:
    n1 = length_out - 1
    return [start, *(start + i * ((to - start) / n1) for i in range(1, n1)), to]


@dataclass
class Result:
    target: float
    phi: float
    tau2: float
    draw_adjusted: bool
    limits: dict[float, tuple[float, float, float, float]]  # denominator -> ll95 ul95 ll998 ul998
    outlier: list[int]


def funnel_plot_pr(numerator: Sequence[float], denominator: Sequence[float], *,
                   trim_by: float = 0.1, limit: int = 99, draw_adjusted: bool = True) -> Result:
    target = sum(numerator) / sum(denominator)
    tt = math.asin(math.sqrt(target))
    y = [math.asin(math.sqrt(r / n)) for r, n in zip(numerator, denominator, strict=True)]
    s = [1 / (2 * math.sqrt(n)) for n in denominator]
    uz = [(yi - tt) / si for yi, si in zip(y, s, strict=True)]
    lz, hz = quantile7(uz, trim_by), quantile7(uz, 1 - trim_by)
    wuz = [lz if u < lz else hz if u > hz else u for u in uz]
    n = len(wuz)
    phi = (1 / n) * sum(w * w for w in wuz)
    if n * phi < n - 1:
        tau2 = 0.0
    else:
        w = [1 / (si ** 2) for si in s]
        tau2 = max(0.0, (n * phi - (n - 1)) / (sum(w) - sum(x * x for x in w) / sum(w)))
    if not draw_adjusted:
        phi, tau2 = 0.0, 0.0
    if draw_adjusted and phi <= 1:
        draw_adjusted = False  # "No overdispersion detected ... plotting using unadjusted limits"
    max_x = math.ceil(max(denominator))
    seq = sorted(set(r_seq(3, max_x, 1000)) | set(denominator))
    t2 = tau2 if draw_adjusted else 0.0
    cols = []
    for z, sgn in ((1.959964, -1), (1.959964, 1), (3.090232, -1), (3.090232, 1)):
        col = [math.sin(tt + sgn * z * math.sqrt(1 / (4 * m) + t2)) ** 2 for m in seq]
        col = [min(max(c, 0.0), 1.0) for c in col]
        if sgn < 0:  # lower limits must rise with the denominator
            col = [0.0 if col[i] > col[i + 1] else col[i] for i in range(len(col) - 1)] + col[-1:]
        else:
            col = [1.0 if col[i] < col[i + 1] else col[i] for i in range(len(col) - 1)] + col[-1:]
        cols.append(col)
    table = {m: (cols[0][i], cols[1][i], cols[2][i], cols[3][i]) for i, m in enumerate(seq)}
    rows = [(r / d, *table[d]) for r, d in zip(numerator, denominator, strict=True)]
    return Result(target, phi, tau2, draw_adjusted, table, outliers(rows, limit))


def outliers(rows: Sequence[tuple[float, float, float, float, float]], limit: int,
             multiplier: float = 1) -> list[int]:
    """R/outliers_func.R for the limits drawn: each row is (rr, ll95, ul95, ll998, ul998); a
    point on a limit is not an outlier."""
    out = []
    for rr, ll95, ul95, ll99, ul99 in rows:
        lo, hi = (ll95, ul95) if limit == 95 else (ll99, ul99)
        out.append(0 if (rr * multiplier <= hi and rr * multiplier >= lo) else 1)
    return out
