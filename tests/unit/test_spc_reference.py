"""The ``nhsr`` SPC mode against NHSRplotthedots 0.2.2: the package's own test vectors
(tests/testthat/*.R and their snapshots, nhs-r-community/NHSRplotthedots), then random series
against a reference port of its R code (tests/unit/ptd_reference.py): identical labels, limits
to 1e-9. The ``carewatch`` mode is shown to differ where the issue says it does."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.quality_monitor.spc import (
    Assurance,
    Chart,
    Direction,
    Group,
    Limits,
    PointType,
    Precedence,
    Signal,
    SpcOptions,
    TwoOfThree,
    assess,
    assurance,
    breaks_at,
    chart,
    rebase_proposal,
    runs,
    trends,
    two_of_three,
    variation_icon,
)
from tests.unit import ptd_reference as ref
from tests.unit.r_rng import RRandom

UP, DOWN = Direction.UP, Direction.DOWN
NHSR = SpcOptions.mode("nhsr", min_points=2)
CAREWATCH = SpcOptions.mode("carewatch", min_points=2)


def rnorm_123(n: int = 20) -> list[float]:
    return RRandom(123).rnorm(n)


def concern_of(improvement_direction: int) -> Direction:
    return DOWN if improvement_direction == 1 else UP


def test_r_random_numbers_are_r_s() -> None:
    # The first values of R's set.seed(123); rnorm(20), as printed in the package's snapshot.
    assert [round(v, 8) for v in rnorm_123()[:4]] == [-0.56047565, -0.23017749, 1.55870831,
                                                       0.07050839]


# -- tests/testthat/_snaps/ptd_spc_standard.md: limits of rnorm(20) ----------------------------

@pytest.mark.parametrize("outlier, screen, mean, lpl, upl, rtm_prefix", [
    # r1: the data as drawn
    (False, True, 0.1416238, -3.01138, 3.294627,
     [-1, -1, 1, -1, -1, 1, 1, -1, -1, -1, 1, 1, 1, -1, -1]),
    # r2: data$y[15] <- 10, screen_outliers TRUE
    (True, True, 0.6694159, -2.383666, 3.722497,
     [-1, -1, 1, -1, -1, 1, -1, -1, -1, -1, 1, -1, -1, -1]),
    # r3: the same, screen_outliers FALSE
    (True, False, 0.6694159, -4.596625, 5.935457,
     [-1, -1, 1, -1, -1, 1, -1, -1, -1, -1, 1, -1, -1, -1]),
])
def test_ptd_spc_standard_snapshot(outlier: bool, screen: bool, mean: float, lpl: float,
                                   upl: float, rtm_prefix: list[int]) -> None:
    y = rnorm_123()
    if outlier:
        y[14] = 10
    c = chart(y, SpcOptions.mode("nhsr", screen_outliers=screen))
    assert c is not None
    # the snapshot prints 7 significant digits
    assert (c.limits.mean, c.limits.lower, c.limits.upper) == pytest.approx(
        (mean, lpl, upl), rel=5e-7)
    rtm = [(v > c.limits.mean) - (v < c.limits.mean) for v in y]
    assert rtm[:len(rtm_prefix)] == rtm_prefix
    rows = ref.ptd_spc(y, screen_outliers=screen)
    assert (rows[0].mean_col, rows[0].lpl, rows[0].upl) == pytest.approx(
        (c.limits.mean, c.limits.lower, c.limits.upper), abs=1e-9)
    assert c.nhsr_labels(DOWN) == [r.special_cause_type for r in rows]
    # rnorm(20) is common cause throughout; with 10 at [15], that point is above the limit
    assert c.nhsr_labels(DOWN).count("Common Cause") == (19 if outlier else 20)


def test_ptd_spc_standard_rebase_group() -> None:
    # "it sets the rebase_group field": rebase at row 11 -> groups 0 x 10, 1 x 10.
    y = rnorm_123()
    c = chart(y, NHSR, breaks=[10])
    assert c is not None
    assert [(g.start, g.end) for g in c.groups] == [(0, 10), (10, 20)]
    rows = ref.ptd_spc(y, rebase=[0] * 10 + [1] + [0] * 9)
    assert [r.rebase_group for r in rows] == [0] * 10 + [1] * 10
    for g in c.groups:
        assert (rows[g.start].mean_col, rows[g.start].lpl, rows[g.start].upl) == pytest.approx(
            (g.limits.mean, g.limits.lower, g.limits.upper), abs=1e-9)


def test_summary_by_facet_snapshot() -> None:
    # _snaps/ptd_spc.md, facet rep(c(0, 1), each = 10): 0.0746 -2.60 2.75 | 0.209 -3.28 3.70
    y = rnorm_123()
    for part, expected in ((y[:10], (0.0746, -2.60, 2.75)), (y[10:], (0.209, -3.28, 3.70))):
        c = chart(part, NHSR)
        assert c is not None
        assert c.limits.mean == pytest.approx(expected[0], abs=5e-4)
        assert (c.limits.lower, c.limits.upper) == pytest.approx(expected[1:], abs=5e-3)
        assert set(c.point_types(DOWN)) == {PointType.COMMON_CAUSE}


def test_two_close_points_on_opposite_sides_are_common_cause() -> None:
    # test-ptd_spc_standard.R: rep(c(1, -1), 8), [15] <- 5.5, [16] <- -5.5: last two common.
    data = [1.0, -1.0] * 8
    data[14], data[15] = 5.5, -5.5
    c = chart(data, NHSR)
    assert c is not None
    assert c.point_types(DOWN)[-2:] == [PointType.COMMON_CAUSE] * 2
    assert [r.point_type for r in ref.ptd_spc(data)][-2:] == ["common_cause"] * 2


# -- tests/testthat/test-ptd_calculate_point_type.R ---------------------------------------------

def _end_flags(signals: list[Signal], n: int, span: int = 6) -> list[int]:
    """R's ptd_seven_point_* output: ±1 at a point ending 7 of a kind (it and 6 before)."""
    out = [0] * n
    for s in signals:
        for i in s.points:
            if i - span in s.points:
                out[i] = 1 if s.direction is UP else -1
    return out


