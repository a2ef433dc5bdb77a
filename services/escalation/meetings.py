"""Remedial-action meetings: one per provider, staffed from the rota, moved by people.

A provider has at most one remedial meeting booked and not yet started: a new concern joins
its agenda, and brings it forward if the policy needs the concern met earlier. The meeting's
people (a quality lead or deputy, a lay member, a safeguarding lead for safeguarding concerns)
come from the rota by ``rota.choose_slot``, which respects everyone's working hours, daily cap,
buffer and leave.

Booking takes a transaction-scoped advisory lock on the provider first, then on every
calendar it reads (in one global order, so no two bookings deadlock); the exclusion
constraints on ``bookings`` refuse an overlap or a meeting inside a buffer whatever happens.

Announcements: the first booking (``meeting.scheduled``) and a cancellation go at once. Every
other change is kept in ``pending_changes`` and announced once by the ``meeting_announce`` job
of the durable schedule, ``coalesce_seconds`` after the first change of the burst: one
``meeting.rescheduled`` (sequence + 1, once) for any number of changes in the window.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.escalation import schedule, store
from services.escalation.calendar import booking_deadline
from services.escalation.concerns import EVIDENCE_LISTED, KnownConcern, agenda
from services.escalation.config import EscalationPolicy
from services.escalation.meeting_changes import (
    attendee_roles,
    earlier_slot_needed,
    meeting_details,
    rescheduled,
    revise,
)
from services.escalation.people import People
from services.escalation.plans import Conflict, NotFound
from services.escalation.rota import ROLE_GROUPS, Choice, Diary, Person, choose_slot, why_not
from shared.events import (
    Attendee,
    ConcernRaised,
    EscalationStep,
    MeetingCancelled,
    MeetingRescheduled,
    MeetingScheduled,
    ProviderRef,
    Severity,
)
from shared.outbox import Outbox

ANNOUNCE = "meeting_announce"
# How far back a person's meetings count towards their share of the rota.
LOAD_WINDOW = timedelta(days=28)


def meeting_from_row(row: asyncpg.Record, provider: ProviderRef, timezone: str,
                     concern_ids: list[uuid.UUID] | None = None,
                     head_of_quality: Attendee | None = None) -> MeetingScheduled:
    """The meeting as stored (its announced form when ``pending_changes`` is empty)."""
    return MeetingScheduled(
        meeting_id=row["meeting_id"], concern_id=row["concern_id"], provider=provider,
        title=row["title"], starts_at=row["starts_at"], ends_at=row["ends_at"],
        timezone=timezone, location=row["location"], deadline=row["deadline"],
        breach=row["breach"], severity=row["severity"], agenda=row["agenda"],
        remedial_actions=row["remedial_actions"],
        organizer=Attendee.model_validate(row["organizer"]),
        attendees=[Attendee.model_validate(a) for a in row["attendees"]],
        sequence=row["sequence"], concern_ids=concern_ids or [row["concern_id"]],
        url=row["url"], breach_reason=row["breach_reason"], kind=row["kind"],
        head_of_quality=head_of_quality if row["breach"] else None)


def person_of(row: asyncpg.Record) -> Person:
    return Person(email=row["email"], name=row["name"], role=row["role"],
                  works_from=row["works_from"], works_until=row["works_until"],
                  working_days=frozenset(row["working_days"]),
                  max_meetings_per_day=row["max_meetings_per_day"],
                  buffer_minutes=row["buffer_minutes"])


class MeetingPlanner:
    def __init__(self, policy: EscalationPolicy, people: People,
                 evidence_listed: int = EVIDENCE_LISTED) -> None:
        self.policy = policy
        self.people = people
        self.evidence_listed = evidence_listed  # evidence items an agenda lists per concern
        self.hours = policy.hours()
        self.timezone = str(self.hours.tz)

    # -- the policy ------------------------------------------------------------------------
    def duration(self, severity: Severity) -> timedelta:
        return timedelta(minutes=self.policy.for_severity(severity).duration_minutes)

    def window(self, severity: Severity) -> int:
        return self.policy.for_severity(severity).within_working_days

    def deadline(self, severity: Severity, now: datetime) -> datetime:
        return booking_deadline(now, self.window(severity), self.hours)

    # -- the rota --------------------------------------------------------------------------
    async def diaries(self, conn: asyncpg.Connection, roles: list[str], now: datetime,
                      except_meeting: uuid.UUID | None = None) -> dict[str, list[Diary]]:
        """Each attendee role's candidates, locked, with what fills their time."""
        await store.ensure_people(conn, self.people.rota_seed())
        wanted = {r: ROLE_GROUPS[r] for r in roles}
        rows = await store.people_in_roles(conn, [x for g in wanted.values() for x in g])
        emails = [r["email"] for r in rows]
        await store.lock_attendees(conn, [f"person:{e}" for e in emails])
        since = now - timedelta(days=1)
        booked = await store.person_bookings(conn, emails, since, except_meeting)
        away = await store.unavailable_periods(conn, emails, since)
        load = await store.person_load(conn, emails, now - LOAD_WINDOW, now + LOAD_WINDOW)
        out: dict[str, list[Diary]] = {r: [] for r in roles}
        for row in rows:
            for role, group in wanted.items():
                if row["role"] in group:
                    out[role].append(Diary(person_of(row),
                                           tuple(booked.get(row["email"], ())),
                                           tuple(away.get(row["email"], ())),
                                           load.get(row["email"], 0)))
        return out

    async def _choose(self, conn: asyncpg.Connection, provider: ProviderRef, roles: list[str],
                      severity: Severity, deadline: datetime, now: datetime,
                      except_meeting: uuid.UUID | None = None,
                      not_before: datetime | None = None,
                      duration: timedelta | None = None) -> Choice:
        await store.lock_attendees(conn, [f"provider:{provider.ods_code}"])
        diaries = await self.diaries(conn, roles, now, except_meeting)
        if not diaries.get("safeguarding lead", True):
            del diaries["safeguarding lead"]  # nobody on that rota: the meeting goes ahead
        busy = await store.busy_intervals(conn, [f"provider:{provider.ods_code}"], now,
                                          except_meeting)
        return choose_slot(now, deadline=deadline,
                           duration=duration or self.duration(severity),
                           roles=diaries, provider_busy=busy, hours=self.hours,
                           minimum_notice=self.policy.minimum_notice, not_before=not_before)

    def _attendees(self, provider: ProviderRef, choice: Choice) -> list[Attendee]:
        return [self.people.provider_lead(provider),
                *(Attendee(role=role, name=p.name, email=p.email)
                  for role, p in choice.people.items())]

    @staticmethod
    def _keys(provider: ProviderRef, choice: Choice) -> dict[str, int]:
        return {f"provider:{provider.ods_code}": 0,
                **{f"person:{p.email}": p.buffer_minutes for p in choice.people.values()}}

    # -- agenda ----------------------------------------------------------------------------
    def _details(self, concerns: Sequence[ConcernRaised]) -> dict[str, Any]:
        """Title, severity, agenda and actions of a meeting on these concerns."""
        return meeting_details(concerns, self.policy.actions_for, self.evidence_listed)

    def _venue(self) -> dict[str, Any]:
        venue = self.policy.online_meetings.venue(self.people.organizer.email)
        return {"location": venue.location, "url": venue.url}

    # -- booking ---------------------------------------------------------------------------
    async def book(self, conn: asyncpg.Connection, concern: ConcernRaised,
                   now: datetime) -> MeetingScheduled:
        """Book a meeting for the concern in the first slot of its window where the provider
        and a person of each role are free (or the first after it, flagged as a breach)."""
        choice = await self._choose(conn, concern.provider, attendee_roles([concern]),
                                    concern.severity, self.deadline(concern.severity, now), now)
        meeting = MeetingScheduled(
            meeting_id=uuid.uuid4(), concern_id=concern.concern_id, provider=concern.provider,
            starts_at=choice.start, ends_at=choice.end, timezone=self.timezone,
            deadline=choice.deadline, breach=choice.breach, breach_reason=choice.breach_reason,
            organizer=self.people.organizer_for(concern.provider), attendees=self._attendees(concern.provider, choice),
            concern_ids=[concern.concern_id],
            head_of_quality=await self.head_of_quality(conn) if choice.breach else None,
            **self._venue(), **self._details([concern]))
        await store.insert_meeting(conn, meeting, self._keys(concern.provider, choice), now)
        return meeting

    async def book_review_meeting(self, conn: asyncpg.Connection, concern_row: asyncpg.Record,
                                  history: list[EscalationStep],
                                  now: datetime) -> MeetingScheduled:
        """The Rapid Quality Review (or, with CCG-era naming, the risk summit) at the top of
        the ladder: a meeting of its own, within ``rapid_review_within_working_days``, with
        the provider, the ICB's quality lead and the system's partners (NHS England's region,
        the CQC, the local authority, Healthwatch), in its own room."""
        [concern] = await store.load_concerns(conn, [concern_row], self.evidence_listed)
        provider = concern.provider
        mp = self.policy.meetings
        names = self.policy.ladder
        deadline = booking_deadline(now, mp.rapid_review_within_working_days, self.hours)
        choice = await self._choose(conn, provider, ["commissioner quality lead"],
                                    concern.severity, deadline, now,
                                    duration=timedelta(minutes=mp.rapid_review_duration_minutes))
        venue = self.policy.online_meetings.venue(self.people.organizer.email,
                                                  room=mp.rapid_review_room)
        commissioner = self._attendees(provider, choice)[1:]
        items = [f"{names.name('review_meeting')} of {provider.name}, convened by the"
                 f" {names.name('group')}: {concern.reason}",
                 *(f"Ladder: {names.name(s.level)} on {s.at.date().isoformat()}: {s.reason}"
                   for s in history),
                 *agenda(concern, self.evidence_listed)[1:]]
        meeting = MeetingScheduled(
            meeting_id=uuid.uuid4(), concern_id=concern.concern_id, provider=provider,
            title=f"{names.name('review_meeting')}: {provider.name} - {concern.theme}",
            starts_at=choice.start, ends_at=choice.end, timezone=self.timezone,
            deadline=choice.deadline, breach=choice.breach, breach_reason=choice.breach_reason,
            severity=concern.severity, agenda=items,
            remedial_actions=["Agree the system's response: the support the provider needs,"
                              " who leads it, and how progress is reported to the "
                              + names.name("group") + "."],
            organizer=self.people.organizer,
            attendees=self.people.rapid_quality_review(provider, commissioner),
            concern_ids=[], kind="rapid_quality_review", location=venue.location,
            url=venue.url,
            head_of_quality=await self.head_of_quality(conn) if choice.breach else None)
        await store.insert_meeting(conn, meeting, self._keys(provider, choice), now)
        return meeting

    async def head_of_quality(self, conn: asyncpg.Connection) -> Attendee:
        """Who hears of a breach: the head of quality on the rota, else the quality team."""
        rows = await store.people_in_roles(conn, ["head of quality"])
        if rows:
            return Attendee(role="head of quality", name=rows[0]["name"], email=rows[0]["email"])
        return self.people.organizer

    async def concerns_on(self, conn: asyncpg.Connection,
                          meeting_id: uuid.UUID) -> list[KnownConcern]:
        return await store.load_concerns(conn, await store.meeting_concerns(conn, meeting_id),
                                         self.evidence_listed)

    async def current(self, conn: asyncpg.Connection, row: asyncpg.Record) -> MeetingScheduled:
        first = await store.get_concern(conn, row["concern_id"])
        assert first is not None  # a meeting's first concern is never deleted
        provider = store.provider_of(first)
        return meeting_from_row(row, provider, self.timezone,
                                await store.meeting_concern_ids(conn, row["meeting_id"]),
                                await self.head_of_quality(conn))

    async def refresh(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime,
                      change: str, *, joining: ConcernRaised | None = None,
                      needed_by: datetime | None = None) -> str:
        """The meeting after its concerns changed (or ``joining`` joined its agenda): the
        agenda from its open concerns, and brought forward if the change needs the meeting
        by ``needed_by`` and it is booked later. The change waits for the next
        announcement."""
        if joining is not None:
            await store.add_meeting_concern(conn, row["meeting_id"], joining.concern_id, now)
        concerns = await self.concerns_on(conn, row["meeting_id"])
        current = await self.current(conn, row)
        details = self._details(concerns) if concerns else {}
        earlier = None
        if earlier_slot_needed(current, needed_by):
            assert needed_by is not None
            earlier = await self._choose(conn, current.provider, attendee_roles(concerns),
                                         details["severity"], needed_by, now,
                                         except_meeting=current.meeting_id)
        revision = revise(current, details, change, needed_by=needed_by, earlier=earlier,
                          attendees=self._attendees(current.provider, earlier)
                          if earlier is not None else ())
        if revision.move_to is not None:
            await self._move(conn, current, revision.move_to)
        await store.update_meeting(conn, current.model_copy(update=revision.update))
        await self.pending(conn, row, revision.note, now)
        return revision.note

    async def _move(self, conn: asyncpg.Connection, current: MeetingScheduled,
                    choice: Choice) -> None:
        await store.release_bookings(conn, current.meeting_id)
        await store.insert_bookings(conn, current.meeting_id,
                                    self._keys(current.provider, choice), choice.start,
                                    choice.end)

    # -- coalesced announcements -----------------------------------------------------------
    async def pending(self, conn: asyncpg.Connection, row: asyncpg.Record, change: str,
                      now: datetime) -> None:
        """Keep the change for the meeting's next announcement, due ``coalesce_seconds`` after
        the first change since the last one."""
        fresh = await store.get_meeting(conn, row["meeting_id"])
        assert fresh is not None
        changes = [*fresh["pending_changes"], change]
        await store.set_pending_changes(conn, row["meeting_id"], changes)
        await schedule.schedule(
            conn, kind=ANNOUNCE,
            due_at=now + timedelta(seconds=self.policy.meetings.coalesce_seconds),
            payload={"meeting_id": str(row["meeting_id"])}, concern_id=None,
            dedupe_key=f"{ANNOUNCE}:{row['meeting_id']}:{fresh['sequence'] + 1}")

    async def announce(self, conn: asyncpg.Connection, meeting_id: uuid.UUID,
                       now: datetime) -> MeetingRescheduled | None:
        """One meeting.rescheduled for every change since the last announcement."""
        row = await store.lock_meeting(conn, meeting_id)
        if row is None or row["status"] != "scheduled" or not row["pending_changes"]:
            return None
        current = await self.current(conn, row)
        revised = MeetingRescheduled(
            **(current.model_dump() | {"sequence": current.sequence + 1}),
            previous_starts_at=row["announced_starts_at"] or current.starts_at,
            change="; ".join(row["pending_changes"]))
        await store.set_pending_changes(conn, meeting_id, [], revised.starts_at,
                                        revised.sequence)
        return revised

    async def announce_job(self, conn: asyncpg.Connection, job: asyncpg.Record,
                           outbox: Outbox, now: datetime) -> str:
        revised = await self.announce(conn, uuid.UUID(job["payload"]["meeting_id"]), now)
        if revised is None:
            return "skipped: nothing to announce"
        await outbox.add(revised)
        return f"announced sequence {revised.sequence}"

    async def cancel(self, conn: asyncpg.Connection, row: asyncpg.Record,
                     provider: ProviderRef, reason: str, now: datetime) -> MeetingCancelled:
        """Cancel a meeting not yet held and free its attendees; announced at once
        (sequence + 1), whatever changes were waiting."""
        current = await self.current(conn, row)
        cancelled = MeetingCancelled(**(current.model_dump() | {"sequence": current.sequence + 1}),
                                     reason=reason)
        await store.release_bookings(conn, current.meeting_id)
        await store.update_meeting(conn, cancelled, status="cancelled", at=now)
        await store.set_pending_changes(conn, current.meeting_id, [], None, None)
        await schedule.cancel(conn, [f"{ANNOUNCE}:{current.meeting_id}:{current.sequence + 1}"],
                              now, "meeting cancelled")
        return cancelled

    # -- people in control -----------------------------------------------------------------
    async def open_for_change(self, conn: asyncpg.Connection, meeting_id: uuid.UUID,
                    now: datetime) -> asyncpg.Record:
        row = await store.lock_provider_and_meeting(conn, meeting_id)
        if row is None:
            raise NotFound(f"no meeting {meeting_id}")
        if row["status"] != "scheduled":
            raise Conflict(f"meeting {meeting_id} is {row['status']}")
        if row["starts_at"] <= now:
            raise Conflict(f"meeting {meeting_id} has started ({row['starts_at'].isoformat()})")
        return row

    async def reschedule(self, conn: asyncpg.Connection, meeting_id: uuid.UUID, now: datetime,
                         *, reason: str, to: datetime | None = None) -> dict[str, Any]:
        """Move a meeting: to ``to`` if its attendees (or others of their roles) are free
        then, else to the next slot where they are, after the current one."""
        row = await self.open_for_change(conn, meeting_id, now)
        current = await self.current(conn, row)
        concerns = await self.concerns_on(conn, meeting_id)
        roles = attendee_roles(concerns)
        duration = current.ends_at - current.starts_at
        if to is not None:
            if to <= now:
                raise Conflict("a meeting can only move to a time still to come")
            choice = await self._choose(conn, current.provider, roles, current.severity,
                                        current.deadline, to - self.policy.minimum_notice,
                                        except_meeting=meeting_id, not_before=to)
            if choice.start != to.astimezone(choice.start.tzinfo) or \
                    choice.end - choice.start != duration:
                raise Conflict(f"{to.isoformat()} is not free for the provider and the"
                               f" meeting's roles; the first free slot from then is"
                               f" {choice.start.isoformat()}")
        else:
            choice = await self._choose(conn, current.provider, roles, current.severity,
                                        current.deadline, now, except_meeting=meeting_id,
                                        not_before=current.ends_at)
        revision = rescheduled(current, choice, self._attendees(current.provider, choice),
                               reason)
        await self._move(conn, current, choice)
        await store.update_meeting(conn, current.model_copy(update=revision.update))
        await self.pending(conn, row, revision.note, now)
        return {"meeting_id": meeting_id, "starts_at": choice.start, "ends_at": choice.end,
                "breach": revision.update["breach"], "change": revision.note}

    async def change_attendee(self, conn: asyncpg.Connection, meeting_id: uuid.UUID,
                              now: datetime, *, reason: str, email: str, name: str | None,
                              role: str | None, replaces: str | None = None) -> dict[str, Any]:
        """Add an attendee, or substitute one for another (``replaces``). A person on the
        commissioner's rota is booked, so must be free (daily cap, buffer, leave)."""
        row = await self.open_for_change(conn, meeting_id, now)
        current = await self.current(conn, row)
        email = email.lower()
        attendees = list(current.attendees)
        if any(a.email.lower() == email for a in attendees):
            raise Conflict(f"{email} already attends meeting {meeting_id}")
        old: Attendee | None = None
        if replaces is not None:
            old = next((a for a in attendees if a.email.lower() == replaces.lower()), None)
            if old is None:
                raise Conflict(f"{replaces} does not attend meeting {meeting_id}")
            attendees.remove(old)
        person = await store.get_person(conn, email)
        if person is not None:
            await store.lock_attendees(conn, [f"person:{email}"])
            booked = await store.person_bookings(conn, [email], now - timedelta(days=1),
                                                 meeting_id)
            away = await store.unavailable_periods(conn, [email], now - timedelta(days=1))
            diary = Diary(person_of(person), tuple(booked.get(email, ())),
                          tuple(away.get(email, ())))
            why = why_not(diary, current.starts_at, current.ends_at, self.hours.tz)
            if why is not None:
                raise Conflict(f"{email} cannot attend at {current.starts_at.isoformat()}:"
                               f" {why}")
        new = Attendee(role=role or (old.role if old else None) or
                       (person["role"] if person else "attendee"),
                       name=name or (person["name"] if person else email), email=email)
        attendees.append(new)
        if old is not None:
            await conn.execute("DELETE FROM escalation.bookings WHERE meeting_id = $1"
                               " AND attendee = $2", meeting_id, f"person:{old.email.lower()}")
        if person is not None:
            await store.insert_bookings(conn, meeting_id,
                                        {f"person:{email}": person["buffer_minutes"]},
                                        current.starts_at, current.ends_at)
        await store.update_meeting(conn, current.model_copy(update={"attendees": attendees}))
        change = (f"{new.name} ({new.role}) replaces {old.name}: {reason}" if old
                  else f"{new.name} ({new.role}) added: {reason}")
        await self.pending(conn, row, change, now)
        return {"meeting_id": meeting_id, "attendees": attendees, "change": change}

    async def propose_slot(self, conn: asyncpg.Connection, row: asyncpg.Record,
                           now: datetime) -> Choice:
        """The next slot after the current one where the provider and the roles are free,
        for the quality team to consider (nothing is booked)."""
        current = await self.current(conn, row)
        concerns = await self.concerns_on(conn, row["meeting_id"])
        roles = attendee_roles(concerns)
        return await self._choose(conn, current.provider, roles, current.severity,
                                  current.deadline, now, except_meeting=row["meeting_id"],
                                  not_before=current.ends_at)
