"""XmR charts and special-cause tests (services/quality_monitor/spc.py), on hand-worked series
and on published reference cases of the NHS-R community's plot-the-dots implementations."""

from __future__ import annotations

import pytest

from services.quality_monitor.spc import (
    Direction,
    PointType,
    Signal,
    SpcOptions,
    TwoOfThree,
    assess,
    beyond_limits,
    chart,
    describe,
    limits,
    runs,
    trends,
    two_of_three,
)

UP, DOWN = Direction.UP, Direction.DOWN
CC, CONCERN, IMPROVEMENT = PointType.COMMON_CAUSE, PointType.CONCERN, PointType.IMPROVEMENT

# A steady series: mean 10, moving ranges all 1 (MR-bar 1), limits 10 ± 2.66, 2σ at 10 ± 1.7733.
STEADY = [9.5, 10.5] * 6


# -- limits, hand-worked -----------------------------------------------------------------------

def test_limits_are_mean_plus_minus_2_66_mean_moving_range() -> None:
    lim = limits(STEADY)
    assert lim.mean == pytest.approx(10)
    assert lim.mr_bar == pytest.approx(1)
    assert (lim.lower, lim.upper) == pytest.approx((7.34, 12.66))
    assert (lim.near_lower, lim.near_upper) == pytest.approx((10 - 1.77333, 10 + 1.77333), abs=1e-5)


def test_a_moving_range_of_3_267_mr_bar_or_more_is_screened_out() -> None:
    # Ranges 1 × 10 and 30: MR-bar 40/11 = 3.636; 30 >= 3.267 × 3.636 = 11.88, so it is left
    # out and MR-bar becomes 10/10 = 1.
    values = [10, 11] * 5 + [10, 40]
    lim = limits(values)
    assert lim.screened_ranges == 1
    assert lim.mr_bar == pytest.approx(1)
    assert limits(values, screen_outliers=False).mr_bar == pytest.approx(40 / 11)


def test_fewer_than_12_points_gives_no_verdict() -> None:
    eleven = [10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 50]
    assert chart(eleven) is None
    assert assess(eleven, UP) is None
    twelve = [*eleven, 10]
    assert assess(twelve, UP) is not None


def test_baseline_fixed_after_n_points_judges_later_points_against_it() -> None:
    values = [*STEADY, 12, 12.5, 13]
    free = chart(values)
    fixed = chart(values, SpcOptions(fix_after=12))
    assert free is not None and fixed is not None
    assert fixed.limits.mean == pytest.approx(10) and fixed.limits.baseline_points == 12
    assert [s.points for s in beyond_limits(values, fixed.limits)] == [(14,)]
    assert free.limits.mean > 10


# -- each test on its own, hand-worked -----------------------------------------------------------

def test_beyond_limits_either_side() -> None:
    lim = limits(STEADY)
    assert beyond_limits([10, 12.7, 7.3, 12.66], lim) == [
        Signal("beyond_limits", UP, (1,)), Signal("beyond_limits", DOWN, (2,))]


def test_run_of_seven_on_one_side_of_the_mean() -> None:
    values = [9, 11, 11, 11, 11, 11, 11, 11, 9]
    assert runs(values, 10) == [Signal("run", UP, tuple(range(1, 8)))]


def test_six_in_a_row_is_not_a_run() -> None:
    assert runs([9, 11, 11, 11, 11, 11, 11, 9], 10) == []


def test_a_point_on_the_mean_breaks_a_run() -> None:
    values = [11, 11, 11, 10, 11, 11, 11, 11]  # 3 above, one ON the mean, 4 above
    assert runs(values, 10) == []
    assert runs([11, 11, 11, 11, 11, 11, 11], 10) == [Signal("run", UP, tuple(range(7)))]


def test_trend_of_seven_rising_or_falling() -> None:
    assert trends([1, 2, 3, 4, 5, 6, 7]) == [Signal("trend", UP, tuple(range(7)))]
    assert trends([7, 6, 5, 4, 3, 2, 1]) == [Signal("trend", DOWN, tuple(range(7)))]
    assert trends([1, 2, 3, 4, 5, 6]) == []


def test_ties_break_a_trend() -> None:
    assert trends([1, 2, 3, 3, 4, 5, 6, 7]) == []  # 3, 3: the tie splits 1-3 and 3-7
    assert trends([1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10]) == [Signal("trend", UP, tuple(range(4, 11)))]