@pytest.mark.parametrize("v, expected", [
    ([], []),
    ([1] * 6, [0] * 6),
    ([1] * 6 + [-1], [0] * 7),
    ([1] * 8 + [-1], [0, 0, 0, 0, 0, 0, 1, 1, 0]),
    ([-1] * 8 + [1], [0, 0, 0, 0, 0, 0, 1, 1, 0]),
])
def test_ptd_seven_point_one_side_mean(v: list[int], expected: list[int]) -> None:
    flags = [abs(f) for f in _end_flags(runs(v, 0), len(v))]
    assert flags == expected
    assert ref.ptd_seven_point_one_side_mean(v) == expected


@pytest.mark.parametrize("y, expected", [
    ([], []),
    ([1, 2, 3, 4, 5, 6], [0] * 6),
    ([1, 2, 3, 3, 4, 5, 6], [0] * 7),
    ([1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 1]),
    ([2, 1, 2, 3, 4, 5, 6, 7, 3], [0, 0, 0, 0, 0, 0, 0, 1, 0]),
    ([7, 6, 5, 4, 3, 2, 1], [0, 0, 0, 0, 0, 0, -1]),
    ([2, 7, 6, 5, 4, 3, 2, 1, 3], [0, 0, 0, 0, 0, 0, 0, -1, 0]),
])
def test_ptd_seven_point_trend(y: list[float], expected: list[int]) -> None:
    assert _end_flags(trends(y), len(y)) == expected
    assert ref.ptd_seven_point_trend(y) == expected


