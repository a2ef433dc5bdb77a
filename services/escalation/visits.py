"""Insight visits and re-visits.

A persistent concern (by the policy: a second serious concern on one provider and theme
within 90 days) plans an insight visit, announced at once with Healthwatch among the
attendees. A visit report (``feedback.accepted.v1`` of kind ``insight_visit``) shows a visit
happened: it fulfils the planned visit it matches, and plans the re-visit about 12 months
later that checks the recommendations are embedded. The re-visit is announced by the durable
schedule a few weeks before it is due.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta

import asyncpg

from services.escalation import schedule, store
from services.escalation.calendar import working_days_after, working_days_before
from services.escalation.config import EscalationPolicy
from services.escalation.ladder import matching_visit, needs_insight_visit, revisit_due_on
from services.escalation.people import People
from shared.events import ConcernRaised, FeedbackAccepted, Severity, VisitScheduled
from shared.outbox import Outbox

SYSTEM = "escalation"


class Visits:
    def __init__(self, policy: EscalationPolicy, people: People,
                 clock: Callable[[], datetime]) -> None:
        self.policy = policy
        self.people = people
        self.clock = clock
        self.hours = policy.hours()

    async def consider_insight_visit(self, conn: asyncpg.Connection, concern: ConcernRaised,
                                     outbox: Outbox, now: datetime) -> VisitScheduled | None:
        """Plan an insight visit if this concern makes its provider and theme persistent."""
        rule = self.policy.persistent_concerns
        if concern.severity.rank < rule.severity.rank:
            return None
        ods, theme = concern.provider.ods_code, concern.theme
        # One replica at a time counts a provider and theme, so two concerns handled at once
        # still see each other (the second to count sees the first committed).
        await store.lock_key(conn, f"visit:{ods}:{theme}")
        severities = [s.value for s in Severity if s.rank >= rule.severity.rank]
        raised = await store.serious_concerns_raised(
            conn, ods, theme, severities, now - timedelta(days=rule.within_days))
        last = await store.last_insight_visit_planned(conn, ods, theme)
        if not needs_insight_visit(raised, now, last, rule.rule()):
            return None
        today = now.astimezone(self.hours.tz).date()
        visit = VisitScheduled(
            visit_id=uuid.uuid4(), provider=concern.provider, visit_kind="insight_visit",
            due_on=working_days_after(today, self.policy.visits.insight_visit_within_working_days),
            reason=f"persistent concern: {len(raised)} {rule.severity}+ concerns on"
                   f" '{theme}' at {concern.provider.name} within {rule.within_days} days",
            concern_id=concern.concern_id, attendees=self.people.insight_visit(concern.provider))
        await store.insert_visit(conn, visit_id=visit.visit_id, provider=visit.provider,
                                 visit_kind=visit.visit_kind, due_on=visit.due_on,
                                 reason=visit.reason, at=now, theme=theme,
                                 concern_id=concern.concern_id)
        envelope = await outbox.add(visit)
        await store.audit(conn, concern_id=concern.concern_id, ods_code=ods, at=now,
                          party="system", actor=SYSTEM, action="insight visit planned",
                          detail={"visit_id": str(visit.visit_id),
                                  "due_on": visit.due_on.isoformat(), "reason": visit.reason},
                          event_id=envelope.id)
        return visit

    async def record_visit(self, conn: asyncpg.Connection, fb: FeedbackAccepted,
                           outbox: Outbox) -> uuid.UUID | None:
        """A visit report: the visit happened. Mark the planned visit it fulfils held (or
        record the visit), then plan its re-visit. Returns the re-visit's id."""
        now = self.clock()
        visited_on = _visited_on(fb)
        planned = await store.planned_visits(conn, fb.provider.ods_code)
        match = matching_visit([(str(v["visit_id"]), v["due_on"]) for v in planned], visited_on,
                               self.policy.visits.match_window_days)
        content = fb.content
        summary = (f"{content.get('visit_type', 'visit')} of {content.get('service', 'the service')}"
                   f" on {visited_on.isoformat()}, rated {content.get('rating', 'unrated')}")
        if match is not None:
            visit_id = uuid.UUID(match)
            await store.mark_visit_held(conn, visit_id, visited_on, fb.feedback_id)
            concern_id = next(v["concern_id"] for v in planned if v["visit_id"] == visit_id)
        else:
            visit_id, concern_id = uuid.uuid4(), None
            if not await store.insert_visit(
                    conn, visit_id=visit_id, provider=fb.provider, visit_kind="insight_visit",
                    due_on=visited_on, reason=f"visit report received: {summary}", at=now,
                    theme=fb.theme, status="held", visited_on=visited_on,
                    feedback_id=fb.feedback_id):
                return None  # this report was recorded already
        await store.audit(conn, concern_id=concern_id, ods_code=fb.provider.ods_code, at=now,
                          party="provider", actor=f"visit report {fb.provider_record_id}",
                          action="visit held", detail={"visit_id": str(visit_id),
                                                       "feedback_id": str(fb.feedback_id),
                                                       "summary": summary})
        return await self.plan_revisit(conn, visit_id, fb, visited_on, concern_id, now)

    async def plan_revisit(self, conn: asyncpg.Connection, visit_id: uuid.UUID,
                           fb: FeedbackAccepted, visited_on: date,
                           concern_id: uuid.UUID | None, now: datetime) -> uuid.UUID | None:
        """The re-visit about 12 months on (once per visit), and for a visit rated below
        good a sooner follow-up as well (planned with it, so once too)."""
        rules = self.policy.visits
        reason = (f"re-visit {rules.revisit_after_months} months after the visit of"
                  f" {visited_on.isoformat()}: check its recommendations are embedded")
        revisit_id = await self._plan(conn, fb, rules.revisit_after_months, visited_on, reason,
                                      concern_id, now, follows=visit_id)
        if revisit_id is None:
            return None
        rating = str(fb.content.get("rating") or "")
        if months := follow_up_months(rating, rules.follow_up_after_months,
                                      rules.revisit_after_months):
            reason = (f"follow-up {months} months after the visit of {visited_on.isoformat()},"
                      f" rated {rating.replace('_', ' ')}: check the first actions are under way")
            await self._plan(conn, fb, months, visited_on, reason, concern_id, now)
        return revisit_id

    async def _plan(self, conn: asyncpg.Connection, fb: FeedbackAccepted, months: int,
                    visited_on: date, reason: str, concern_id: uuid.UUID | None, now: datetime,
                    follows: uuid.UUID | None = None) -> uuid.UUID | None:
        """A visit ``months`` after ``visited_on``, announced ahead by the schedule."""
        rules = self.policy.visits
        due_on = revisit_due_on(visited_on, months)
        revisit_id = uuid.uuid4()
        if not await store.insert_visit(conn, visit_id=revisit_id, provider=fb.provider,
                                        visit_kind="revisit", due_on=due_on, reason=reason,
                                        at=now, theme=fb.theme, concern_id=concern_id,
                                        follows=follows):
            return None
        announce = max(now, self.hours.opening(
            working_days_before(due_on, rules.revisit_notice_working_days)))
        await schedule.schedule(conn, kind="revisit_due", due_at=announce,
                                payload={"visit_id": str(revisit_id)},
                                dedupe_key=f"revisit_due:{revisit_id}")
        await store.audit(conn, concern_id=concern_id, ods_code=fb.provider.ods_code, at=now,
                          party="system", actor=SYSTEM, action="re-visit planned",
                          detail={"visit_id": str(revisit_id), "reason": reason,
                                  "due_on": due_on.isoformat(),
                                  "announce_at": announce.isoformat()})
        return revisit_id

    async def revisit_due_job(self, conn: asyncpg.Connection, job: asyncpg.Record,
                              outbox: Outbox, now: datetime) -> str:
        """Announce a planned re-visit (visit.scheduled.v1, kind revisit)."""
        visit = await store.lock_visit(conn, uuid.UUID(job["payload"]["visit_id"]))
        if visit is None or visit["status"] != "planned":
            return "skipped: re-visit not planned"
        provider = store.provider_of(visit)
        event = VisitScheduled(visit_id=visit["visit_id"], provider=provider,
                               visit_kind="revisit", due_on=visit["due_on"],
                               reason=visit["reason"], concern_id=visit["concern_id"],
                               attendees=self.people.insight_visit(provider))
        envelope = await outbox.add(event)
        await store.audit(conn, concern_id=visit["concern_id"], ods_code=visit["ods_code"],
                          at=now, party="system", actor=SYSTEM, action="re-visit announced",
                          detail={"visit_id": str(visit["visit_id"]),
                                  "due_on": visit["due_on"].isoformat()}, event_id=envelope.id)
        return "done"


def _visited_on(fb: FeedbackAccepted) -> date:
    raw = fb.content.get("visited_on")
    try:
        return date.fromisoformat(raw) if isinstance(raw, str) else fb.occurred_on
    except ValueError:
        return fb.occurred_on


def follow_up_months(rating: str, follow_ups: dict[str, int], revisit_months: int) -> int | None:
    """How many months after a visit rated ``rating`` it is followed up, before its re-visit;
    None when it is not (rated good or outstanding, unrated, or no sooner than the re-visit)."""
    months = follow_ups.get(rating)
    return months if months is not None and 0 < months < revisit_months else None
