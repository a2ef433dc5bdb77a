"""Funnel plots with Spiegelhalter's overdispersion adjustment (services/quality_monitor/funnel.py)."""

from __future__ import annotations

import math
import random

import pytest

from services.quality_monitor.funnel import (
    Z95,
    Z998,
    Band,
    Funnel,
    Unit,
    funnel,
    quantile7,
    winsorise,
)
from tests.unit import funnelplotr_reference

# Ten providers of one setting in one month: FFT negative answers (r) out of responses (n).
UNITS = [Unit("A", 5, 100), Unit("B", 24, 400), Unit("C", 31, 625), Unit("D", 45, 900),
         Unit("E", 88, 1600), Unit("F", 140, 2500), Unit("G", 20, 400), Unit("H", 63, 900),
         Unit("I", 3, 100), Unit("J", 75, 625)]


def test_hand_worked_example() -> None:
    """Worked by hand (to 4-6 figures):

    p0 = Σr / Σn = 494 / 8150 = 0.060613;  θ = asin(√p0) = asin(0.246198) = 0.248756
    J: p = 75/625 = 0.12, y = asin(√0.12) = asin(0.346410) = 0.353742, s = 1/(2√625) = 0.02,
       z = (0.353742 − 0.248756) / 0.02 = 5.2493
    sorted z: −1.4935 −1.3945 −1.2081 −0.9846 −0.9624 −0.9297 −0.4648 −0.0515 1.1405 5.2493
    10th percentile (type 7, h = 9 × 0.1 = 0.9): −1.4935 + 0.9 × 0.0990 = −1.4044
    90th percentile (h = 8.1): 1.1405 + 0.1 × 4.1088 = 1.5513
    winsorised: I −1.4935 → −1.4044, J 5.2493 → 1.5513
    φ = Σ z_w² / 10 = 12.0627 / 10 = 1.2063
    w = 1/s² = 4n: Σw = 32,600; Σw² = 184,820,000; Σw²/Σw = 5,669.33
    τ² = (10 × 1.2063 − 9) / (32,600 − 5,669.33) = 3.0627 / 26,930.67 = 0.00011372
    J adjusted: 0.104986 / √(0.0004 + 0.00011372) = 0.104986 / 0.022666 = 4.632 > 3.090
    J's 99.8% limits at n = 625: sin²(0.248756 ± 3.090232 × 0.022666) = 0.0316 and 0.0982
    """
    f = funnel(UNITS)
    assert f.target == pytest.approx(494 / 8150)
    assert f.theta == pytest.approx(0.248756, abs=1e-6)
    j = f.point("J")
    assert j is not None
    assert j.z == pytest.approx(5.2493, abs=1e-4)
    assert j.z_winsorised == pytest.approx(1.5513, abs=1e-4)
    i = f.point("I")
    assert i is not None and i.z_winsorised == pytest.approx(-1.4044, abs=1e-4)
    assert f.phi == pytest.approx(1.2063, abs=1e-4)
    assert f.tau2 == pytest.approx(0.00011372, rel=1e-3)
    assert j.z_adjusted == pytest.approx(4.632, abs=1e-3)
    assert f.limits(625, Z998) == pytest.approx((0.0316, 0.0982), abs=1e-4)
    assert [p.key for p in f.points if p.band is Band.ABOVE_998] == ["J"]
    assert {p.band for p in f.points if p.key != "J"} == {Band.WITHIN}


def test_overdispersion_widens_the_limits() -> None:
    """H at 82/900 (9.1%) is beyond the plain 99.8% limit (z 3.18 > 3.09), but the spread
    between providers is wider than chance (φ 3.43): τ² widens the limits and H is within."""
    units = [u if u.key != "H" else Unit("H", 82, 900) for u in UNITS]
    plain = funnel(units, overdispersion=False)
    adjusted = funnel(units)
    h_plain, h_adj = plain.point("H"), adjusted.point("H")
    assert h_plain is not None and h_adj is not None
    assert plain.tau2 == 0
    assert h_plain.z == pytest.approx(3.182, abs=1e-3) and h_plain.band is Band.ABOVE_998
    assert adjusted.phi == pytest.approx(3.4251, abs=1e-4)
    assert adjusted.tau2 == pytest.approx(0.000938, abs=1e-6)
    assert h_adj.z_adjusted == pytest.approx(1.521, abs=1e-3) and h_adj.band is Band.WITHIN
    low, high = plain.limits(900, Z998)
    wide_low, wide_high = adjusted.limits(900, Z998)
    assert wide_low < low and wide_high > high