@pytest.mark.parametrize("flags, sides, expected", [
    # ptd_part_of_seven_trend(flags): a point ending 7 of a kind and the 6 before it. The same
    # coverage from carewatch's runs over sides that give those end flags.
    ([], [], []),
    ([0] * 6, [1, -1] * 3, [0] * 6),
    ([0] * 6 + [1, 0], [1] * 7 + [-1], [1] * 7 + [0]),
    ([0] * 7 + [1, 0], [-1] + [1] * 7 + [-1], [0] + [1] * 7 + [0]),
    ([0] * 6 + [-1, 0], [-1] * 7 + [1], [1] * 7 + [0]),
    ([0] * 7 + [-1, 0], [1] + [-1] * 7 + [1], [0] + [1] * 7 + [0]),
])
def test_ptd_part_of_seven_trend(flags: list[int], sides: list[int],
                                 expected: list[int]) -> None:
    assert ref.ptd_part_of_seven_trend(flags) == expected
    assert [abs(f) for f in _end_flags(runs(sides, 0), len(sides))] == [abs(f) for f in flags]
    covered = {i for s in runs(sides, 0) for i in s.points}
    assert [int(i in covered) for i in range(len(sides))] == expected


# Values for (close_to_limits, relative_to_mean) pairs, against limits mean 0, 2σ ±2, 3σ ±3.
LIM = Limits(mean=0, lower=-3, upper=3, near_lower=-2, near_upper=2, mr_bar=3 / 2.66,
             baseline_points=0)


def _values(close: list[int], rtm: list[int]) -> list[float]:
    return [r * (2.5 if c else 1.0) for c, r in zip(close, rtm, strict=True)]


def _part_of_two(close: list[int], rtm: list[int]) -> list[int]:
    flags = [0] * len(close)
    for s in two_of_three(_values(close, rtm), LIM, TwoOfThree.NEAR_ONLY):
        for i in s.points:
            flags[i] = 1
    return flags


@pytest.mark.parametrize("close, rtm, windows", [
    # ptd_two_in_three (windows flagged) and ptd_part_of_two_in_three (= windows & close)
    ([1, 0, 1], [1, 1, 1], [1, 1, 1]),
    ([0, 1, 1], [1, 1, 1], [1, 1, 1]),
    ([1, 1, 0], [1, 1, 1], [1, 1, 1]),
    ([0, 0, 1, 0, 1, 0, 0], [1] * 7, [0, 0, 1, 1, 1, 0, 0]),
    ([0, 0, 1, 1, 0, 0, 0], [1] * 7, [0, 1, 1, 1, 1, 0, 0]),
    ([1, 0, 0, 1], [1] * 4, [0, 0, 0, 0]),
    ([1, 0, 0, 1, 1], [1] * 5, [0, 0, 1, 1, 1]),
    # ... on opposite sides of the mean: nothing
    ([1, 0, 1], [1, -1, 1], [0, 0, 0]),
    ([0, 1, 1], [1, -1, 1], [0, 0, 0]),
    ([1, 1, 0], [1, -1, 1], [0, 0, 0]),
    ([0, 0, 1, 0, 1, 0, 0], [1, -1, 1, -1, 1, -1, 1], [0] * 7),
    ([0, 0, 1, 1, 0, 0, 0], [-1, 1, -1, 1, -1, 1, -1], [0] * 7),
])
def test_ptd_two_in_three(close: list[int], rtm: list[int], windows: list[int]) -> None:
    assert ref.ptd_two_in_three(close, rtm) == windows
    part = ref.ptd_part_of_two_in_three(windows, close)
    assert _part_of_two(close, rtm) == part


def test_ptd_two_in_three_degenerate() -> None:
    assert ref.ptd_two_in_three([], []) == []
    assert ref.ptd_two_in_three([0, 0, 0], [0]) == [0, 0, 0]
    assert two_of_three([], LIM) == []


def test_ptd_special_cause_type_precedence() -> None:
    # The package's mocked case: y = 1:8, relative_to_mean c(1,1,1,1,-1,-1,-1,-1),
    # part of trend c(1,-1,0,...), part of run c(0,0,1,-1,0,...), part of 2 in 3 at 5,
    # outside at 6 and 7 -> the labels below. Here the same coverage as signals.
    y = [1.0, 2, 3, 4, 5, 6, 7, 8]
    signals = (Signal("trend", UP, (0, 1)), Signal("run", UP, (2, 3)),
               Signal("two_of_three", DOWN, (4,)), Signal("beyond_limits", DOWN, (5,)),
               Signal("beyond_limits", DOWN, (6,)))
    c = Chart(tuple(y), (Group(0, 8, LIM),), signals, Precedence.RULE_ORDER)
    expected = ["7 Point Trend (Increasing)", "7 Point Trend (Increasing)", "7 Points Above CL",
                "7 Points Above CL", "2 in 3 Below CL", "Below LCL", "Below LCL", "Common Cause"]
    assert c.nhsr_labels(UP) == expected


