"""The escalation ladder and the clock of an action plan. Pure functions over plain data.

After the remedial-action meeting the provider owes the actions it agreed. An action that runs
past its due date moves the concern up the ladder: enhanced surveillance, then a Quality
Surveillance Group risk summit. A concern climbs again when another action becomes overdue
after the last step, or when actions are still overdue a set number of working days after it.
Concerns that keep coming back (a second serious concern on one provider and theme within 90
days) earn an insight visit; every visit earns a re-visit about a year later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.escalation.calendar import (
    OfficeHours,
    next_working_day,
    working_days_after,
    working_days_before,
    working_days_between,
)
from shared.workdays import months_after


@dataclass(frozen=True)
class ActionState:
    """What the ladder needs to know of one remedial action."""

    action_id: str
    description: str
    due_on: date
    completed_on: date | None = None

    def is_overdue(self, today: date) -> bool:
        return self.completed_on is None and today > self.due_on

    @property
    def overdue_from(self) -> date:
        """The first working day on which the action counts as overdue."""
        return working_days_after(self.due_on, 1)


@dataclass(frozen=True)
class LadderRule:
    """The rungs above the remedial meeting, lowest first, and how long a rung holds while
    actions stay overdue."""

    steps: tuple[str, ...] = ("enhanced_surveillance", "risk_summit")
    step_after_working_days: int = 10


@dataclass(frozen=True)
class Climb:
    level: str
    reason: str


def _describe(actions: Sequence[ActionState], today: date) -> str:
    parts = [f"'{a.description}' (due {a.due_on.isoformat()}, {(today - a.due_on).days} days"
             " overdue)" for a in actions]
    return "; ".join(parts)


def next_step(current: str | None, actions: Sequence[ActionState], today: date,
              last_step_on: date | None, rule: LadderRule = LadderRule()) -> Climb | None:
    """The rung the concern climbs to today, or None if it stays where it is.

    ``current`` is the concern's level (None or ``remedial_meeting``: not yet on the ladder's
    upper rungs); ``last_step_on`` the day it reached it.
    """
    overdue = [a for a in actions if a.is_overdue(today)]
    if not overdue:
        return None
    index = rule.steps.index(current) if current in rule.steps else -1
    if index == len(rule.steps) - 1:
        return None  # already at the top
    target = rule.steps[index + 1]
    if index == -1 or last_step_on is None:
        return Climb(target, f"{len(overdue)} remedial action(s) overdue: "
                             f"{_describe(overdue, today)}")
    newly = [a for a in overdue if a.overdue_from > last_step_on]
    if newly:
        return Climb(target, f"further action(s) overdue since {current} began on"
                             f" {last_step_on.isoformat()}: {_describe(newly, today)}")
    held = working_days_between(last_step_on, today)
    if held >= rule.step_after_working_days:
        return Climb(target, f"action(s) still overdue {held} working days after {current}"
                             f" began: {_describe(overdue, today)}")
    return None


def review_day(last_step_on: date, rule: LadderRule = LadderRule()) -> date:
    """When a concern on a rung is looked at again."""
    return working_days_after(last_step_on, rule.step_after_working_days)


# -- the clock of an action ------------------------------------------------------------------

def reminder_at(due_on: date, now: datetime, working_days_ahead: int,
                hours: OfficeHours) -> datetime | None:
    """When to remind the owner that an action is due: opening time ``working_days_ahead``
    working days before the due date; at once if that has passed and the action is not yet
    due; never if it is already past due."""
    at = hours.opening(working_days_before(due_on, working_days_ahead))
    if at > now:
        return at
    return now if now.astimezone(hours.tz).date() <= due_on else None


def overdue_at(due_on: date, hours: OfficeHours) -> datetime:
    """When an action left open counts as overdue: opening time of the next working day."""
    return hours.opening(working_days_after(due_on, 1))


def working_days_left(today: date, due_on: date) -> int:
    return max(0, working_days_between(today, due_on))


# -- persistence and visits --------------------------------------------------------------------

@dataclass(frozen=True)
class PersistenceRule:
    """``count`` concerns of at least ``severity`` on one provider and theme within
    ``within_days`` make a concern persistent."""

    count: int = 2
    within_days: int = 90


def is_persistent(raised: Sequence[datetime], now: datetime,
                  rule: PersistenceRule = PersistenceRule()) -> bool:
    """Whether the concerns raised at these instants (this one included) are persistent."""
    since = now - timedelta(days=rule.within_days)
    return sum(1 for at in raised if at >= since) >= rule.count


def needs_insight_visit(raised: Sequence[datetime], now: datetime, last_visit_planned: datetime | None,
                        rule: PersistenceRule = PersistenceRule()) -> bool:
    """Persistent, and no insight visit was planned for the same provider and theme in the
    window already (one visit answers one run of concerns)."""
    if not is_persistent(raised, now, rule):
        return False
    return last_visit_planned is None or now - last_visit_planned > timedelta(days=rule.within_days)


def revisit_due_on(visited_on: date, months: int = 12) -> date:
    """The re-visit that checks a visit's recommendations are embedded: about ``months`` later,
    on a working day."""
    return next_working_day(months_after(visited_on, months))


def matching_visit(planned: Sequence[tuple[str, date]], visited_on: date,
                   window_days: int = 90) -> str | None:
    """The planned visit (id, due date) that a visit made on ``visited_on`` fulfils: the
    earliest one due no more than ``window_days`` after it."""
    candidates = sorted((due, vid) for vid, due in planned
                        if (due - visited_on).days <= window_days)
    return candidates[0][1] if candidates else None
