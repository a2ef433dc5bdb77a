"""What intake derives from a submission (services/intake/derived.py) and the England
working-day helpers it uses (shared/workdays.py)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from services.intake.derived import complaint_deadlines, derived_fields, fft_percentages
from shared.submissions import SUBMISSION_ADAPTER
from shared.workdays import is_working_day, months_after, next_working_day, working_days_after
from tests.unit.builders import example_body


# -- working days ---------------------------------------------------------------------------------
@pytest.mark.parametrize("day, working", [
    (date(2026, 11, 20), True),    # Friday
    (date(2026, 11, 21), False),   # Saturday
    (date(2026, 12, 25), False),   # Christmas Day
    (date(2026, 12, 28), False),   # Boxing Day (Saturday) moved to Monday
    (date(2027, 3, 26), False),    # Good Friday
    (date(2027, 3, 29), False),    # Easter Monday
    (date(2027, 3, 30), True),
])
def test_is_working_day(day: date, working: bool) -> None:
    assert is_working_day(day) is working


@pytest.mark.parametrize("day, n, expected", [
    (date(2026, 11, 10), 3, date(2026, 11, 13)),   # Tuesday -> Friday
    (date(2026, 11, 13), 3, date(2026, 11, 18)),   # Friday -> Wednesday, over the weekend
    (date(2026, 11, 21), 3, date(2026, 11, 25)),   # received on a Saturday
    (date(2026, 12, 24), 3, date(2026, 12, 31)),   # over Christmas and the substitute day
    (date(2027, 3, 25), 3, date(2027, 4, 1)),      # over Easter
    (date(2026, 11, 10), 0, date(2026, 11, 10)),
])
def test_working_days_after(day: date, n: int, expected: date) -> None:
    assert working_days_after(day, n) == expected


def test_working_days_after_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError):
        working_days_after(date(2026, 11, 10), -1)


def test_next_working_day() -> None:
    assert next_working_day(date(2026, 12, 25)) == date(2026, 12, 29)
    assert next_working_day(date(2026, 12, 29)) == date(2026, 12, 29)


@pytest.mark.parametrize("day, n, expected", [
    (date(2026, 11, 10), 6, date(2027, 5, 10)),
    (date(2026, 8, 31), 6, date(2027, 2, 28)),    # a shorter month: its last day
    (date(2027, 8, 31), 6, date(2028, 2, 29)),    # leap year
    (date(2026, 7, 15), 6, date(2027, 1, 15)),    # over the year end
    (date(2026, 11, 30), 0, date(2026, 11, 30)),
])
def test_months_after(day: date, n: int, expected: date) -> None:
    assert months_after(day, n) == expected


# -- complaints -----------------------------------------------------------------------------------
def test_complaint_deadlines_follow_the_regulations() -> None:
    assert complaint_deadlines(date(2026, 12, 24)) == {
        "acknowledgement_due": date(2026, 12, 31), "response_due": date(2027, 6, 24)}


def complaint(**changes: Any) -> Any:
    return SUBMISSION_ADAPTER.validate_python({**example_body("routine-complaint"), **changes})


def test_complaint_gets_its_deadlines_and_whether_they_were_met() -> None:
    fields = derived_fields(complaint(received_on="2026-11-10", acknowledged_on="2026-11-13",
                                      responded_on="2026-11-20"))
    assert fields == {"acknowledgement_due": "2026-11-13", "response_due": "2027-05-10",
                      "acknowledged_in_time": True, "responded_in_time": True}


def test_late_acknowledgement_is_flagged_and_unknown_is_none() -> None:
    fields = derived_fields(complaint(received_on="2026-11-10", acknowledged_on="2026-11-16"))
    assert fields["acknowledged_in_time"] is False
    assert fields["responded_in_time"] is None


# -- FFT ------------------------------------------------------------------------------------------
COUNTS = {"very_good": 40, "good": 30, "neither_good_nor_poor": 10, "poor": 5, "very_poor": 5,
          "dont_know": 10}


def test_fft_percentages_count_dont_know_in_the_denominator() -> None:
    # 70 of 100 positive, 10 of 100 negative: not 70/90 and 10/90.
    assert fft_percentages(COUNTS) == {"percent_positive": 70.0, "percent_negative": 10.0}


def test_fft_percentages_of_no_responses_are_none() -> None:
    assert fft_percentages(dict.fromkeys(COUNTS, 0)) == {"percent_positive": None,
                                                         "percent_negative": None}


def test_fft_percentages_are_rounded_to_four_places() -> None:
    counts = {**dict.fromkeys(COUNTS, 0), "very_good": 1, "poor": 2}
    assert fft_percentages(counts) == {"percent_positive": 33.3333, "percent_negative": 66.6667}


def test_fft_monthly_gets_responses_percentages_and_response_rate() -> None:
    sub = SUBMISSION_ADAPTER.validate_python({**example_body("fft-monthly"), **COUNTS,
                                              "total_eligible": 400})
    assert derived_fields(sub) == {"responses": 100, "percent_positive": 70.0,
                                   "percent_negative": 10.0, "response_rate": 25.0}


def test_fft_monthly_without_eligible_count_has_no_response_rate() -> None:
    body = {k: v for k, v in example_body("fft-monthly").items() if k != "total_eligible"}
    assert derived_fields(SUBMISSION_ADAPTER.validate_python(body))["response_rate"] is None


@pytest.mark.parametrize("name", ["compliment", "gp-alert", "safeguarding-concern",
                                  "service-change-notice"])
def test_other_kinds_get_nothing_derived(name: str) -> None:
    assert derived_fields(SUBMISSION_ADAPTER.validate_python(example_body(name))) == {}