# -- tests/testthat/test-ptd_calculate_assurance_type.R -----------------------------------------

@pytest.mark.parametrize("improvement, expected", [
    (1, [Assurance.FAIL, Assurance.PASS, Assurance.HIT_AND_MISS]),
    (-1, [Assurance.PASS, Assurance.FAIL, Assurance.HIT_AND_MISS]),
])
def test_ptd_calculate_assurance_type(improvement: int, expected: list[Assurance]) -> None:
    rows = [(1, 2, 3), (5, 6, 7), (1, 4, 5)]  # lpl, mean, upl; target 4
    got = [assurance(Limits(m, lo, hi, lo, hi, 1, 1), 4, concern_of(improvement))
           for lo, m, hi in rows]
    assert got == expected
    assert [ref.ptd_assurance_type(lo, hi, 4, improvement) for lo, _, hi in rows] == [
        a.value for a in expected]
    assert assurance(Limits(2, 1, 3, 1, 3, 1, 1), None, UP) is None


def test_ptd_calculate_assurance_type_uses_the_latest_rebase_group() -> None:
    # "it returns correct values for assurance when rebase": the last row's limits decide
    # (improvement decreasing, target 4): (1, 5) hit and miss, (1, 3) pass, (5, 7) fail.
    groups = {"a": (1, 3), "b": (5, 7), "c": (1, 5)}
    for order, expected in ((("a", "b", "c"), Assurance.HIT_AND_MISS),
                            (("b", "c", "a"), Assurance.PASS),
                            (("c", "a", "b"), Assurance.FAIL)):
        parts = [Group(k, k + 1, Limits((groups[g][0] + groups[g][1]) / 2, *groups[g],
                                        *groups[g], 1, 1)) for k, g in enumerate(order)]
        c = Chart((0.0, 0.0, 0.0), tuple(parts), ())
        assert assurance(c.limits, 4, concern_of(-1)) is expected
        lo, hi = groups[order[-1]]
        assert ref.ptd_assurance_type(lo, hi, 4, -1) == expected.value


def test_ptd_spc_standard_fix_after_n_points_changes_the_limits() -> None:
    # "setting fix_after_n_points changes the calculations" (rnorm(20), fixed after 12)
    y = rnorm_123()
    whole = chart(y, NHSR)
    fixed = chart(y, SpcOptions.mode("nhsr", min_points=2, fix_after=12))
    assert whole is not None and fixed is not None
    assert fixed.limits.lower != whole.limits.lower and fixed.limits.upper != whole.limits.upper
    rows = ref.ptd_spc(y, fix_after_n_points=12)
    assert (fixed.limits.mean, fixed.limits.lower, fixed.limits.upper) == pytest.approx(
        (rows[0].mean_col, rows[0].lpl, rows[0].upl), abs=1e-9)
    assert fixed.limits.mean == pytest.approx(sum(y[:12]) / 12, abs=1e-12)


def test_summary_with_a_target_snapshot() -> None:
    # _snaps/ptd_spc.md "summary with a target": mean 0.142, limits -3.01 to 3.29, 20 points,
    # all common cause; target 0.5 (improvement increasing) is inside them: inconsistent.
    y = rnorm_123()
    c = chart(y, NHSR)
    assert c is not None
    assert (round(c.limits.mean, 3), round(c.limits.lower, 2), round(c.limits.upper, 2)) == (
        0.142, -3.01, 3.29)
    assert c.point_types(DOWN).count(PointType.COMMON_CAUSE) == 20
    assert assurance(c.limits, 0.5, DOWN) is Assurance.HIT_AND_MISS


# -- tests/testthat/test-geom_ptd_icon.R, ptd_get_icons -----------------------------------------

