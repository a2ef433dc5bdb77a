"""What a meeting becomes when its concerns change or a person moves it: pure decisions over
plain data (no database, no clock), used by ``meetings.MeetingPlanner``, which loads what
they need, asks ``rota.choose_slot`` for a slot when they say one is needed, and stores the
result.

- Who attends: a commissioner quality lead and a lay member, and a safeguarding lead when a
  concern on the agenda is about safeguarding (``attendee_roles``).
- The agenda: the concerns' items in order, the highest severity, the remedial actions of
  their rules and triggers (``meeting_details``).
- A concern that needs the meeting by an earlier time brings it forward when a slot is free
  before the booked one, else the meeting keeps its time and is marked as a breach
  (``revise``); a meeting moved by a person is a breach when it ends past its deadline
  (``rescheduled``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.escalation.concerns import EVIDENCE_LISTED, agenda, meeting_title
from services.escalation.rota import Choice
from shared.events import Attendee, ConcernRaised, MeetingScheduled

QUALITY_LEAD, LAY_MEMBER, SAFEGUARDING_LEAD = (
    "commissioner quality lead", "lay member", "safeguarding lead")


def is_safeguarding(concern: ConcernRaised) -> bool:
    triggers = concern.figures.get("triggers") or []
    return "safeguarding" in (concern.rule, concern.theme, *triggers)


def attendee_roles(concerns: Sequence[ConcernRaised]) -> list[str]:
    """The commissioner's roles a meeting on these concerns needs (an empty agenda too)."""
    roles = [QUALITY_LEAD, LAY_MEMBER]
    if any(is_safeguarding(c) for c in concerns):
        roles.append(SAFEGUARDING_LEAD)
    return roles


def meeting_details(concerns: Sequence[ConcernRaised],
                    actions_for: Callable[[str, list[str] | None], list[str]],
                    listed: int = EVIDENCE_LISTED) -> dict[str, Any]:
    """Title, severity, agenda and remedial actions of a meeting on these concerns (one at
    least); ``actions_for(rule, triggers)`` is the policy's list of actions; each concern
    lists its latest ``listed`` items of evidence."""
    severity = max((c.severity for c in concerns), key=lambda s: s.rank)
    lead = max(concerns, key=lambda c: c.severity.rank)
    items: list[str] = []
    actions: dict[str, None] = {}
    for n, c in enumerate(concerns, 1):
        prefix = f"[{n}] " if len(concerns) > 1 else ""
        items += [prefix + item for item in agenda(c, listed)[:-1]]
        actions.update(dict.fromkeys(actions_for(c.rule, c.figures.get("triggers"))))
    items.append("Remedial actions requested and the provider's response.")
    title = meeting_title(lead.model_copy(update={"severity": severity}))
    if len(concerns) > 1:
        title += f" and {len(concerns) - 1} more concern(s)"
    return {"title": title, "severity": severity, "agenda": items,
            "remedial_actions": list(actions)}


@dataclass(frozen=True)
class Revision:
    """The meeting's new fields, the change to announce, and the slot its bookings move to
    (None: they stay)."""

    update: dict[str, Any]
    note: str
    move_to: Choice | None = None


def earlier_slot_needed(current: MeetingScheduled, needed_by: datetime | None) -> bool:
    """Whether the change needs a slot search: it needs the meeting by a time before its
    deadline, and the meeting as booked ends after that time."""
    return needed_by is not None and needed_by < current.deadline and \
        current.ends_at > needed_by


def revise(current: MeetingScheduled, details: dict[str, Any], change: str, *,
           needed_by: datetime | None = None, earlier: Choice | None = None,
           attendees: Sequence[Attendee] = ()) -> Revision:
    """The meeting after its concerns changed: ``details`` (from ``meeting_details``; empty
    when no concern is left open), and, when the change needs the meeting by ``needed_by``,
    the new deadline and, if ``earlier_slot_needed``, the move to ``earlier`` (the first slot
    found by then, with its ``attendees``) when it starts before the booked one, else a
    breach."""
    update = dict(details)
    if needed_by is None or needed_by >= current.deadline:
        return Revision(update, f"agenda updated ({change})")
    update["deadline"] = needed_by
    if not earlier_slot_needed(current, needed_by):
        return Revision(update, f"agenda updated; the meeting is already early enough ({change})")
    if earlier is None:
        raise ValueError("the meeting is needed earlier: give the first slot found (earlier)")
    if earlier.start < current.starts_at:
        update |= {"starts_at": earlier.start, "ends_at": earlier.end,
                   "breach": earlier.breach, "breach_reason": earlier.breach_reason,
                   "attendees": list(attendees)}
        return Revision(update, f"brought forward ({change})", earlier)
    update |= {"breach": True, "breach_reason": (
        f"no slot before {needed_by.isoformat()} for the meeting brought forward")}
    return Revision(update, f"agenda updated; no earlier slot is free ({change})")


def rescheduled(current: MeetingScheduled, choice: Choice, attendees: Sequence[Attendee],
                reason: str) -> Revision:
    """A meeting a person moved to ``choice``: a breach when it now ends past its deadline."""
    breach = choice.end > current.deadline
    return Revision({"starts_at": choice.start, "ends_at": choice.end, "breach": breach,
                     "breach_reason": f"rescheduled by a person: {reason}" if breach else None,
                     "attendees": list(attendees)},
                    f"rescheduled to {choice.start.isoformat()}: {reason}", choice)
