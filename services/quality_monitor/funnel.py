"""Funnel plots of a proportion across providers, with Spiegelhalter's overdispersion adjustment.

Pure functions. The method is Spiegelhalter (2005), "Funnel plots for comparing institutional
performance" (Stat Med 24:1185) and "Handling over-dispersion of performance indicators"
(Qual Saf Health Care 14:347), as the NHS-R community's FunnelPlotR package implements it for
proportions (``data_type = "PR"``):

1. each provider's proportion p = r / n on the variance-stabilising scale y = asin(√p), whose
   standard error is s = 1 / (2√n); the target is θ = asin(√p₀), p₀ = Σr / Σn;
2. z-scores z = (y − θ) / s, winsorised: those beyond the 10th and 90th percentiles (R's
   default, type 7, quantiles) are set to those percentiles;
3. the overdispersion ratio φ = Σ z_w² / I over the I providers;
4. the between-provider variance τ² = max(0, (Iφ − (I − 1)) / (Σw − Σw² / Σw)), w = 1/s²
   (zero when Iφ < I − 1: no overdispersion);
5. limits θ ± z_α √(s² + τ²), back on the proportion scale as sin²(·): they widen by τ²;
   adjusted z-scores (y − θ) / √(s² + τ²).

**φ ≤ 1 fall-back** (``phi_fallback``, on by default): FunnelPlotR draws the unadjusted limits
(τ² = 0) whenever φ ≤ 1, "no overdispersion detected", even though step 4 gives a small
τ² > 0 when (I − 1)/I ≤ φ ≤ 1. carewatch before issue 16 kept that τ², so its limits were a
little wider than the package's and a provider just beyond the plain 99.8% limit was missed.
With the fall-back on, limits, z-scores and bands are FunnelPlotR's (``funnel_plot(...,
data_type = "PR")``, default ``limit = 99``): agreement to 1e-9 on the limits and identical
outlier flags on random funnels against a port of its R code (tests/unit/test_funnel.py).
``phi_fallback=False`` keeps the pre-issue-16 behaviour. ``Funnel.adjusted`` says which limits
were drawn; ``tau2`` is reported as computed either way (as FunnelPlotR does).

z_α is 1.959964 for the 95% limits and 3.090232 for the 99.8% limits (two-sided), the
constants FunnelPlotR (and NHS Digital's SHMI) write out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

Z95 = 1.959964  # NormalDist().inv_cdf(0.975) to 7 figures, as FunnelPlotR writes it
Z998 = 3.090232  # NormalDist().inv_cdf(0.999)


class Band(StrEnum):
    """Where a provider sits on the funnel."""

    ABOVE_998 = "above_99.8"
    ABOVE_95 = "above_95"
    WITHIN = "within"
    BELOW_95 = "below_95"
    BELOW_998 = "below_99.8"


@dataclass(frozen=True)
class Unit:
    """One provider's count of events (e.g. negative answers) out of ``n`` (responses)."""

    key: str
    events: int
    n: int


@dataclass(frozen=True)
class FunnelPoint:
    key: str
    events: int
    n: int
    proportion: float
    z: float  # unadjusted
    z_winsorised: float
    z_adjusted: float  # with τ²
    band: Band


@dataclass(frozen=True)
class Funnel:
    target: float  # p₀
    theta: float  # asin(√p₀)
    phi: float
    tau2: float  # as computed (reported even when the limits fall back to unadjusted)
    points: tuple[FunnelPoint, ...]
    adjusted: bool = True  # the limits and z_adjusted include tau2

    @property
    def tau2_used(self) -> float:
        return self.tau2 if self.adjusted else 0.0

    def limits(self, n: float, z: float) -> tuple[float, float]:
        """Lower and upper limits (proportions) at denominator ``n`` for z_α = ``z``."""
        half = z * math.sqrt(1 / (4 * n) + self.tau2_used)
        return _back(self.theta - half), _back(self.theta + half)

    def point(self, key: str) -> FunnelPoint | None:
        return next((p for p in self.points if p.key == key), None)


def _back(y: float) -> float:
    """sin²(y), the proportion of a value on the asin(√p) scale (clamped to [0, π/2])."""
    return math.sin(min(max(y, 0.0), math.pi / 2)) ** 2


def quantile7(values: Sequence[float], q: float) -> float:
    """R's default (type 7) quantile: linear between order statistics at (n − 1)q."""
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def winsorise(z: Sequence[float], by: float) -> list[float]:
    """Set z-scores beyond the ``by`` and ``1 − by`` quantiles to those quantiles."""
    if not z or by <= 0:
        return list(z)
    lo, hi = quantile7(z, by), quantile7(z, 1 - by)
    return [min(max(v, lo), hi) for v in z]


def band(z_adjusted: float) -> Band:
    if z_adjusted > Z998:
        return Band.ABOVE_998
    if z_adjusted > Z95:
        return Band.ABOVE_95
    if z_adjusted < -Z998:
        return Band.BELOW_998
    if z_adjusted < -Z95:
        return Band.BELOW_95
    return Band.WITHIN


def funnel(units: Sequence[Unit], *, winsorise_by: float = 0.1,
           overdispersion: bool = True, phi_fallback: bool = True) -> Funnel:
    """The funnel of ``units`` (providers with n > 0); τ² = 0 when ``overdispersion`` is off;
    unadjusted limits when φ ≤ 1 and ``phi_fallback`` (FunnelPlotR)."""
    units = [u for u in units if u.n > 0]
    if not units:
        raise ValueError("a funnel needs at least one provider with responses")
    p0 = sum(u.events for u in units) / sum(u.n for u in units)
    theta = math.asin(math.sqrt(p0))
    s = [1 / (2 * math.sqrt(u.n)) for u in units]
    y = [math.asin(math.sqrt(u.events / u.n)) for u in units]
    z = [(yi - theta) / si for yi, si in zip(y, s, strict=True)]
    zw = winsorise(z, winsorise_by)
    count = len(units)
    phi = sum(v * v for v in zw) / count
    tau2 = 0.0
    if overdispersion and count * phi >= count - 1:
        w = [1 / (si * si) for si in s]
        denominator = sum(w) - sum(wi * wi for wi in w) / sum(w)
        if denominator > 0:
            tau2 = max(0.0, (count * phi - (count - 1)) / denominator)
    adjusted = overdispersion and not (phi_fallback and phi <= 1)
    used = tau2 if adjusted else 0.0
    points = []
    for u, yi, si, zi, zwi in zip(units, y, s, z, zw, strict=True):
        za = (yi - theta) / math.sqrt(si * si + used)
        points.append(FunnelPoint(u.key, u.events, u.n, u.events / u.n, zi, zwi, za, band(za)))
    return Funnel(target=p0, theta=theta, phi=phi, tau2=tau2, points=tuple(points),
                  adjusted=adjusted)