def test_ptd_get_icons_cases() -> None:
    rng = RRandom(123)
    y = rng.rnorm(24)

    def icons(values: list[float], target: float | None, improvement: int) -> tuple[str, Any]:
        concern = concern_of(improvement)
        c = chart(values, NHSR)
        assert c is not None
        a = assurance(c.limits, target, concern)
        return variation_icon(c.point_types(concern)[-1], concern), a and a.value

    assert icons(y, None, 1) == ("common_cause", None)  # s1
    assert icons(y, 0.5, 1) == ("common_cause", "inconsistent")  # s2
    for part in (y[:12], y[12:]):  # s3, s4: by facet
        assert icons(part, 0.5, 1) == ("common_cause", "inconsistent")
    y[12:] = rng.rnorm(12, 5)
    assert icons(y, -3, 1) == ("improvement_high", "consistent_pass")  # s5
    assert icons(y, -3, -1) == ("concern_high", "consistent_fail")  # s6
    y[12:] = rng.rnorm(12, -5)
    assert icons(y, 3, 1) == ("concern_low", "consistent_fail")  # s7
    assert icons(y, 3, -1) == ("improvement_low", "consistent_pass")  # s8


# -- random series against the reference port --------------------------------------------------

def random_series(rng: random.Random) -> tuple[list[float], list[int], int | None, bool]:
    n = rng.randint(12, 40)
    kind = rng.choice(["noise", "shift", "trend", "counts", "spiky"])
    base = rng.uniform(-5, 50)
    y = [rng.gauss(base, 2) for _ in range(n)]
    if kind == "shift":
        at = rng.randint(3, n - 3)
        y = [v + (rng.uniform(2, 6) if i >= at else 0) for i, v in enumerate(y)]
    elif kind == "trend":
        at = rng.randint(0, n - 8)
        y = [v + (0.8 * (i - at) if at <= i < at + rng.randint(7, 10) else 0)
             for i, v in enumerate(y)]
    elif kind == "counts":  # ties and points exactly on the mean
        y = [float(rng.randint(0, 6)) for _ in range(n)]
    elif kind == "spiky":
        for _ in range(rng.randint(1, 3)):
            y[rng.randrange(n)] += rng.choice([-1, 1]) * rng.uniform(6, 15)
    breaks: list[int] = []
    if rng.random() < 0.25 and n >= 24:
        breaks = [rng.randint(10, n - 10)]
    fix = rng.choice([None, None, None, 10, 12])
    return y, breaks, fix, rng.random() < 0.8


def test_random_series_match_the_reference_in_nhsr_mode() -> None:
    rng = random.Random(20261206)
    differing_carewatch = 0
    series = 3000
    for _ in range(series):
        y, breaks, fix, screen = random_series(rng)
        improvement = rng.choice([1, -1])
        concern = concern_of(improvement)
        rebase = [1 if i in breaks else 0 for i in range(len(y))]
        rows = ref.ptd_spc(y, rebase=rebase, fix_after_n_points=fix,
                           improvement_direction=improvement, screen_outliers=screen)
        c = chart(y, SpcOptions.mode("nhsr", min_points=2, fix_after=fix,
                                     screen_outliers=screen), breaks)
        assert c is not None
        assert c.nhsr_labels(concern) == [r.special_cause_type for r in rows], (y, breaks, fix)
        assert [t.value for t in c.point_types(concern)] == [r.point_type for r in rows]
        for i, r in enumerate(rows):
            lim = c.group_of(i).limits
            assert abs(lim.mean - r.mean_col) <= 1e-9
            assert abs(lim.lower - r.lpl) <= 1e-9 and abs(lim.upper - r.upl) <= 1e-9
        old = chart(y, SpcOptions.mode("carewatch", min_points=2, fix_after=fix,
                                       screen_outliers=screen), breaks)
        assert old is not None
        if old.point_types(concern) != c.point_types(concern):
            differing_carewatch += 1
    # The carewatch reading is a real alternative, not the same thing by another name.
    assert differing_carewatch > series // 50


