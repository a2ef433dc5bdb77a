"""Escalation policy: configuration (YAML), not code."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

from services.escalation.calendar import OfficeHours
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


class EscalationPolicy(BaseModel):
    severities: dict[Severity, SeverityPolicy]
    office_hours: OfficeHoursPolicy = OfficeHoursPolicy()
    minimum_notice_minutes: int = Field(default=60, ge=0)
    location: str = "To be confirmed"
    remedial_actions: dict[str, list[str]] = Field(default_factory=dict)

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
