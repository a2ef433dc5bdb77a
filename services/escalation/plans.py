"""Action plans: what the quality team records after a meeting, and what time does to it.

Commands (the CLI and the HTTP API call them, each in one transaction with its events in the
outbox): record a meeting's outcome with the agreed remedial actions, add an action, complete
one with its evidence, close a concern whose actions are all complete.

Jobs (run by the durable schedule): remind an action's owner before the due date; mark an
action overdue after it and climb the escalation ladder; look at a concern on a rung again.

Every command and job writes the audit trail.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from services.escalation import schedule, store
from services.escalation.config import EscalationPolicy
from services.escalation.ladder import (
    ActionState,
    Climb,
    next_step,
    overdue_at,
    reminder_at,
    review_day,
    working_days_left,
)
from services.escalation.people import People
from shared.events import (
    ActionDueSoon,
    ActionOverdue,
    ConcernClosed,
    ConcernEscalated,
    EscalationStep,
    MeetingScheduled,
    RemedialAction,
)
from shared.outbox import Outbox

SYSTEM = "escalation"
# (connection, the concern's locked row, its ladder history, now) -> the meeting booked.
ReviewMeetingBooker = Callable[[asyncpg.Connection, asyncpg.Record, list[EscalationStep],
                                datetime], Awaitable[MeetingScheduled]]


class NotFound(LookupError):
    """The concern, meeting or action does not exist."""


class Conflict(Exception):
    """The command does not apply to the thing in its current state."""


@dataclass(frozen=True)
class NewAction:
    description: str
    owner: str
    due_on: date


def remedial_action(row: asyncpg.Record) -> RemedialAction:
    return RemedialAction(action_id=row["action_id"], description=row["description"],
                          owner=row["owner"], due_on=row["due_on"], status=row["status"],
                          evidence_of_completion=row["evidence_of_completion"])


def action_state(row: asyncpg.Record, tz: Any) -> ActionState:
    completed = row["completed_at"]
    return ActionState(str(row["action_id"]), row["description"], row["due_on"],
                       completed.astimezone(tz).date() if completed else None)


def _action_view(row: asyncpg.Record) -> dict[str, Any]:
    return {k: row[k] for k in ("action_id", "concern_id", "meeting_id", "description", "owner",
                                "due_on", "status", "evidence_of_completion", "completed_at")}


class ActionPlans:
    def __init__(self, policy: EscalationPolicy, people: People,
                 clock: Callable[[], datetime]) -> None:
        self.policy = policy
        self.people = people
        self.clock = clock
        self.hours = policy.hours()
        # Books the review meeting of the ladder's top rung (set by the service).
        self.book_review_meeting: ReviewMeetingBooker | None = None

    def today(self, now: datetime) -> date:
        return now.astimezone(self.hours.tz).date()

    async def _open_concern(self, conn: asyncpg.Connection,
                            concern_id: uuid.UUID) -> asyncpg.Record:
        row = await store.lock_concern(conn, concern_id)
        if row is None:
            raise NotFound(f"no concern {concern_id}")
        if row["status"] != "open":
            raise Conflict(f"concern {concern_id} is {row['status']}")
        return row

    # -- commands --------------------------------------------------------------------------
    async def record_outcome(self, conn: asyncpg.Connection, outbox: Outbox,
                             meeting_id: uuid.UUID, *, outcome: str, actions: list[NewAction],
                             recorded_by: str) -> dict[str, Any]:
        """The meeting was held: keep what it decided and the action plan it agreed."""
        meeting = await store.get_meeting(conn, meeting_id)
        if meeting is None:
            raise NotFound(f"no meeting {meeting_id}")
        # The agenda's concerns: the action plan belongs to the first still open.
        on_agenda = await store.meeting_concerns(conn, meeting_id) or \
            [await self._open_concern(conn, meeting["concern_id"])]
        concern = await self._open_concern(conn, on_agenda[0]["concern_id"])
        meeting = await store.lock_meeting(conn, meeting_id)  # as of the lock
        assert meeting is not None
        if meeting["status"] != "scheduled":
            raise Conflict(f"meeting {meeting_id} is {meeting['status']}")
        now = self.clock()
        if now < meeting["starts_at"]:
            raise Conflict(f"meeting {meeting_id} has not started: it starts at"
                           f" {meeting['starts_at'].isoformat()}; an outcome can be recorded"
                           " once it has")
        await store.record_outcome(conn, meeting_id, outcome, now)
        for c in on_agenda:
            await store.audit(conn, concern_id=c["concern_id"], ods_code=c["ods_code"],
                              at=now, party="commissioner", actor=recorded_by,
                              action="meeting outcome recorded",
                              detail={"meeting_id": str(meeting_id), "outcome": outcome})
        added = [await self._add(conn, concern, meeting_id, a, recorded_by, now) for a in actions]
        return {"meeting_id": meeting_id, "status": "held", "outcome": outcome, "actions": added}

    async def add_action(self, conn: asyncpg.Connection, outbox: Outbox, concern_id: uuid.UUID,
                         action: NewAction, *, recorded_by: str) -> dict[str, Any]:
        """Add a remedial action to the concern's plan."""
        concern = await self._open_concern(conn, concern_id)
        meeting = await store.meeting_for_concern(conn, concern_id)
        return await self._add(conn, concern, meeting["meeting_id"] if meeting else None, action,
                               recorded_by, self.clock())

    async def _add(self, conn: asyncpg.Connection, concern: asyncpg.Record,
                   meeting_id: uuid.UUID | None, a: NewAction, by: str,
                   now: datetime) -> dict[str, Any]:
        if not a.description.strip() or not a.owner.strip():
            raise Conflict("an action needs a description and an owner")
        action_id = uuid.uuid4()
        await store.insert_action(conn, action_id=action_id, concern_id=concern["concern_id"],
                                  meeting_id=meeting_id, description=a.description,
                                  owner=a.owner, due_on=a.due_on, created_by=by, at=now)
        payload = {"action_id": str(action_id)}
        remind = reminder_at(a.due_on, now, self.policy.action_plans.reminder_working_days_before,
                             self.hours)
        if remind is not None:
            await schedule.schedule(conn, kind="action_due_soon", due_at=remind, payload=payload,
                                    concern_id=concern["concern_id"],
                                    dedupe_key=f"action_due_soon:{action_id}")
        await schedule.schedule(conn, kind="action_overdue",
                                due_at=max(now, overdue_at(a.due_on, self.hours)),
                                payload=payload, concern_id=concern["concern_id"],
                                dedupe_key=f"action_overdue:{action_id}")
        await store.audit(conn, concern_id=concern["concern_id"], ods_code=concern["ods_code"],
                          at=now, party="commissioner", actor=by, action="remedial action agreed",
                          detail={"action_id": str(action_id), "description": a.description,
                                  "owner": a.owner, "due_on": a.due_on.isoformat(),
                                  "reminder_at": remind.isoformat() if remind else None})
        row = await store.get_action(conn, action_id)
        assert row is not None
        return _action_view(row)

    async def complete_action(self, conn: asyncpg.Connection, outbox: Outbox,
                              action_id: uuid.UUID, *, evidence: str, completed_by: str,
                              party: str = "provider") -> dict[str, Any]:
        """The action is done; ``evidence`` says how we know."""
        action = await store.get_action(conn, action_id)
        if action is None:
            raise NotFound(f"no action {action_id}")
        concern = await self._open_concern(conn, action["concern_id"])
        action = await store.get_action(conn, action_id)
        assert action is not None
        if action["status"] == "completed":
            raise Conflict(f"action {action_id} is already completed")
        if not evidence.strip():
            raise Conflict("completing an action needs evidence of completion")
        now = self.clock()
        await store.complete_action(conn, action_id, evidence, completed_by, now)
        await schedule.cancel(conn, [f"action_due_soon:{action_id}", f"action_overdue:{action_id}"],
                              now, "action completed")
        await store.audit(conn, concern_id=concern["concern_id"], ods_code=concern["ods_code"],
                          at=now, party=party, actor=completed_by, action="remedial action completed",
                          detail={"action_id": str(action_id), "evidence": evidence,
                                  "was": action["status"], "due_on": action["due_on"].isoformat()})
        row = await store.get_action(conn, action_id)
        assert row is not None
        return _action_view(row)

    async def close_concern(self, conn: asyncpg.Connection, outbox: Outbox,
                            concern_id: uuid.UUID, *, closed_by: str,
                            reason: str) -> ConcernClosed:
        """Close a concern whose actions are all complete; quality-monitor then resolves it
        (concern.resolved.v1), which cancels a meeting not yet held."""
        concern = await self._open_concern(conn, concern_id)
        unfinished = [a for a in await store.actions_of(conn, concern_id)
                      if a["status"] != "completed"]
        if unfinished:
            raise Conflict(f"{len(unfinished)} action(s) not completed: " + "; ".join(
                f"{a['action_id']} ({a['status']}, due {a['due_on']})" for a in unfinished))
        now = self.clock()
        await store.set_concern_status(conn, concern_id, "closed", now)
        await schedule.cancel_for_concern(conn, concern_id, now, "concern closed")
        closed = ConcernClosed(concern_id=concern_id, provider=store.provider_of(concern),
                               closed_by=closed_by, reason=reason, closed_at=now)
        envelope = await outbox.add(closed)
        await store.audit(conn, concern_id=concern_id, ods_code=concern["ods_code"], at=now,
                          party="commissioner", actor=closed_by, action="concern closed",
                          detail={"reason": reason}, event_id=envelope.id)
        return closed

    # -- jobs ------------------------------------------------------------------------------
    async def _job_action(self, conn: asyncpg.Connection,
                          job: asyncpg.Record) -> tuple[asyncpg.Record, asyncpg.Record] | str:
        action_id = uuid.UUID(job["payload"]["action_id"])
        action = await store.get_action(conn, action_id)
        if action is None:
            return "skipped: no such action"
        concern = await store.lock_concern(conn, action["concern_id"])
        assert concern is not None
        if concern["status"] != "open":
            return f"skipped: concern {concern['status']}"
        action = await store.get_action(conn, action_id)
        assert action is not None
        if action["status"] != "open":
            return f"skipped: action {action['status']}"
        return concern, action

    async def due_soon_job(self, conn: asyncpg.Connection, job: asyncpg.Record, outbox: Outbox,
                           now: datetime) -> str:
        """Remind the owner that an open action is due soon."""
        found = await self._job_action(conn, job)
        if isinstance(found, str):
            return found
        concern, action = found
        left = working_days_left(self.today(now), action["due_on"])
        envelope = await outbox.add(ActionDueSoon(
            concern_id=concern["concern_id"], provider=store.provider_of(concern),
            action=remedial_action(action), days_left=left))
        await store.audit(conn, concern_id=concern["concern_id"], ods_code=concern["ods_code"],
                          at=now, party="system", actor=SYSTEM, action="action due soon: reminder sent",
                          detail={"action_id": str(action["action_id"]), "working_days_left": left},
                          event_id=envelope.id)
        return "done"

    async def overdue_job(self, conn: asyncpg.Connection, job: asyncpg.Record, outbox: Outbox,
                          now: datetime) -> str:
        """An action still open after its due date: overdue, and the concern climbs a rung."""
        found = await self._job_action(conn, job)
        if isinstance(found, str):
            return found
        concern, action = found
        today = self.today(now)
        if today <= action["due_on"]:
            return "skipped: not yet overdue"
        await store.mark_overdue(conn, action["action_id"], today)
        action = await store.get_action(conn, action["action_id"])
        assert action is not None
        envelope = await outbox.add(ActionOverdue(
            concern_id=concern["concern_id"], provider=store.provider_of(concern),
            action=remedial_action(action), days_overdue=(today - action["due_on"]).days))
        await store.audit(conn, concern_id=concern["concern_id"], ods_code=concern["ods_code"],
                          at=now, party="system", actor=SYSTEM, action="action overdue",
                          detail={"action_id": str(action["action_id"]),
                                  "due_on": action["due_on"].isoformat()}, event_id=envelope.id)
        climbed = await self.climb(conn, concern, outbox, now)
        return f"done; concern climbed to {climbed.level}" if climbed else "done"

    async def ladder_review_job(self, conn: asyncpg.Connection, job: asyncpg.Record,
                                outbox: Outbox, now: datetime) -> str:
        """Look again at a concern on a rung: still overdue actions make it climb."""
        concern = await store.lock_concern(conn, uuid.UUID(job["payload"]["concern_id"]))
        if concern is None or concern["status"] != "open":
            return "skipped: concern not open"
        climbed = await self.climb(conn, concern, outbox, now)
        return f"climbed to {climbed.level}" if climbed else "skipped: no climb due"

    async def climb(self, conn: asyncpg.Connection, concern: asyncpg.Record, outbox: Outbox,
                    now: datetime) -> ConcernEscalated | None:
        """Move the (locked) concern up the ladder if its actions say so, and announce it."""
        rule = self.policy.ladder.rule()
        today = self.today(now)
        actions = [action_state(a, self.hours.tz)
                   for a in await store.actions_of(conn, concern["concern_id"])]
        since = concern["level_since"]
        step: Climb | None = next_step(concern["level"], actions, today,
                                       since.astimezone(self.hours.tz).date() if since else None,
                                       rule)
        if step is None or not await store.add_ladder_step(conn, concern["concern_id"],
                                                           step.level, now, step.reason):
            return None
        await store.set_concern_level(conn, concern["concern_id"], step.level, now)
        provider = store.provider_of(concern)
        history = [EscalationStep(level=r["level"], at=r["at"], reason=r["reason"])
                   for r in await store.ladder_steps(conn, concern["concern_id"])]
        review = step.level == self.policy.ladder.review_meeting_at
        meeting = None
        if review and self.book_review_meeting is not None:
            # The Rapid Quality Review (the CCG-era risk summit): a real meeting, invited.
            meeting = await self.book_review_meeting(conn, concern, history, now)
            await outbox.add(meeting)
            attendees = meeting.attendees
        else:
            attendees = (self.people.risk_summit(provider) if review
                         else self.people.meeting(provider))
        escalated = ConcernEscalated(concern_id=concern["concern_id"], provider=provider,
                                     level=step.level, reason=step.reason, history=history,
                                     attendees=attendees)
        envelope = await outbox.add(escalated)
        if step.level != rule.steps[-1]:
            await schedule.schedule(
                conn, kind="ladder_review", due_at=self.hours.opening(review_day(today, rule)),
                payload={"concern_id": str(concern["concern_id"])},
                concern_id=concern["concern_id"],
                dedupe_key=f"ladder_review:{concern['concern_id']}:{step.level}")
        await store.audit(conn, concern_id=concern["concern_id"], ods_code=concern["ods_code"],
                          at=now, party="system", actor=SYSTEM,
                          action=f"concern escalated to {step.level}",
                          detail={"reason": step.reason,
                                  "attendees": [a.email for a in attendees],
                                  **({"review_meeting": str(meeting.meeting_id),
                                      "review_meeting_at": meeting.starts_at.isoformat()}
                                     if meeting else {})},
                          event_id=envelope.id)
        return escalated