# -- the two readings, on hand-made cases ------------------------------------------------------

def test_a_point_beyond_the_limit_counts_in_2_of_3_only_in_the_carewatch_reading() -> None:
    steady = [9.5, 10.5] * 6  # baseline: mean 10, 2σ 11.77, 3σ 12.66
    values = [*steady, 12.9, 11.9]
    nhsr = chart(values, SpcOptions.mode("nhsr", fix_after=12))
    old = chart(values, SpcOptions.mode("carewatch", fix_after=12))
    assert nhsr is not None and old is not None
    assert [s.test for s in nhsr.signals] == ["beyond_limits"]
    assert {s.test for s in old.signals} == {"beyond_limits", "two_of_three"}
    assert nhsr.point_types(UP)[-1] is PointType.COMMON_CAUSE
    assert old.point_types(UP)[-1] is PointType.CONCERN


def test_rule_order_lets_an_improving_trend_win_over_a_concerning_run() -> None:
    # 7 points below the mean that rise steadily: a run below (a concern when down is bad)
    # and a rising trend (an improvement). NHSRplotthedots shows the trend.
    values = [14.0, 8] * 3 + [14, 6, 6.5, 7, 7.5, 8, 8.5, 9]  # mean 9.46
    nhsr = assess(values, DOWN, NHSR)
    old = assess(values, DOWN, CAREWATCH)
    assert nhsr is not None and old is not None
    assert nhsr.point_types[-1] is PointType.IMPROVEMENT and nhsr.concern == []
    assert old.point_types[-1] is PointType.CONCERN and [s.test for s in old.concern] == ["run"]


def test_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown SPC mode 'nhs'"):
        SpcOptions.mode("nhs")


# -- rebasing -------------------------------------------------------------------------------------

def test_a_rebase_splits_the_series_into_groups_with_their_own_limits() -> None:
    # A step change in July: without a rebase every point is special cause (the trust:
    # 13 coloured points, 9 of them "improvement" that was the old normal).
    before = [10.0, 11, 10, 12, 11, 10, 11, 12, 10, 11, 10, 11]
    after = [6.0, 7, 6, 5, 6, 7, 6, 5, 6, 7, 6, 5, 6]
    values = before + after
    periods = [f"{2025 + (i // 12)}-{i % 12 + 1:02d}" for i in range(len(values))]
    whole = chart(values, SpcOptions())
    assert whole is not None
    assert sum(t is not PointType.COMMON_CAUSE for t in whole.point_types(UP)) >= 20
    breaks = breaks_at(periods, ["2026-01"])
    assert breaks == [12]
    rebased = chart(values, SpcOptions(), breaks)
    assert rebased is not None
    assert [(g.start, g.end) for g in rebased.groups] == [(0, 12), (12, 25)]
    assert rebased.point_types(UP) == [PointType.COMMON_CAUSE] * 25
    assert rebased.limits.mean == pytest.approx(sum(after) / len(after))
    # per group, as NHSRplotthedots' rebase_group
    rows = ref.ptd_spc(values, rebase=[1 if i == 12 else 0 for i in range(25)],
                       improvement_direction=-1)
    assert rebased.nhsr_labels(UP) == [r.special_cause_type for r in rows]


def test_breaks_at_the_first_charted_month_on_or_after_the_rebase() -> None:
    periods = ["2025-01", "2025-02", "2025-04", "2025-05"]
    assert breaks_at(periods, ["2025-03"]) == [2]
    assert breaks_at(periods, ["2025-01", "2026-01"]) == []  # the first point; none after


def test_a_sustained_shift_proposes_a_rebase_from_its_first_month() -> None:
    values = [10.0, 11, 10, 12, 11, 10, 11, 12, 10, 11, 10, 11, *[14.0, 15] * 4, 14]
    c = chart(values, SpcOptions())
    assert c is not None
    assert rebase_proposal(c, 9) == 12
    assert rebase_proposal(c, 10) is None  # a run of 9 only
    rebased = chart(values, SpcOptions(min_points=9), [12])
    assert rebased is not None and rebase_proposal(rebased, 9) is None  # already rebased