def test_two_of_three_beyond_2_sigma_on_one_side() -> None:
    lim = limits(STEADY)  # 2σ lines at 8.2267 and 11.7733
    # near_only (NHSRplotthedots): all three above the mean, two between 2σ and 3σ
    assert two_of_three([10, 11.9, 10.1, 11.8, 10], lim) == [Signal("two_of_three", UP, (1, 3))]
    assert two_of_three([10, 8.1, 8.0, 10], lim) == []  # the first point is ON the mean
    assert two_of_three([9, 8.1, 8.0, 10], lim) == [Signal("two_of_three", DOWN, (1, 2))]
    # near_or_beyond (carewatch): a point beyond the process limit counts, the third anywhere
    old = TwoOfThree.NEAR_OR_BEYOND
    assert two_of_three([10, 11.9, 10, 11.8, 10], lim, old) == [
        Signal("two_of_three", UP, (1, 3))]
    assert two_of_three([10, 12.9, 11.8, 10], lim, old) == [Signal("two_of_three", UP, (1, 2))]
    assert two_of_three([10, 12.9, 11.8, 10], lim) == []


def test_two_of_three_on_opposite_sides_or_too_far_apart_is_nothing() -> None:
    lim = limits(STEADY)
    assert two_of_three([10, 11.9, 8.1, 10], lim) == []
    assert two_of_three([11.9, 10, 10, 11.9], lim) == []


def test_describe_in_plain_words() -> None:
    text = describe([Signal("run", UP, tuple(range(8))), Signal("trend", DOWN, tuple(range(7))),
                     Signal("beyond_limits", UP, (3,)), Signal("two_of_three", DOWN, (1, 2))])
    assert text == ("a run of 8 points above the mean; a trend of 7 points falling; a point above"
                    " the upper process limit; 2 of 3 points below the 2-sigma line")


# -- verdicts on the latest point, by direction -----------------------------------------------

def test_only_the_direction_of_concern_raises_a_concern() -> None:
    spike = [*STEADY, 14]
    up = assess(spike, UP)  # e.g. FFT % negative: up is a concern
    assert up is not None and [s.test for s in up.concern] == ["beyond_limits"]
    assert up.improvement == []
    down = assess(spike, DOWN)  # e.g. FFT % positive: up is an improvement
    assert down is not None and down.concern == [] and len(down.improvement) == 1
    assert down.point_types[-1] is IMPROVEMENT


def test_a_signal_that_does_not_reach_the_latest_point_is_not_a_verdict() -> None:
    values = [*STEADY, 14, 10, 9.5]
    v = assess(values, UP)
    assert v is not None and v.concern == []
    assert v.point_types[12] is CONCERN
    assert v.common_cause_tail() == 2


def test_a_rising_trend_below_the_mean_is_a_concern_when_up_is_bad() -> None:
    values = [14, 14, 14, 14, 14, 14, 6, 7, 8, 9, 10, 11, 12]
    v = assess(values, UP)
    assert v is not None
    assert [s.test for s in v.concern] == ["trend"]


# -- published reference cases ------------------------------------------------------------------

# R's set.seed(123); rnorm(20), the data of NHSRplotthedots' own tests
# (tests/testthat/test-ptd_spc.R and test-ptd_spc_standard.R, nhs-r-community/NHSRplotthedots).
RNORM_123 = [-0.56047565, -0.23017749, 1.55870831, 0.07050839, 0.12928774, 1.71506499,
             0.46091621, -1.26506123, -0.68685285, -0.44566197, 1.22408180, 0.35981383,
             0.40077145, 0.11068272, -0.55584113, 1.78691314, 0.49785048, -1.96661716,
             0.70135590, -0.47279141]


def test_nhsrplotthedots_summary_snapshot_of_rnorm_20() -> None:
    # tests/testthat/_snaps/ptd_spc.md: mean_col 0.142, lpl -3.01, upl 3.29, n 20,
    # common_cause 20, special_cause_improvement 0 (screen_outliers TRUE).
    c = chart(RNORM_123)
    assert c is not None
    assert round(c.limits.mean, 3) == 0.142
    assert (round(c.limits.lower, 2), round(c.limits.upper, 2)) == (-3.01, 3.29)
    assert c.point_types(UP) == [CC] * 20


def test_nhsrplotthedots_summary_snapshot_by_facet() -> None:
    # Same snapshot, facet_field = 'facet' (rows 1-10 and 11-20): 0.0746 -2.60 2.75 and
    # 0.209 -3.28 3.70; each group of 10 is charted with NHSRplotthedots' short-group
    # warning, so min_points is lowered to 10 here.
    for values, expected in ((RNORM_123[:10], (0.0746, -2.60, 2.75)),
                             (RNORM_123[10:], (0.209, -3.28, 3.70))):
        c = chart(values, SpcOptions(min_points=10))
        assert c is not None
        assert (round(c.limits.mean, 4 if expected[0] < 0.1 else 3), round(c.limits.lower, 2),
                round(c.limits.upper, 2)) == expected
        assert c.signals == ()


