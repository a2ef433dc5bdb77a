"""Complaint handling, visit ratings, service change notices and the rules file
(services/quality_monitor/handling.py, rules.py, config.py)."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.quality_monitor.config import (
    DEFAULT_RULES,
    MonitorRules,
    ServiceChangeRules,
    VisitRules,
    load_rules,
)
from services.quality_monitor.handling import (
    Complaint,
    acknowledgement_due,
    handling_window,
    response_due,
)
from services.quality_monitor.rules import service_change, service_change_failings, visit_rating
from shared.events import Severity
from tests.unit.builders import feedback

# -- working days and deadlines -----------------------------------------------------------------


def test_acknowledgement_due_in_3_working_days_skipping_weekends_and_bank_holidays() -> None:
    def due(day: date) -> date:
        return acknowledgement_due(Complaint(uuid.uuid4(), day))

    assert due(date(2026, 11, 19)) == date(2026, 11, 24)  # Thu -> Tue
    # Christmas 2026: Fri 25 Dec, Boxing Day Sat 26 -> substitute Mon 28 Dec
    assert due(date(2026, 12, 23)) == date(2026, 12, 30)
    # Easter 2027: Good Friday 26 Mar, Easter Monday 29 Mar: Thu 25 -> Tue 30, Wed 31, Thu 1 Apr
    assert due(date(2027, 3, 25)) == date(2027, 4, 1)


def test_response_due_in_6_months_clamped_to_a_short_month() -> None:
    assert response_due(Complaint(uuid.uuid4(), date(2026, 8, 31))) == date(2027, 2, 28)
    assert response_due(Complaint(uuid.uuid4(), date(2026, 5, 15))) == date(2026, 11, 15)


def c(received: date, ack: date | None = None, resp: date | None = None) -> Complaint:
    return Complaint(uuid.uuid4(), received, ack, resp)


def test_late_and_missing_acknowledgements_over_the_window() -> None:
    complaints = [
        c(date(2026, 9, 1), ack=date(2026, 9, 4)),   # Tue -> due Fri 4 Sep: on time
        c(date(2026, 9, 1), ack=date(2026, 9, 7)),   # late
        c(date(2026, 10, 1)),                        # never acknowledged: late by now
        c(date(2026, 10, 30), ack=date(2026, 11, 2)),  # Fri -> due Wed 4 Nov: on time
        c(date(2026, 8, 31), ack=date(2026, 9, 30)),  # outside the window (August)
    ]
    w = handling_window(complaints, ["2026-09", "2026-10"], date(2026, 11, 3))
    assert w.acknowledgements_due == 4
    assert len(w.late_acknowledgements) == 2
    assert w.late_acknowledgement_share == pytest.approx(0.5)
    assert [(m.month, m.acknowledgements_due, m.acknowledged_late) for m in w.months] == [
        ("2026-09", 2, 1), ("2026-10", 2, 1)]


def test_an_acknowledgement_not_yet_due_is_not_counted() -> None:
    w = handling_window([c(date(2026, 10, 30))], ["2026-10"], date(2026, 11, 2))
    assert w.acknowledgements_due == 0 and w.late_acknowledgement_share is None


def test_responses_due_in_the_window_answered_late_or_not_at_all() -> None:
    complaints = [
        c(date(2026, 3, 10), resp=date(2026, 9, 1)),   # due 10 Sep: on time
        c(date(2026, 3, 20), resp=date(2026, 9, 25)),  # due 20 Sep: late
        c(date(2026, 4, 2)),                           # due 2 Oct: not answered
        c(date(2026, 6, 1)),                           # due in December: not in the window
    ]
    w = handling_window(complaints, ["2026-09", "2026-10"], date(2026, 11, 3))
    assert w.responses_due == 3
    assert len(w.overdue_responses) == 2
    assert w.overdue_response_share == pytest.approx(2 / 3)


# -- visits ---------------------------------------------------------------------------------------

def visit(rating: str, visit_type: str = "enter_and_view") -> object:
    return feedback("insight_visit", theme="visit: Ward 7", visit_type=visit_type,
                    service="Ward 7", rating=rating, findings="Findings.", visited_on="2026-11-02")


@pytest.mark.parametrize("rating, severity", [
    ("inadequate", Severity.HIGH), ("requires_improvement", Severity.MODERATE)])
def test_visit_rated_inadequate_or_requires_improvement(rating: str, severity: Severity) -> None:
    f = visit_rating(visit(rating), VisitRules())  # type: ignore[arg-type]
    assert f is not None
    assert f.severity is severity and f.rule == "visit_rating" and f.theme == "visit: Ward 7"
    assert "Healthwatch Enter and View visit to Ward 7" in f.reason
    assert f.matched == f"rated {rating.replace('_', ' ')}"


@pytest.mark.parametrize("rating", ["good", "outstanding"])
def test_visit_rated_good_raises_nothing(rating: str) -> None:
    assert visit_rating(visit(rating), VisitRules()) is None  # type: ignore[arg-type]


def test_visit_severities_are_configurable() -> None:
    f = visit_rating(visit("inadequate"), VisitRules(inadequate=Severity.SERIOUS))  # type: ignore[arg-type]
    assert f is not None and f.severity is Severity.SERIOUS


# -- service change notices ----------------------------------------------------------------------

GOOD_NOTICE: dict[str, Any] = {"service": "Minor injuries unit", "change": "Overnight closure",
               "effective_from": "2027-04-01", "engagement_plan": True, "eia_done": True,
               "qia_done": True, "consultation_start": "2026-09-01",
               "consultation_end": "2026-11-24", "informed": ["healthwatch", "scrutiny"]}


def test_a_complete_notice_has_no_failings() -> None:
    assert service_change_failings(GOOD_NOTICE, ServiceChangeRules()) == []
    fb = feedback("service_change_notice", theme="service change: Minor injuries unit",
                  **GOOD_NOTICE)
    assert service_change(fb, ServiceChangeRules()) is None


def test_every_failing_is_named() -> None:
    notice = {**GOOD_NOTICE, "engagement_plan": False, "eia_done": False, "qia_done": False,
              "consultation_end": "2026-10-27", "informed": ["patients"]}
    assert service_change_failings(notice, ServiceChangeRules()) == [
        "no engagement plan", "no equality impact assessment (EIA)",
        "no quality impact assessment (QIA)",
        "consultation of 8.0 weeks, shorter than the minimum 12 weeks",
        "Healthwatch not informed", "overview and scrutiny committee not informed"]


def test_no_consultation_at_all_is_a_failing() -> None:
    notice = {**GOOD_NOTICE, "consultation_start": None, "consultation_end": None}
    assert service_change_failings(notice, ServiceChangeRules()) == [
        "no consultation period (minimum 12 weeks)"]
    assert service_change_failings(notice, ServiceChangeRules(minimum_consultation_weeks=0)) == []


def test_service_change_finding() -> None:
    fb = feedback("service_change_notice", theme="service change: Minor injuries unit",
                  **{**GOOD_NOTICE, "qia_done": False})
    f = service_change(fb, ServiceChangeRules())
    assert f is not None
    assert (f.rule, f.severity, f.theme) == ("service_change", Severity.MODERATE,
                                             "service change: Minor injuries unit")
    assert f.figures["failings"] == ["no quality impact assessment (QIA)"]
    assert f.matched == "no quality impact assessment (QIA)"


# -- the rules file ----------------------------------------------------------------------------

def test_shipped_rules_file_loads_and_equals_the_documented_defaults() -> None:
    rules = load_rules()
    assert rules.immediate.risk_score_threshold == 15
    assert rules.spc.min_points == 12 and rules.spc.screen_outliers
    assert rules.funnel.min_providers == 5 and rules.funnel.winsorise == 0.1
    assert rules.service_change.minimum_consultation_weeks == 12
    assert rules.complaint_handling.acknowledge_within_working_days == 3
    gp = rules.clusters_for("gp_alert", "admissions, DISCHARGES and transfers")
    assert [(r.name, r.count, r.window_days, r.severity) for r in gp] == [
        ("gp_alerts_discharge", 3, 30, Severity.HIGH)]
    assert [r.name for r in rules.clusters_for("complaint", "Communications")] == [
        "complaints_communication"]
    assert rules.clusters_for("complaint", "Admissions, discharges and transfers") == []
    assert DEFAULT_RULES.exists()


def test_another_rules_file_can_be_pointed_at(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("clusters:\n  - {name: falls, kinds: [complaint], theme: Patient care,"
                    " count: 2, window_days: 7, severity: serious}\n")
    rules = load_rules(path)
    assert [c.name for c in rules.clusters] == ["falls"]
    assert rules.spc.min_points == 12  # everything else keeps its default


def test_bad_rules_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_rules(tmp_path / "missing.yaml")
    with pytest.raises(ValidationError):
        MonitorRules.model_validate({"spc": {"min_points": 12, "fix_after_points": 6}})
    with pytest.raises(ValidationError):
        MonitorRules.model_validate({"spc": {"typo": 1}})
