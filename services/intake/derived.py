"""Figures intake derives from a submission and adds to the accepted content, so that every
service downstream reads the same numbers. Pure functions.

- complaint: the statutory deadlines of the NHS complaints regulations (England, 2009):
  acknowledge within 3 working days of receipt, respond within 6 months.
- fft_monthly: NHS England's % positive and % negative, with "don't know" counted in the
  denominator (all responses), and the response rate when the eligible count is given.
- public_feedback: whether intake holds contact details for it (the details themselves are
  withheld: see validation.parse).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from shared.submissions import ComplaintV1, FFTMonthlyV1, PublicFeedbackV1, SubmissionModel
from shared.workdays import months_after, working_days_after

ACKNOWLEDGEMENT_WORKING_DAYS = 3
RESPONSE_MONTHS = 6


def complaint_deadlines(received_on: date) -> dict[str, date]:
    """When the provider must acknowledge and respond to a complaint received that day."""
    return {
        "acknowledgement_due": working_days_after(received_on, ACKNOWLEDGEMENT_WORKING_DAYS),
        "response_due": months_after(received_on, RESPONSE_MONTHS),
    }


def _in_time(done_on: date | None, due: date) -> bool | None:
    return None if done_on is None else done_on <= due


def fft_percentages(counts: dict[str, int]) -> dict[str, float | None]:
    """% positive (very good + good) and % negative (poor + very poor) of all responses,
    "don't know" included; ``None`` when there were no responses."""
    responses = sum(counts[k] for k in ("very_good", "good", "neither_good_nor_poor", "poor",
                                         "very_poor", "dont_know"))
    if not responses:
        return {"percent_positive": None, "percent_negative": None}
    return {
        "percent_positive": round(100 * (counts["very_good"] + counts["good"]) / responses, 4),
        "percent_negative": round(100 * (counts["poor"] + counts["very_poor"]) / responses, 4),
    }


def derived_fields(submission: SubmissionModel) -> dict[str, Any]:
    """The fields intake adds to the accepted content of this submission (JSON-ready)."""
    if isinstance(submission, ComplaintV1):
        due = complaint_deadlines(submission.received_on)
        return {
            "acknowledgement_due": due["acknowledgement_due"].isoformat(),
            "response_due": due["response_due"].isoformat(),
            "acknowledged_in_time": _in_time(submission.acknowledged_on,
                                             due["acknowledgement_due"]),
            "responded_in_time": _in_time(submission.responded_on, due["response_due"]),
        }
    if isinstance(submission, FFTMonthlyV1):
        counts = submission.model_dump(include={"very_good", "good", "neither_good_nor_poor",
                                                "poor", "very_poor", "dont_know"})
        fields: dict[str, Any] = {"responses": submission.responses, **fft_percentages(counts)}
        fields["response_rate"] = (
            round(100 * submission.responses / submission.total_eligible, 4)
            if submission.total_eligible else None)
        return fields
    if isinstance(submission, PublicFeedbackV1):
        return {"contact_details_held": submission.contact is not None}
    return {}