def test_no_overdispersion_when_phi_is_small() -> None:
    # Identical proportions: every z is 0, φ = 0 and Iφ < I − 1, so τ² = 0.
    f = funnel([Unit(k, 10, 200) for k in "ABCDEF"])
    assert f.phi == 0 and f.tau2 == 0
    assert {p.band for p in f.points} == {Band.WITHIN}
    assert f.limits(200, Z95)[0] < 0.05 < f.limits(200, Z95)[1]


def test_limits_narrow_as_the_denominator_grows() -> None:
    f = funnel(UNITS)
    widths = [f.limits(n, Z998)[1] - f.limits(n, Z998)[0] for n in (50, 200, 1000, 10_000)]
    assert widths == sorted(widths, reverse=True)
    # τ² stays however large the provider: the limits tend to sin²(θ ± z√τ²), not to p0.
    tau = math.sqrt(f.tau2)
    assert f.limits(1e12, Z998) == pytest.approx(
        (math.sin(f.theta - Z998 * tau) ** 2, math.sin(f.theta + Z998 * tau) ** 2))
    assert funnel(UNITS, overdispersion=False).limits(1e12, Z998) == pytest.approx(
        (f.target, f.target), abs=1e-4)


def test_below_the_lower_limit_is_flagged_too() -> None:
    units = [Unit("A", 60, 1000), Unit("B", 62, 1000), Unit("C", 58, 1000), Unit("D", 61, 1000),
             Unit("E", 59, 1000), Unit("F", 5, 1000)]
    f = funnel(units, overdispersion=False)
    low = f.point("F")
    assert low is not None and low.band is Band.BELOW_998


def test_providers_without_responses_are_left_out() -> None:
    f = funnel([*UNITS, Unit("Z", 0, 0)])
    assert f.point("Z") is None and len(f.points) == 10
    with pytest.raises(ValueError):
        funnel([Unit("Z", 0, 0)])


def test_r_type_7_quantiles_and_winsorising() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert quantile7(xs, 0.1) == pytest.approx(1.4)  # h = 0.4
    assert quantile7(xs, 0.9) == pytest.approx(7.6)  # h = 3.6: 4 + 0.6 × 6
    assert winsorise(xs, 0.1) == pytest.approx([1.4, 2.0, 3.0, 4.0, 7.6])
    assert winsorise(xs, 0) == xs


def test_z_values_of_the_limits() -> None:
    assert Z95 == pytest.approx(1.959964, abs=1e-6)
    assert Z998 == pytest.approx(3.090232, abs=1e-6)
    assert math.isclose(funnel(UNITS).limits(625, 0)[0], funnel(UNITS).target)


# -- FunnelPlotR's φ ≤ 1 fall-back, against a port of its R code ---------------------------------

def _flags(f: Funnel, z: float) -> list[int]:
    return [int(abs(p.z_adjusted) > z) for p in f.points]


def random_units(rng: random.Random) -> list[Unit]:
    count = rng.randint(5, 30)
    p = rng.uniform(0.02, 0.3)
    spread = rng.choice([0.0, 0.0, 0.1, 0.3, 0.6])  # between-provider spread (overdispersion)
    units = []
    for k in range(count):
        n = rng.randint(20, 3000)
        pk = min(max(p * math.exp(rng.gauss(0, spread)), 0.001), 0.95)
        events = sum(rng.random() < pk for _ in range(n)) if n < 400 else round(
            rng.gauss(n * pk, math.sqrt(n * pk * (1 - pk))))
        units.append(Unit(f"P{k}", min(max(events, 0), n), n))
    if rng.random() < 0.3:  # a provider pushed out
        i = rng.randrange(count)
        u = units[i]
        units[i] = Unit(u.key, min(u.n, round(u.events * rng.uniform(1.5, 3))), u.n)
    return units


