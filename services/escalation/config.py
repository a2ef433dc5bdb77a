"""escalation's configuration: the escalation policy, YAML not code (``policy.yaml`` beside
this file, or the file named by ``CAREWATCH_ESCALATION_POLICY_FILE``), read by ``load_policy``."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator

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


# The National Quality Board's 2022 guidance on quality risk response and escalation, and
# the CCG-era names (NQB 2017: Quality Surveillance Groups and risk summits) a deployment
# may keep. Each preset: the rungs above the remedial meeting, the rung that books the
# review meeting with the system's partners, and what people call each thing.
LADDER_PRESETS: dict[str, dict[str, object]] = {
    "nqb_2022": {
        "steps": ["enhanced_surveillance", "intensive_support"],
        "review_meeting_at": "intensive_support",
        "names": {"routine": "Routine quality monitoring",
                  "remedial_meeting": "Remedial action meeting",
                  "enhanced_surveillance": "Enhanced surveillance",
                  "intensive_support": "Intensive support",
                  "review_meeting": "Rapid Quality Review",
                  "group": "System Quality Group"},
    },
    "ccg": {
        "steps": ["enhanced_surveillance", "risk_summit"],
        "review_meeting_at": "risk_summit",
        "names": {"routine": "Routine surveillance",
                  "remedial_meeting": "Remedial action meeting",
                  "enhanced_surveillance": "Enhanced surveillance",
                  "risk_summit": "Risk summit",
                  "review_meeting": "Risk summit",
                  "group": "Quality Surveillance Group"},
    },
}


class LadderPolicy(BaseModel):
    """The escalation ladder: ``naming`` picks a preset (``nqb_2022`` or ``ccg``); ``steps``,
    ``review_meeting_at`` and ``names`` override it."""

    naming: Literal["nqb_2022", "ccg"] = "nqb_2022"
    steps: list[str] = Field(default_factory=list)
    review_meeting_at: str | None = None
    names: dict[str, str] = Field(default_factory=dict)
    step_after_working_days: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _preset(self) -> LadderPolicy:
        preset = LADDER_PRESETS[self.naming]
        if not self.steps:
            self.steps = list(preset["steps"])  # type: ignore[call-overload]
        if self.review_meeting_at is None:
            self.review_meeting_at = str(preset["review_meeting_at"])
        self.names = {**preset["names"], **self.names}  # type: ignore[dict-item]
        if self.review_meeting_at not in self.steps:
            raise ValueError(f"review_meeting_at {self.review_meeting_at!r} is not one of the"
                             f" steps {self.steps}")
        return self

    def rule(self) -> LadderRule:
        return LadderRule(tuple(self.steps), self.step_after_working_days)

    def name(self, key: str) -> str:
        return self.names.get(key, key.replace("_", " ").capitalize())


class PersistencePolicy(BaseModel):
    severity: Severity = Severity.SERIOUS
    count: int = Field(default=2, ge=2)
    within_days: int = Field(default=90, ge=1)

    def rule(self) -> PersistenceRule:
        return PersistenceRule(self.count, self.within_days)


class VisitPolicy(BaseModel):
    insight_visit_within_working_days: int = Field(default=20, ge=1)
    revisit_after_months: int = Field(default=12, ge=1)
    # A visit rated below "good" is followed up sooner too (months after it, by rating), as
    # well as re-visited after revisit_after_months.
    follow_up_after_months: dict[str, int] = Field(
        default_factory=lambda: {"requires_improvement": 4, "inadequate": 3})
    # visit.scheduled.v1 for a re-visit goes out this many working days before it is due.
    revisit_notice_working_days: int = Field(default=20, ge=0)
    # A visit report fulfils a planned visit due at most this many days after the visit.
    match_window_days: int = Field(default=90, ge=0)


class Venue(BaseModel):
    location: str
    url: str | None = None


class OnlineMeetingsPolicy(BaseModel):
    """Where meetings happen: an online-meeting room per organiser (by e-mail), else the
    default room; each room has a joining URL. The invitation's LOCATION names the room and
    its URL carries the link."""

    service: str = "Microsoft Teams"
    rooms: dict[str, str] = Field(default_factory=dict)        # room name -> joining URL
    organisers: dict[str, str] = Field(default_factory=dict)   # organiser e-mail -> room name
    default_room: str | None = None
    # With no room configured, the meeting is held here (an address).
    in_person: str = "The ICB's offices"

    @model_validator(mode="after")
    def _rooms_known(self) -> OnlineMeetingsPolicy:
        for room in [*self.organisers.values(), *([self.default_room] if self.default_room
                                                   else [])]:
            if room not in self.rooms:
                raise ValueError(f"online meeting room {room!r} has no URL under rooms")
        return self

    def venue(self, organiser_email: str, room: str | None = None) -> Venue:
        name = room or self.organisers.get(organiser_email.lower()) or self.default_room
        if name is None:
            return Venue(location=self.in_person)
        url = self.rooms[name]
        return Venue(location=f"{self.service}: {name} ({url})", url=url)


class MeetingsPolicy(BaseModel):
    # Changes to one meeting within this many seconds go out as one updated invitation.
    coalesce_seconds: int = Field(default=60, ge=0)
    # The Rapid Quality Review: within this many working days of the climb, this long.
    rapid_review_within_working_days: int = Field(default=5, ge=0)
    rapid_review_duration_minutes: int = Field(default=120, ge=30, le=480)
    rapid_review_room: str | None = None


class EscalationPolicy(BaseModel):
    severities: dict[Severity, SeverityPolicy]
    office_hours: OfficeHoursPolicy = OfficeHoursPolicy()
    minimum_notice_minutes: int = Field(default=60, ge=0)
    remedial_actions: dict[str, list[str]] = Field(default_factory=dict)
    cqrm: CqrmPolicy = CqrmPolicy()
    action_plans: ActionPlanPolicy = ActionPlanPolicy()
    ladder: LadderPolicy = LadderPolicy()
    persistent_concerns: PersistencePolicy = PersistencePolicy()
    visits: VisitPolicy = VisitPolicy()
    online_meetings: OnlineMeetingsPolicy = OnlineMeetingsPolicy()
    meetings: MeetingsPolicy = MeetingsPolicy()

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
