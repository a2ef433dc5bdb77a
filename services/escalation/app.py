"""escalation: turns concerns into accountable action, by policy (services/escalation/policy.yaml).

Consumes: ``concern.raised.v1``, ``concern.updated.v2`` (and v1), ``concern.resolved.v1``,
``feedback.accepted.v1`` (insight visit reports only), ``meeting.reply.v1``.
Publishes (through the outbox): ``meeting.scheduled.v1``, ``meeting.rescheduled.v1``,
``meeting.cancelled.v1``, ``action.due_soon.v1``, ``action.overdue.v1``,
``concern.escalated.v1``, ``concern.closed.v1``, ``visit.scheduled.v1``,
``meeting.slot_proposed.v1``.
Stores: schema ``escalation`` (concerns, meetings, bookings, cqrm_agenda, watch_list, actions,
ladder_steps, visits, schedule, audit_log).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.escalation import schedule, store
from services.escalation.concerns import Change, agenda_item, merge, with_evidence
from services.escalation.config import EscalationPolicy, load_policy
from services.escalation.control import MeetingControl
from services.escalation.cqrm import next_cqrm
from services.escalation.http import add_routes
from services.escalation.meetings import MeetingPlanner
from services.escalation.people import People
from services.escalation.plans import SYSTEM, ActionPlans
from services.escalation.schedule import Job, Ticker
from services.escalation.visits import Visits
from shared.clock import Clock, utc_now
from shared.events import (
    Attendee,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    ConcernUpdatedV1,
    Event,
    FeedbackAccepted,
    MeetingReplied,
    MeetingSlotProposed,
)
from shared.outbox import Outbox
from shared.runtime import EventHandler, ServiceRuntime, subscriptions_of
from shared.settings import Settings
from shared.topology import Subscription, Topology

NAME = "escalation"
log = logging.getLogger(__name__)




class Escalation:
    """The handlers, with the policy, the people, the clock, and the parts they use."""

    def __init__(self, settings: Settings, policy: EscalationPolicy, clock: Clock = utc_now):
        self.policy = policy
        self.clock = clock
        self.people = People.from_settings(settings)
        self.evidence_listed = settings.evidence_listed
        self.meetings = MeetingPlanner(policy, self.people, settings.evidence_listed)
        self.control = MeetingControl(self.meetings, clock)
        self.plans = ActionPlans(policy, self.people, clock)
        self.plans.book_review_meeting = self.meetings.book_review_meeting
        self.visits = Visits(policy, self.people, clock)

    # -- handlers ----------------------------------------------------------------------------
    async def on_concern_raised(self, conn: asyncpg.Connection, concern: ConcernRaised,
                                outbox: Outbox) -> None:
        """Act on a new concern by the policy for its severity."""
        await self._act(conn, concern, outbox)

    async def on_concern_updated(self, conn: asyncpg.Connection, concern: ConcernUpdated,
                                 outbox: Outbox) -> None:
        """New evidence updates the meeting's agenda; a rise in severity may bring the meeting
        forward, or need one now. The update's evidence (v2: the new items only; v1: all) is
        added to the concern escalation knows, by feedback id (``store.add_evidence``), without
        loading what it holds."""
        await self._act(conn, concern, outbox)

    async def on_concern_resolved(self, conn: asyncpg.Connection, resolved: ConcernResolved,
                                  outbox: Outbox) -> None:
        """The concern is over: cancel its meeting if not yet held, take it off the next CQRM
        and stop its reminders."""
        now = self.clock()
        as_concern = ConcernRaised(
            concern_id=resolved.concern_id, fingerprint=resolved.fingerprint,
            provider=resolved.provider, rule=resolved.rule, theme=resolved.theme,
            severity=resolved.severity, reason=resolved.resolution, evidence=[],
            raised_at=resolved.resolved_at)
        row, _ = await store.claim_concern(conn, as_concern,
                                           self.policy.for_severity(resolved.severity).action,
                                           status="resolved")
        await store.set_concern_status(conn, resolved.concern_id, "resolved", now)
        detail: dict[str, Any] = {"resolution": resolved.resolution, "was": row["status"]}
        meeting = await store.meeting_for_concern(conn, resolved.concern_id)
        if meeting is not None and meeting["status"] == "scheduled" and meeting["starts_at"] > now:
            meeting = await store.lock_meeting(conn, meeting["meeting_id"])
            assert meeting is not None
            if await store.meeting_concerns(conn, meeting["meeting_id"]):
                # Other concerns of the provider remain on the agenda: the meeting stays.
                detail["meeting_agenda"] = await self.meetings.refresh(
                    conn, meeting, now, f"concern resolved: {resolved.resolution}")
            else:
                cancelled = await self.meetings.cancel(
                    conn, meeting, resolved.provider,
                    f"concern resolved: {resolved.resolution}", now)
                await outbox.add(cancelled)
                detail["meeting_cancelled"] = str(cancelled.meeting_id)
        item = await store.cqrm_item(conn, resolved.concern_id)
        if item is not None and (item["cqrm_at"] is None or item["cqrm_at"] > now) \
                and await store.set_cqrm_status(conn, resolved.concern_id, "withdrawn"):
            detail["cqrm_item_withdrawn"] = item["cqrm_at"].isoformat() if item["cqrm_at"] else None
        detail["jobs_cancelled"] = await schedule.cancel_for_concern(
            conn, resolved.concern_id, now, "concern resolved")
        await self._audit(conn, resolved.concern_id, resolved.provider.ods_code, now,
                          "concern resolved", detail, outbox)

    async def on_meeting_reply(self, conn: asyncpg.Connection, reply: MeetingReplied,
                               outbox: Outbox) -> None:
        """An attendee's reply (received by notification): recorded per attendee; when the
        provider's lead or the commissioner's lead declines a meeting still to come, the
        next free slot is proposed to the quality team."""
        now = self.clock()
        row = await store.lock_provider_and_meeting(conn, reply.meeting_id)
        if row is None:
            log.warning("reply to unknown meeting %s ignored", reply.meeting_id)
            return
        await store.set_rsvp(conn, reply.meeting_id, reply.attendee, {
            "partstat": reply.partstat, "at": reply.received_at.isoformat(),
            "sequence": reply.sequence})
        attendee = next((a for a in row["attendees"]
                         if a["email"].lower() == reply.attendee.lower()), None)
        role = attendee["role"] if attendee else "former attendee"
        detail: dict[str, Any] = {"meeting_id": str(reply.meeting_id), "reply": reply.partstat,
                                  "role": role, "sequence": reply.sequence}
        if reply.partstat == "declined" and attendee is not None \
                and role in ("provider quality lead", "commissioner quality lead") \
                and row["status"] == "scheduled" and row["starts_at"] > now:
            choice = await self.meetings.propose_slot(conn, row, now)
            await store.set_proposal(conn, reply.meeting_id, choice.start)
            proposal = MeetingSlotProposed(
                meeting_id=reply.meeting_id,
                provider=(await self.meetings.current(conn, row)).provider, title=row["title"],
                starts_at=row["starts_at"], proposed_starts_at=choice.start,
                proposed_ends_at=choice.end, declined_by=Attendee.model_validate(attendee),
                reason=f"the {role} declined the invitation (sequence {reply.sequence})")
            await outbox.add(proposal)
            detail["proposed"] = choice.start.isoformat()
        for concern_id in await store.meeting_concern_ids(conn, reply.meeting_id):
            await store.audit(conn, concern_id=concern_id, ods_code=row["ods_code"], at=now,
                              party="provider" if role == "provider quality lead"
                              else "commissioner", actor=reply.attendee,
                              action=f"meeting invitation {reply.partstat}", detail=detail,
                              event_id=outbox.cause.id if outbox.cause else None)

    async def on_visit_report(self, conn: asyncpg.Connection, fb: FeedbackAccepted,
                              outbox: Outbox) -> None:
        """An insight visit (or Enter and View) report: a visit happened; plan its re-visit."""
        await self.visits.record_visit(conn, fb, outbox)

    # -- acting on a concern -------------------------------------------------------------------
    async def _act(self, conn: asyncpg.Connection, incoming: ConcernRaised,
                   outbox: Outbox) -> None:
        now = self.clock()
        row, created = await store.claim_concern(
            conn, incoming, self.policy.for_severity(incoming.severity).action)
        # The union is taken by the store, set-based: only the update's items are written,
        # and only the latest few of the concern's are read back (for its agenda).
        added = await store.add_evidence(conn, incoming.concern_id, incoming.evidence)
        concern, change = merge(None if created else store.concern_from_row(row), incoming,
                                added)
        rule = self.policy.for_severity(concern.severity)
        await store.save_concern(conn, concern, rule.action)
        latest = await store.latest_evidence(conn, [concern.concern_id], self.evidence_listed)
        concern = with_evidence(concern, latest[concern.concern_id],
                                row["evidence_count"] + len(added))
        detail: dict[str, Any] = {"event": incoming.event_type, "severity": concern.severity,
                                  "change": change.describe(), "action": rule.action}
        if row["status"] != "open":
            detail["note"] = f"concern already {row['status']}: noted, no action"
        elif change.changed:
            if rule.action == "meeting":
                detail["meeting"] = await self._meeting(conn, concern, change, now, outbox)
            elif rule.action == "cqrm_agenda":
                detail["cqrm_at"] = (await self._cqrm_item(conn, concern, now)).isoformat()
            else:
                await store.put_watch_item(conn, concern, agenda_item(concern))
                detail["watch_list"] = True
            visit = await self.visits.consider_insight_visit(conn, concern, outbox, now)
            if visit is not None:
                detail["insight_visit"] = str(visit.visit_id)
        await self._audit(conn, concern.concern_id, concern.provider.ods_code, now,
                          "concern raised" if change.is_new else "concern updated", detail,
                          outbox)

    async def _meeting(self, conn: asyncpg.Connection, concern: ConcernRaised, change: Change,
                       now: datetime, outbox: Outbox) -> str:
        """The concern's place on its provider's remedial meeting: a meeting of its own if the
        provider has none booked and not yet started, else that meeting's agenda (brought
        forward if the concern needs it sooner)."""
        # The provider's lock first: one open meeting per provider, whatever the replicas.
        await store.lock_attendees(conn, [f"provider:{concern.provider.ods_code}"])
        row = await store.meeting_for_concern(conn, concern.concern_id)
        if row is None:
            open_meeting = await store.open_meeting_of_provider(
                conn, concern.provider.ods_code, now)
            if open_meeting is None:
                meeting = await self.meetings.book(conn, concern, now)
                await outbox.add(meeting)
                note = (f"booked {meeting.meeting_id} at {meeting.starts_at.isoformat()}"
                        + (f" (breach: {meeting.breach_reason})" if meeting.breach else ""))
            else:
                done = await self.meetings.refresh(
                    conn, open_meeting, now, f"{change.describe()} joins the agenda",
                    joining=concern, needed_by=self.meetings.deadline(concern.severity, now))
                note = f"joined meeting {open_meeting['meeting_id']}: {done}"
            await store.set_cqrm_status(conn, concern.concern_id, "moved_to_meeting")
            await store.add_ladder_step(conn, concern.concern_id, "remedial_meeting", now,
                                        f"{concern.severity} concern: {concern.reason}")
            await store.set_concern_level(conn, concern.concern_id, "remedial_meeting", now)
            return note
        if row["status"] != "scheduled":
            return f"meeting {row['meeting_id']} already {row['status']}; change noted"
        if row["starts_at"] <= now:
            return f"meeting {row['meeting_id']} has started; change noted for its outcome"
        row = await store.lock_meeting(conn, row["meeting_id"])
        assert row is not None
        needed_by = self.meetings.deadline(concern.severity, now) if change.severity_rose \
            else None
        done = await self.meetings.refresh(conn, row, now, change.describe(),
                                           needed_by=needed_by)
        return f"meeting {row['meeting_id']}: {done} (announced within the coalescing window)"

    async def _cqrm_item(self, conn: asyncpg.Connection, concern: ConcernRaised,
                         now: datetime) -> datetime:
        """Put the concern on its provider's next CQRM agenda (an item for a CQRM still to
        come keeps its place and gets the new text)."""
        item = await store.cqrm_item(conn, concern.concern_id)
        if item is not None and item["status"] == "open" and item["cqrm_at"] is not None \
                and item["cqrm_at"] > now:
            cqrm_at: datetime = item["cqrm_at"]
        else:
            cqrm_at = next_cqrm(now, self.policy.cqrm.pattern_for(concern.provider.ods_code),
                                self.policy.cqrm.minimum_notice_working_days)
        await store.put_cqrm_item(conn, concern, agenda_item(concern), cqrm_at)
        return cqrm_at

    async def _audit(self, conn: asyncpg.Connection, concern_id: Any, ods_code: str,
                     now: datetime, action: str, detail: dict[str, Any], outbox: Outbox) -> None:
        cause = outbox.cause
        published = [str(e.id) for e in outbox.added]
        await store.audit(conn, concern_id=concern_id, ods_code=ods_code, at=now,
                          party="system", actor=SYSTEM, action=action,
                          detail={**detail, "published": published},
                          event_id=cause.id if cause else None)


# What this service does, in two tables: event consumed -> handler, and job kind -> job.
# The third column is the routing-key suffix bound: of the whole feedback stream, only the
# insight visit reports (feedback.accepted.v1.insight_visit) reach escalation.
def handlers(e: Escalation) -> list[tuple[type[Event], EventHandler[Any], str]]:
    return [
        (ConcernRaised, e.on_concern_raised, "#"),
        (ConcernUpdated, e.on_concern_updated, "#"),
        (ConcernUpdatedV1, e.on_concern_updated, "#"),  # until its queues are drained
        (ConcernResolved, e.on_concern_resolved, "#"),
        (FeedbackAccepted, e.on_visit_report, "insight_visit"),
        (MeetingReplied, e.on_meeting_reply, "#"),
    ]


def jobs(e: Escalation) -> dict[str, Job]:
    return {
        "action_due_soon": e.plans.due_soon_job,
        "action_overdue": e.plans.overdue_job,
        "ladder_review": e.plans.ladder_review_job,
        "revisit_due": e.visits.revisit_due_job,
        "meeting_announce": e.meetings.announce_job,
    }


def subscriptions(topology: Topology) -> list[Subscription]:
    return subscriptions_of(build, topology)


class EscalationRuntime(ServiceRuntime):
    """The service runtime, with its domain (``escalation``) and its schedule (``ticker``)."""

    def __init__(self, settings: Settings, clock: Clock = utc_now) -> None:
        super().__init__(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
        self.escalation = Escalation(settings, load_policy(settings.escalation_policy_file), clock)
        self.ticker = Ticker(lambda: self.pool, jobs(self.escalation), self.outbox, clock,
                             interval=settings.escalation_tick_seconds)


def build(settings: Settings, clock: Clock = utc_now) -> EscalationRuntime:
    runtime = EscalationRuntime(settings, clock)
    for event_cls, handler, suffix in handlers(runtime.escalation):
        runtime.on_event(event_cls, handler, suffix=suffix)
    runtime.background(runtime.ticker.run)
    add_routes(runtime)
    add_gauges(runtime, clock)
    return runtime


def add_gauges(runtime: ServiceRuntime, clock: Clock) -> None:
    """Schedule jobs overdue to run or failed, actions and meetings by status."""
    jobs_gauge = runtime.metrics.gauge(
        "carewatch_escalation_jobs", "Schedule jobs: due (waiting for a tick), later, failed.",
        ["state"])
    actions_gauge = runtime.metrics.gauge(
        "carewatch_escalation_actions", "Remedial actions by status.", ["status"])
    meetings_gauge = runtime.metrics.gauge(
        "carewatch_escalation_meetings", "Remedial-action meetings by status.", ["status"])

    async def refresh(conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE done_at IS NULL AND due_at <= $1) AS due,"
            " count(*) FILTER (WHERE done_at IS NULL AND due_at > $1) AS later,"
            " count(*) FILTER (WHERE outcome = 'failed') AS failed FROM escalation.jobs",
            clock())
        for state in ("due", "later", "failed"):
            jobs_gauge.labels(NAME, state).set(row[state])
        for table, gauge, states in (
                ("actions", actions_gauge, ("open", "overdue", "completed")),
                ("meetings", meetings_gauge, ("scheduled", "held", "cancelled"))):
            counts = {r["status"]: r["n"] for r in await conn.fetch(
                f"SELECT status, count(*) AS n FROM escalation.{table} GROUP BY status")}
            for state in states:
                gauge.labels(NAME, state).set(counts.get(state, 0))

    runtime.gauge_refreshers.append(refresh)

