"""escalation's store (services/escalation/store.py) over dicts, for the handler unit tests:
the queries of ``Escalation``'s handlers, ``MeetingPlanner`` (booking, joining, cancelling,
proposing a slot) and ``ActionPlans`` (the ladder). The pure helpers (``concern_from_row``,
``provider_of``) are the real ones. What it does not model: locks (``lock_*`` only record the
keys), the exclusion constraints on bookings, and transactions; those are PostgreSQL's, and
tested against it in tests/integration/test_escalation*.py and test_meetings*.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from services.escalation import store as real_store
from services.escalation.calendar import Interval
from services.escalation.concerns import KnownConcern
from shared.events import ConcernRaised, Evidence, MeetingScheduled


def person(email: str, role: str, name: str | None = None, **fields: Any) -> dict[str, Any]:
    """A row of ``escalation.people`` with the table's defaults."""
    return {"email": email.lower(), "name": name or email, "role": role,
            "works_from": time(9, 0), "works_until": time(17, 0),
            "working_days": [0, 1, 2, 3, 4], "max_meetings_per_day": 3, "buffer_minutes": 30,
            "active": True} | fields


def _overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@dataclass
class FakeEscalationStore:
    concerns: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    evidence: dict[uuid.UUID, list[Evidence]] = field(default_factory=dict)
    cqrm: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    watch: dict[uuid.UUID, str] = field(default_factory=dict)
    meetings: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    agenda: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # concern -> meeting
    people: dict[str, dict[str, Any]] = field(default_factory=dict)  # by email
    # (meeting, attendee key, start, end, buffer minutes): the bookings table.
    bookings: list[tuple[uuid.UUID, str, datetime, datetime, int]] = field(default_factory=list)
    away: dict[str, list[Interval]] = field(default_factory=dict)  # unavailability by email
    actions: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    ladder: list[dict[str, Any]] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    audit_log: list[dict[str, Any]] = field(default_factory=list)

    concern_from_row = staticmethod(real_store.concern_from_row)
    provider_of = staticmethod(real_store.provider_of)

    # -- concerns ------------------------------------------------------------------------
    async def claim_concern(self, conn: object, c: ConcernRaised, action: str,
                            status: str = "open") -> tuple[dict[str, Any], bool]:
        created = c.concern_id not in self.concerns
        if created:
            self.concerns[c.concern_id] = {
                "concern_id": c.concern_id, "fingerprint": c.fingerprint,
                "ods_code": c.provider.ods_code,
                "provider": c.provider.model_dump(mode="json"), "rule": c.rule,
                "theme": c.theme, "severity": c.severity.value, "reason": c.reason,
                "figures": c.figures, "action": action, "status": status,
                "raised_at": c.raised_at, "updated_at": c.raised_at, "evidence_count": 0,
                "level": None, "level_since": None}
        return dict(self.concerns[c.concern_id]), created

    async def lock_concern(self, conn: object, concern_id: uuid.UUID) -> dict[str, Any] | None:
        row = self.concerns.get(concern_id)
        return dict(row) if row is not None else None

    get_concern = lock_concern

    async def add_evidence(self, conn: object, concern_id: uuid.UUID,
                           evidence: list[Evidence]) -> list[Evidence]:
        held = self.evidence.setdefault(concern_id, [])
        known = {e.feedback_id for e in held}
        added = []
        for item in evidence:
            if item.feedback_id not in known:
                known.add(item.feedback_id)
                added.append(item)
        held.extend(added)
        self.concerns[concern_id]["evidence_count"] = len(held)
        return added

    async def save_concern(self, conn: object, c: ConcernRaised, action: str) -> None:
        self.concerns[c.concern_id] |= {"severity": c.severity.value, "reason": c.reason,
                                        "figures": c.figures, "action": action,
                                        "raised_at": c.raised_at}

    async def latest_evidence(self, conn: object, concern_ids: list[uuid.UUID],
                              limit: int) -> dict[uuid.UUID, list[Evidence]]:
        return {cid: self.evidence.get(cid, [])[-limit:] for cid in concern_ids}

    async def load_concerns(self, conn: object, rows: list[dict[str, Any]],
                            listed: int) -> list[KnownConcern]:
        latest = await self.latest_evidence(conn, [r["concern_id"] for r in rows], listed)
        return [self.concern_from_row(r, latest[r["concern_id"]]) for r in rows]

    async def set_concern_status(self, conn: object, concern_id: uuid.UUID, status: str,
                                 at: datetime) -> None:
        self.concerns[concern_id]["status"] = status

    async def set_concern_level(self, conn: object, concern_id: uuid.UUID, level: str,
                                at: datetime) -> None:
        self.concerns[concern_id] |= {"level": level, "level_since": at}

    async def serious_concerns_raised(self, conn: object, ods_code: str, theme: str,
                                      severities: list[str], since: datetime) -> list[datetime]:
        return [c["raised_at"] for c in self.concerns.values()
                if c["ods_code"] == ods_code and c["theme"] == theme
                and c["severity"] in severities and c["raised_at"] >= since]

    # -- CQRM agenda and watch list --------------------------------------------------------
    async def cqrm_item(self, conn: object, concern_id: uuid.UUID) -> dict[str, Any] | None:
        return self.cqrm.get(concern_id)

    async def put_cqrm_item(self, conn: object, c: ConcernRaised, item: str,
                            cqrm_at: datetime) -> None:
        self.cqrm[c.concern_id] = {"item": item, "cqrm_at": cqrm_at, "status": "open"}

    async def set_cqrm_status(self, conn: object, concern_id: uuid.UUID, status: str) -> bool:
        item = self.cqrm.get(concern_id)
        if item is None or item["status"] != "open":
            return False
        item["status"] = status
        return True

    async def put_watch_item(self, conn: object, c: ConcernRaised, item: str) -> None:
        self.watch[c.concern_id] = item

    # -- meetings and bookings -------------------------------------------------------------
    async def lock_attendees(self, conn: object, attendees: list[str]) -> None:
        self.locked += sorted(attendees)

    async def lock_key(self, conn: object, key: str) -> None:
        self.locked.append(key)

    async def meeting_for_concern(self, conn: object,
                                  concern_id: uuid.UUID) -> dict[str, Any] | None:
        meeting_id = self.agenda.get(concern_id)
        return dict(self.meetings[meeting_id]) if meeting_id else None

    async def open_meeting_of_provider(self, conn: object, ods_code: str, now: datetime,
                                       kind: str = "remedial") -> dict[str, Any] | None:
        open_ = sorted((m for m in self.meetings.values()
                        if m["ods_code"] == ods_code and m["kind"] == kind
                        and m["status"] == "scheduled" and m["starts_at"] > now),
                       key=lambda m: m["starts_at"])
        return dict(open_[0]) if open_ else None

    async def get_meeting(self, conn: object, meeting_id: uuid.UUID) -> dict[str, Any] | None:
        row = self.meetings.get(meeting_id)
        return dict(row) if row is not None else None

    lock_meeting = get_meeting
    lock_provider_and_meeting = get_meeting

    async def insert_meeting(self, conn: object, m: MeetingScheduled,
                             attendee_keys: dict[str, int], at: datetime) -> None:
        self.meetings[m.meeting_id] = {
            "meeting_id": m.meeting_id, "concern_id": m.concern_id,
            "ods_code": m.provider.ods_code, "status": "scheduled", "rsvp": {},
            "pending_changes": [], "announced_starts_at": m.starts_at,
            "proposed_starts_at": None, **self._columns(m)}
        for concern_id in m.concern_ids if m.kind == "remedial" else []:
            await self.add_meeting_concern(conn, m.meeting_id, concern_id, at)
        await self.insert_bookings(conn, m.meeting_id, attendee_keys, m.starts_at, m.ends_at)

    @staticmethod
    def _columns(m: MeetingScheduled) -> dict[str, Any]:
        return {"severity": m.severity.value, "title": m.title, "starts_at": m.starts_at,
                "ends_at": m.ends_at, "deadline": m.deadline, "breach": m.breach,
                "location": m.location, "agenda": list(m.agenda),
                "remedial_actions": list(m.remedial_actions),
                "organizer": m.organizer.model_dump(),
                "attendees": [a.model_dump() for a in m.attendees], "sequence": m.sequence,
                "kind": m.kind, "url": m.url, "breach_reason": m.breach_reason}

    async def update_meeting(self, conn: object, m: MeetingScheduled,
                             status: str = "scheduled", at: datetime | None = None) -> None:
        columns = self._columns(m)
        del columns["organizer"], columns["kind"]  # not updated by the real query
        self.meetings[m.meeting_id] |= columns | {"status": status}

    async def add_meeting_concern(self, conn: object, meeting_id: uuid.UUID,
                                  concern_id: uuid.UUID, at: datetime) -> None:
        assert concern_id not in self.agenda, "each concern is on one agenda (primary key)"
        self.agenda[concern_id] = meeting_id

    async def meeting_concern_ids(self, conn: object, meeting_id: uuid.UUID) -> list[uuid.UUID]:
        return [c for c, m in self.agenda.items() if m == meeting_id]  # in the order added

    async def meeting_concerns(self, conn: object, meeting_id: uuid.UUID,
                               status: str | None = "open") -> list[dict[str, Any]]:
        return [dict(self.concerns[c]) for c in await self.meeting_concern_ids(conn, meeting_id)
                if status is None or self.concerns[c]["status"] == status]

    async def set_pending_changes(self, conn: object, meeting_id: uuid.UUID,
                                  changes: list[str],
                                  announced_starts_at: datetime | None = None,
                                  sequence: int | None = None) -> None:
        row = self.meetings[meeting_id]
        row["pending_changes"] = list(changes)
        if announced_starts_at is not None:
            row["announced_starts_at"] = announced_starts_at
        if sequence is not None:
            row["sequence"] = sequence

    async def set_rsvp(self, conn: object, meeting_id: uuid.UUID, email: str,
                       reply: dict[str, Any]) -> None:
        self.meetings[meeting_id]["rsvp"][email.lower()] = reply

    async def set_proposal(self, conn: object, meeting_id: uuid.UUID,
                           starts_at: datetime | None) -> None:
        self.meetings[meeting_id]["proposed_starts_at"] = starts_at

    async def insert_bookings(self, conn: object, meeting_id: uuid.UUID, keys: dict[str, int],
                              starts_at: datetime, ends_at: datetime) -> None:
        for key, buffer in keys.items():
            self.bookings.append((meeting_id, key, starts_at, ends_at, buffer))

    async def release_bookings(self, conn: object, meeting_id: uuid.UUID) -> list[str]:
        released = [b[1] for b in self.bookings if b[0] == meeting_id]
        self.bookings = [b for b in self.bookings if b[0] != meeting_id]
        return released

    def _booked(self, keys: list[str], since: datetime,
                except_meeting: uuid.UUID | None) -> list[tuple[str, Interval]]:
        return [(key, (s, e)) for m, key, s, e, _ in self.bookings
                if key in keys and e > since and m != except_meeting]

    async def busy_intervals(self, conn: object, attendees: list[str], since: datetime,
                             except_meeting: uuid.UUID | None = None) -> list[Interval]:
        return [during for _, during in self._booked(attendees, since, except_meeting)]

    async def person_bookings(self, conn: object, emails: list[str], since: datetime,
                              except_meeting: uuid.UUID | None = None
                              ) -> dict[str, list[Interval]]:
        out: dict[str, list[Interval]] = {}
        for key, during in self._booked([f"person:{e}" for e in emails], since,
                                        except_meeting):
            out.setdefault(key.removeprefix("person:"), []).append(during)
        return out

    async def person_load(self, conn: object, emails: list[str], since: datetime,
                          until: datetime) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, key, s, e, _ in self.bookings:
            if key.startswith("person:") and key[7:] in emails and _overlaps((s, e),
                                                                             (since, until)):
                out[key[7:]] = out.get(key[7:], 0) + 1
        return out

    def booked_keys(self, meeting_id: uuid.UUID) -> dict[str, Interval]:
        return {key: (s, e) for m, key, s, e, _ in self.bookings if m == meeting_id}

    # -- people ----------------------------------------------------------------------------
    async def ensure_people(self, conn: object, people: list[dict[str, Any]]) -> None:
        for p in people:
            self.people.setdefault(p["email"].lower(), person(p["email"], p["role"], p["name"]))

    async def people_in_roles(self, conn: object, roles: list[str]) -> list[dict[str, Any]]:
        return sorted((p for p in self.people.values() if p["active"] and p["role"] in roles),
                      key=lambda p: p["email"])

    async def unavailable_periods(self, conn: object, emails: list[str],
                                  since: datetime) -> dict[str, list[Interval]]:
        return {e: [u for u in self.away[e] if u[1] > since] for e in emails if e in self.away}

    # -- action plans and the ladder --------------------------------------------------------
    def add_action(self, concern_id: uuid.UUID, description: str, due_on: date,
                   status: str = "open") -> uuid.UUID:
        action_id = uuid.uuid4()
        self.actions[action_id] = {
            "action_id": action_id, "concern_id": concern_id, "meeting_id": None,
            "description": description, "owner": "Pat Provider", "due_on": due_on,
            "status": status, "evidence_of_completion": None, "completed_at": None,
            "created_at": datetime.combine(due_on - timedelta(days=30), time(9, 0))}
        return action_id

    async def get_action(self, conn: object, action_id: uuid.UUID) -> dict[str, Any] | None:
        row = self.actions.get(action_id)
        return dict(row) if row is not None else None

    async def actions_of(self, conn: object, concern_id: uuid.UUID) -> list[dict[str, Any]]:
        return sorted((dict(a) for a in self.actions.values() if a["concern_id"] == concern_id),
                      key=lambda a: (a["due_on"], a["created_at"]))

    async def mark_overdue(self, conn: object, action_id: uuid.UUID, since: date) -> bool:
        action = self.actions[action_id]
        if action["status"] != "open":
            return False
        action |= {"status": "overdue", "overdue_since": since}
        return True

    async def add_ladder_step(self, conn: object, concern_id: uuid.UUID, level: str,
                              at: datetime, reason: str) -> bool:
        if any((s["concern_id"], s["level"]) == (concern_id, level) for s in self.ladder):
            return False
        self.ladder.append({"concern_id": concern_id, "level": level, "at": at,
                            "reason": reason})
        return True

    async def ladder_steps(self, conn: object, concern_id: uuid.UUID) -> list[dict[str, Any]]:
        return sorted((s for s in self.ladder if s["concern_id"] == concern_id),
                      key=lambda s: (s["at"], s["level"]))

    # -- visits and the audit trail ----------------------------------------------------------
    async def last_insight_visit_planned(self, conn: object, ods_code: str,
                                         theme: str) -> datetime | None:
        planned = [v["at"] for v in self.visits if v["provider"].ods_code == ods_code
                   and v["theme"] == theme and v["visit_kind"] == "insight_visit"]
        return max(planned, default=None)

    async def insert_visit(self, conn: object, **visit: Any) -> bool:
        self.visits.append(visit)
        return True

    async def audit(self, conn: object, **entry: Any) -> None:
        self.audit_log.append(entry)


def install(monkeypatch: Any, store: FakeEscalationStore | None = None,
            schedule: Any = None) -> FakeEscalationStore:
    """Put ``store`` (and ``schedule``, if given) in place of the real ones wherever
    escalation's handlers, planner, plans and visits call them."""
    from services.escalation import app, meetings, plans, visits

    store = store if store is not None else FakeEscalationStore()
    for module in (app, meetings, plans, visits):
        monkeypatch.setattr(module, "store", store)
        if schedule is not None:
            monkeypatch.setattr(module, "schedule", schedule)
    return store
