"""Complaint handling: acknowledgements within 3 working days, responses within 6 months.

Pure functions. The Local Authority Social Services and National Health Service Complaints
(England) Regulations 2009 ask for an acknowledgement within 3 working days of receipt and a
response within the period agreed (6 months at most). Working days exclude weekends and
England bank holidays (``shared.workdays``).

Judged per provider over the latest complete months (a threshold over a window):
- late acknowledgements: of the complaints received in the window whose acknowledgement is due
  by the evaluation date, the share acknowledged late or not at all;
- overdue responses: of the complaints whose response deadline falls in the window, the
  share answered late or not at all.

Each is a concern when at least ``min_complaints`` were due and the share reaches its
threshold (``handling_verdicts``); below it, an open concern of that theme resolves.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.quality_monitor.config import ComplaintHandlingRules
from shared.events import Evidence, Severity
from shared.workdays import months_after, working_days_after


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


@dataclass(frozen=True)
class Complaint:
    feedback_id: uuid.UUID
    received_on: date
    acknowledged_on: date | None = None
    responded_on: date | None = None


def acknowledgement_due(c: Complaint, within_working_days: int = 3) -> date:
    return working_days_after(c.received_on, within_working_days)


def response_due(c: Complaint, within_months: int = 6) -> date:
    return months_after(c.received_on, within_months)


def is_late(done_on: date | None, due: date, as_of: date) -> bool | None:
    """True if done after ``due`` or still not done after it; None if not yet due."""
    if done_on is not None:
        return done_on > due
    return True if as_of > due else None


@dataclass(frozen=True)
class HandlingMonth:
    """One month of a provider's complaint handling."""

    month: str
    acknowledgements_due: int
    acknowledged_late: int
    responses_due: int
    responded_late: int


@dataclass(frozen=True)
class HandlingWindow:
    months: tuple[HandlingMonth, ...]
    late_acknowledgements: tuple[Complaint, ...]
    overdue_responses: tuple[Complaint, ...]

    @property
    def acknowledgements_due(self) -> int:
        return sum(m.acknowledgements_due for m in self.months)

    @property
    def responses_due(self) -> int:
        return sum(m.responses_due for m in self.months)

    @property
    def late_acknowledgement_share(self) -> float | None:
        due = self.acknowledgements_due
        return len(self.late_acknowledgements) / due if due else None

    @property
    def overdue_response_share(self) -> float | None:
        due = self.responses_due
        return len(self.overdue_responses) / due if due else None


def handling_window(complaints: Sequence[Complaint], months: Sequence[str], as_of: date, *,
                    acknowledge_within: int = 3, respond_within: int = 6) -> HandlingWindow:
    """Acknowledgements of the complaints received in ``months`` (YYYY-MM) and responses
    due in them, as of ``as_of``."""
    wanted = set(months)
    rows = {m: [0, 0, 0, 0] for m in months}
    late_ack: list[Complaint] = []
    overdue: list[Complaint] = []
    for c in sorted(complaints, key=lambda c: (c.received_on, str(c.feedback_id))):
        if month_of(c.received_on) in wanted:
            late = is_late(c.acknowledged_on, acknowledgement_due(c, acknowledge_within), as_of)
            if late is not None:
                rows[month_of(c.received_on)][0] += 1
                if late:
                    rows[month_of(c.received_on)][1] += 1
                    late_ack.append(c)
        due = response_due(c, respond_within)
        if month_of(due) in wanted:
            late = is_late(c.responded_on, due, as_of)
            if late is not None:
                rows[month_of(due)][2] += 1
                if late:
                    rows[month_of(due)][3] += 1
                    overdue.append(c)
    return HandlingWindow(tuple(HandlingMonth(m, *rows[m]) for m in months),
                          tuple(late_ack), tuple(overdue))


@dataclass(frozen=True)
class OverThreshold:
    """A concern to raise (or add to) on one theme of a provider's complaint handling."""

    theme: str
    severity: Severity
    reason: str
    figures: dict[str, Any]
    evidence: list[Evidence]


@dataclass(frozen=True)
class WithinThreshold:
    """The theme is below its threshold: an open concern on it resolves with ``resolution``."""

    theme: str
    resolution: str


def handling_verdicts(window: HandlingWindow, months: Sequence[str], provider_name: str,
                      cfg: ComplaintHandlingRules) -> list[OverThreshold | WithinThreshold]:
    """The verdict on late acknowledgements, then on overdue responses, over ``months``
    (YYYY-MM, in order; the last is the month judged)."""
    month = months[-1]
    monthly = [[m.month, m.acknowledgements_due, m.acknowledged_late, m.responses_due,
                m.responded_late] for m in window.months]
    checks = (
        ("late acknowledgements", window.late_acknowledgements, window.acknowledgements_due,
         window.late_acknowledgement_share, cfg.late_acknowledgement_share,
         cfg.acknowledgement_severity,
         f"acknowledged later than {cfg.acknowledge_within_working_days} working days"),
        ("overdue responses", window.overdue_responses, window.responses_due,
         window.overdue_response_share, cfg.overdue_response_share, cfg.response_severity,
         f"answered later than {cfg.respond_within_months} months"),
    )
    verdicts: list[OverThreshold | WithinThreshold] = []
    for theme, late, due, share, threshold, severity, words in checks:
        if share is not None and due >= cfg.min_complaints and share >= threshold:
            verdicts.append(OverThreshold(
                theme, severity,
                f"Complaint handling at {provider_name}: {len(late)} of {due}"
                f" complaints ({100 * share:.0f}%) {words} in {months[0]} to {month};"
                f" the threshold is {100 * threshold:.0f}%",
                {"months": list(months), "late": len(late), "due": due,
                 "share": round(share, 4), "threshold": threshold, "monthly": monthly,
                 "columns": ["month", "acknowledgements_due", "acknowledged_late",
                             "responses_due", "responded_late"]},
                [Evidence(feedback_id=c.feedback_id, kind="complaint", occurred_on=c.received_on,
                          matched=theme[:-1]) for c in late]))
            continue
        shown = "no complaints due" if share is None else f"{100 * share:.0f}%"
        verdicts.append(WithinThreshold(
            theme, f"signal returned to common cause: {theme} {shown} in {months[0]} to"
                   f" {month}, below the threshold of {100 * threshold:.0f}%"))
    return verdicts