def test_nhsrplotthedots_two_close_points_on_opposite_sides_are_common_cause() -> None:
    # test-ptd_spc_standard.R, "it only reports special cause for 2 of 3 points close to limits
    # when they are on the same side of the mean": rep(c(1, -1), 8) with points 15 and 16 set to
    # 5.5 and -5.5; the last two points are common_cause.
    data = [1.0, -1.0] * 8
    data[14], data[15] = 5.5, -5.5
    v = assess(data, UP)
    assert v is not None
    assert v.point_types[-2:] == [CC, CC]


@pytest.mark.parametrize("values, expected", [
    # ptd_seven_point_trend (test-ptd_calculate_point_type.R): 1:7 and 7:1 are trends,
    # c(1:3, 3:6) is not (the tie), c(2, 1:7, 3) has the trend 1..7 only.
    ([1, 2, 3, 4, 5, 6, 7], [("trend", UP, tuple(range(7)))]),
    ([7, 6, 5, 4, 3, 2, 1], [("trend", DOWN, tuple(range(7)))]),
    ([1, 2, 3, 3, 4, 5, 6], []),
    ([2, 1, 2, 3, 4, 5, 6, 7, 3], [("trend", UP, tuple(range(1, 8)))]),
])
def test_nhsrplotthedots_seven_point_trend_cases(values: list[float],
                                                 expected: list[tuple[str, Direction, tuple[int, ...]]]
                                                 ) -> None:
    assert [(s.test, s.direction, s.points) for s in trends(values)] == expected


@pytest.mark.parametrize("sides, expected_points", [
    # ptd_seven_point_one_side_mean: rep(1, 6) no; c(rep(1, 8), -1) flags a run of 8;
    # c(-1, rep(1, 8), -1) a run of 8 starting at the second point.
    ([1] * 6, []),
    ([1] * 8 + [-1], [tuple(range(8))]),
    ([-1] + [1] * 8 + [-1], [tuple(range(1, 9))]),
    ([-1] * 8 + [1], [tuple(range(8))]),
])
def test_nhsrplotthedots_seven_point_one_side_cases(sides: list[int],
                                                    expected_points: list[tuple[int, ...]]) -> None:
    assert [s.points for s in runs(sides, 0)] == expected_points


def test_nhs_england_spc_tool_demo_case() -> None:
    # nhs-pycom/nhspy-plotthedots, tests/unittests/test_pandas_spc_x_calc.py, test_demo_case:
    # the example of NHS England's statistical process control tool (Making Data Count):
    # mean 76.67, lower limit 57, upper 96; only point 12 (54) is special cause (below).
    values = [89, 86, 75, 77, 81, 74, 72, 78, 76, 82, 77, 54, 66, 77, 86]
    c = chart(values)
    assert c is not None
    assert round(c.limits.mean, 2) == 76.67
    assert (round(c.limits.lower), round(c.limits.upper)) == (57, 96)
    assert c.signals == (Signal("beyond_limits", DOWN, (11,)),)
    assert c.point_types(DOWN) == [CC] * 11 + [CONCERN] + [CC] * 3
    assert c.point_types(UP) == [CC] * 11 + [IMPROVEMENT] + [CC] * 3


@pytest.mark.parametrize("values, expected", [
    # nhspy-plotthedots tests/unittests/test_limits_calculations.py (mean, lpl, upl, nlpl, nupl)
    ([1, 2, 3, 2, 1, 2, 3, 4, 5, 6, 7, 4, 3, 2, 1, 2],
     (3.0, -0.014666666666666828, 6.014666666666667, 0.9902222222222221, 5.009777777777778)),
    ([3, 1, 4, 1, 5, 9, 2],
     (3.5714285714285716, -6.625238095238096, 13.768095238095238, -3.2263492063492065,
      10.36920634920635)),
    (list(range(20)), (9.5, 6.84, 12.16, 7.726666666666667, 11.273333333333333)),
])
def test_nhspy_plotthedots_limits_cases(values: list[float],
                                        expected: tuple[float, ...]) -> None:
    lim = limits(values)
    assert (lim.mean, lim.lower, lim.upper, lim.near_lower, lim.near_upper) == pytest.approx(
        expected)


def test_nhspy_plotthedots_seven_points_on_one_side_and_seven_rising_are_special() -> None:
    # tests/unittests/test_special_cause_flag.py: seven points above the mean, and seven
    # points in a trend, are special cause (here inside a 12-point chart).
    run = [10, 8, 10, 8, 10, 8, 12, 12.5, 12, 12.5, 12, 12.5, 12]
    v = assess(run, UP)
    assert v is not None and [s.test for s in v.concern] == ["run"]
    assert v.concern[0].points == tuple(range(6, 13))
