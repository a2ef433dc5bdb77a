"""FFT monthly figures from responses and returns (services/quality_monitor/fft.py)."""

from __future__ import annotations

import uuid
from datetime import date

from services.quality_monitor.fft import Counts, add_up, combine, shown, suppressed
from services.quality_monitor.series import fft_month_series


def response_rows(period: str, site: str, **answers: int) -> dict[str, object]:
    return {"period": period, "site_code": site, **answers}


def test_percentages_count_dont_know_in_the_denominator() -> None:
    c = Counts(very_good=50, good=20, neither_good_nor_poor=10, poor=5, very_poor=5, dont_know=10)
    assert c.responses == 100
    assert c.percent("fft_positive") == 70.0
    assert c.percent("fft_negative") == 10.0
    assert Counts().percent("fft_negative") is None


def test_wards_add_up_to_sites_and_sites_to_the_trust_never_averaging_percentages() -> None:
    wards = [{"site": "S1", "ward": "a", "very_good": 9, "poor": 1},
             {"site": "S1", "ward": "b", "very_good": 1, "poor": 1},
             {"site": "S2", "ward": "c", "very_good": 90, "poor": 10}]
    sites = add_up(wards, ("site",))
    assert sites[("S1",)].responses == 12 and sites[("S1",)].negative == 2
    trust = sites[("S1",)] + sites[("S2",)]
    assert trust.percent("fft_negative") == 100 * 12 / 112  # not the mean of 16.7% and 10%


def test_one_to_four_responses_are_suppressed_in_what_a_person_sees() -> None:
    assert [suppressed(n) for n in (0, 1, 4, 5)] == [False, True, True, False]
    assert shown(25.0, 4) == "*"
    assert shown(25.0, 5) == "25.0%"
    assert shown(None, 0) == "-"


def test_a_monthly_return_wins_its_month_and_nothing_is_counted_twice() -> None:
    returns = [response_rows("2026-01", "", very_good=80, poor=20)]
    responses = [response_rows("2026-01", "S1", very_good=3, poor=3),  # same month: ignored
                 response_rows("2026-02", "S1", very_good=6, poor=2),
                 response_rows("2026-02", "S2", very_good=2, dont_know=2),
                 response_rows("2026-03", "S1", very_good=9)]  # month still open: left out
    months = combine(returns, responses, last_closed="2026-02")
    assert [(m.period, m.source, m.counts.responses) for m in months] == [
        ("2026-01", "return", 100), ("2026-02", "responses", 12)]
    assert months[1].counts.percent("fft_negative") == 100 * 2 / 12
    assert set(months[1].sites) == {"S1", "S2"}


def test_a_suppressed_month_is_left_out_of_the_chart_without_breaking_the_run() -> None:
    rows = [response_rows(p, "", very_good=n - 1, poor=1)
            for p, n in (("2026-01", 20), ("2026-02", 3), ("2026-03", 10))]
    months = combine([], rows)
    fid = uuid.uuid4()
    series = fft_month_series(months, "fft_negative", {"2026-03": [(fid, date(2026, 3, 1))]})
    assert series.periods == ["2026-01", "2026-03"]
    assert series.values == [5.0, 10.0]
    assert series.feedback == [[], [(fid, date(2026, 3, 1))]]