def test_phi_fallback_matches_funnelplotr_on_random_funnels() -> None:
    """FunnelPlotR truncates a lower limit whose angle went below zero only by comparing it with
    the next point of its 1,000-point lookup grid; where the angle crosses zero between a data
    denominator and the next grid point, its lower limit there is sin² of a negative angle (a
    small positive proportion) instead of 0; the same above π/2 for the upper limit. carewatch
    clamps to 0 and 1. Those (rare) points are counted and compared on their other side only."""
    rng = random.Random(16)
    fell_back = kept_tau2_differs = quirks = compared = 0
    for _ in range(1500):
        units = random_units(rng)
        f = funnel(units)
        ref = funnelplotr_reference.funnel_plot_pr([u.events for u in units],
                                                   [u.n for u in units])
        assert f.adjusted == ref.draw_adjusted
        assert f.phi == pytest.approx(ref.phi, abs=1e-12)
        assert f.tau2 == pytest.approx(ref.tau2, abs=1e-12)
        ref95 = funnelplotr_reference.funnel_plot_pr([u.events for u in units],
                                                     [u.n for u in units], limit=95)
        for i, u in enumerate(units):
            ll95, ul95, ll99, ul99 = ref.limits[u.n]
            point = f.point(u.key)
            assert point is not None
            for z, low, high, flags in ((Z95, ll95, ul95, ref95.outlier),
                                        (Z998, ll99, ul99, ref.outlier)):
                ours_low, ours_high = f.limits(u.n, z)
                half = z * math.sqrt(1 / (4 * u.n) + f.tau2_used)
                low_quirk = f.theta - half < 0 and low > 0
                high_quirk = f.theta + half > math.pi / 2 and high < 1
                quirks += low_quirk or high_quirk
                compared += 1
                p = u.events / u.n
                if low_quirk:
                    assert ours_low == 0
                else:
                    assert ours_low == pytest.approx(low, abs=1e-9)
                if high_quirk:
                    assert ours_high == 1
                else:
                    assert ours_high == pytest.approx(high, abs=1e-9)
                if not (low_quirk or high_quirk):
                    assert int(abs(point.z_adjusted) > z) == flags[i]
                else:  # the side without the quirk still agrees
                    assert low_quirk or int(point.z_adjusted < -z) == int(p < low)
                    assert high_quirk or int(point.z_adjusted > z) == int(p > high)
        if not f.adjusted and f.tau2 > 0:
            fell_back += 1
            if _flags(funnel(units, phi_fallback=False), Z998) != ref.outlier:
                kept_tau2_differs += 1
    # The case the fall-back is about occurs, and keeping τ² then misses outliers.
    assert fell_back > 10 and kept_tau2_differs > 0
    assert quirks < compared / 100
    print(f"funnels 1500, limit pairs {compared}, grid quirks {quirks}, fell back {fell_back},"
          f" of which keeping tau2 changed the flags {kept_tau2_differs}")


def test_phi_at_most_one_falls_back_to_unadjusted_limits() -> None:
    # (I − 1)/I <= φ <= 1: τ² > 0, yet FunnelPlotR draws the plain limits, and flags more.
    rng = random.Random(3)
    while True:
        units = random_units(rng)
        f = funnel(units)
        if not f.adjusted and f.tau2 > 0 and _flags(f, Z998) != _flags(
                funnel(units, phi_fallback=False), Z998):
            break
    kept = funnel(units, phi_fallback=False)
    assert kept.adjusted and f.phi <= 1 and len(units) * f.phi >= len(units) - 1
    assert f.limits(100, Z998)[1] < kept.limits(100, Z998)[1]
    assert sum(_flags(f, Z998)) > sum(_flags(kept, Z998))


# -- FunnelPlotR's own test vectors (tests/testthat, FunnelPlotR 0.6.0) ---------------------------

# test-outliers_func.R: ratios against given limits (95 and 99.8, unadjusted and adjusted).
RR = [1, 0.95, 1.05, 0.8, 1.2, 0.6, 1.4, 0.4, 1.6, 0]
PLAIN = (0.9, 1.1, 0.59, 1.41)  # LCL95 UCL95 LCL99 UCL99
OD = (0.79, 1.21, 0.38, 1.62)  # OD95LCL OD95UCL OD99LCL OD99UCL


@pytest.mark.parametrize("limits, limit, multiplier, expected", [
    (PLAIN, 95, 1, [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]),
    (OD, 95, 1, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]),
    (PLAIN, 99, 1, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]),
    (OD, 99, 1, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    (PLAIN, 95, 100, [1] * 10),
])
def test_funnelplotr_outliers_func(limits: tuple[float, float, float, float], limit: int,
                                   multiplier: float, expected: list[int]) -> None:
    rows = [(rr, *limits) for rr in RR]
    assert funnelplotr_reference.outliers(rows, limit, multiplier) == expected
    # carewatch's flags on its own limits follow the same rule: outside, not on, a limit.
    if multiplier == 1:
        low, high = (limits[0], limits[1]) if limit == 95 else (limits[2], limits[3])
        assert [int(not low <= rr <= high) for rr in RR] == expected


def test_funnelplotr_build_limits_lookup_proportions() -> None:
    # test-build_limits_lookup.R: PR, target 0.5, no tau2, x to 250: the first limits of the
    # lookup (n = 3) lie inside (0, 1), for carewatch as for the reference.
    f = funnel([Unit("a", 5, 10), Unit("b", 5, 10), Unit("c", 125, 250)])
    assert f.target == 0.5 and not f.adjusted
    ref = funnelplotr_reference.funnel_plot_pr([5, 5, 125], [10, 10, 250])
    low, high = f.limits(3, Z95)
    assert 0 < low and high < 1
    assert (low, high) == pytest.approx(ref.limits[3][:2], abs=1e-12)
    assert min(ref.limits) == 3 and len(ref.limits) == 1001  # the grid and the data's n = 10
