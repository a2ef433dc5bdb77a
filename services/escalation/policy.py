"""Escalation policy: configuration (YAML), not code."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

from services.escalation.calendar import OfficeHours
from services.escalation.cqrm import CqrmPattern
from services.escalation.ladder import LadderRule, PersistenceRule
from shared.events import Severity

DEFAULT_POLICY = Path(__file__).parent / "policy.yaml"


class SeverityPolicy(BaseModel):
    action: Literal["meeting", "cqrm_agenda", "watch_list"]
    within_working_days: int = Field(default=2, ge=0)
    duration_minutes: int = Field(default=60, ge=15, le=480)


class OfficeHoursPolicy(BaseModel):
    start: time = time(9, 0)
    end: time = time(17, 0)
    slot_minutes: int = Field(default=30, ge=5, le=120)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday"]


class CqrmPatternPolicy(BaseModel):
    """A recurring CQRM, e.g. the 2nd Tuesday of each month at 10:00 (-1: the last one)."""

    weekday: Weekday = "tuesday"
    week_of_month: Literal[-1, 1, 2, 3, 4] = 2
    start: time = time(10, 0)
    duration_minutes: int = Field(default=120, ge=15, le=480)

    def pattern(self) -> CqrmPattern:
        return CqrmPattern(weekday=WEEKDAYS.index(self.weekday),
                           week_of_month=self.week_of_month, start=self.start,
                           duration_minutes=self.duration_minutes)


class CqrmPolicy(BaseModel):
    default: CqrmPatternPolicy = CqrmPatternPolicy()
    # Providers whose CQRM follows another pattern, by ODS code.
    providers: dict[str, CqrmPatternPolicy] = Field(default_factory=dict)
    # An item goes on the first CQRM at least this many working days away.
    minimum_notice_working_days: int = Field(default=5, ge=0)

    def pattern_for(self, ods_code: str) -> CqrmPattern:
        return self.providers.get(ods_code, self.default).pattern()


class ActionPlanPolicy(BaseModel):
    reminder_working_days_before: int = Field(default=3, ge=0)


class LadderPolicy(BaseModel):
    steps: list[str] = Field(default_factory=lambda: ["enhanced_surveillance", "risk_summit"],
                             min_length=1)
    step_after_working_days: int = Field(default=10, ge=1)

    def rule(self) -> LadderRule:
        return LadderRule(tuple(self.steps), self.step_after_working_days)


class PersistencePolicy(BaseModel):
    severity: Severity = Severity.SERIOUS
    count: int = Field(default=2, ge=2)
    within_days: int = Field(default=90, ge=1)

    def rule(self) -> PersistenceRule:
        return PersistenceRule(self.count, self.within_days)


class VisitPolicy(BaseModel):
    insight_visit_within_working_days: int = Field(default=20, ge=1)
    revisit_after_months: int = Field(default=12, ge=1)
    # visit.scheduled.v1 for a re-visit goes out this many working days before it is due.
    revisit_notice_working_days: int = Field(default=20, ge=0)
    # A visit report fulfils a planned visit due at most this many days after the visit.
    match_window_days: int = Field(default=90, ge=0)


class EscalationPolicy(BaseModel):
    severities: dict[Severity, SeverityPolicy]
    office_hours: OfficeHoursPolicy = OfficeHoursPolicy()
    minimum_notice_minutes: int = Field(default=60, ge=0)
    location: str = "To be confirmed"
    remedial_actions: dict[str, list[str]] = Field(default_factory=dict)
    cqrm: CqrmPolicy = CqrmPolicy()
    action_plans: ActionPlanPolicy = ActionPlanPolicy()
    ladder: LadderPolicy = LadderPolicy()
    persistent_concerns: PersistencePolicy = PersistencePolicy()
    visits: VisitPolicy = VisitPolicy()

    def for_severity(self, severity: Severity) -> SeverityPolicy:
        return self.severities.get(severity, SeverityPolicy(action="watch_list"))

    def hours(self) -> OfficeHours:
        oh = self.office_hours
        return OfficeHours(start=oh.start, end=oh.end, slot_minutes=oh.slot_minutes)

    @property
    def minimum_notice(self) -> timedelta:
        return timedelta(minutes=self.minimum_notice_minutes)

    def actions_for(self, rule: str, triggers: list[str] | None = None) -> list[str]:
        """The actions listed for the rule and each of its triggers, else the defaults."""
        actions: dict[str, None] = {}
        for key in (rule, *(triggers or [])):
            actions.update(dict.fromkeys(self.remedial_actions.get(key, [])))
        return list(actions) or self.remedial_actions.get("default", [])


def load_policy(path: str | Path | None = None) -> EscalationPolicy:
    source = Path(path) if path else DEFAULT_POLICY
    try:
        data = yaml.safe_load(source.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"escalation policy file not found: {source}") from exc
    return EscalationPolicy.model_validate(data)
