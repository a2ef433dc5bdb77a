"""Remedial meetings the way a quality team runs them, through the REAL broker and database:
one meeting per provider, the rota with people's capacity and leave, coalesced updates, and
people moving, cancelling and staffing meetings (with the audit trail).

Same harness as test_escalation.py (a controllable clock; the tests publish concern events
as quality-monitor would and watch what escalation publishes), in a broker namespace of its
own, in the weeks of 2033 (test_escalation.py uses 2031-2032). People added to the rota here
are taken off it again at the end of each test, so other tests see the settings' two people.
ODS codes used: RAL, RF4, RJ1, RKE, RJZ, RRV, RJ2, RV5.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from services.escalation.app import EscalationRuntime
from shared.events import MeetingRescheduled, MeetingScheduled, Severity
from shared.identity import local_operator
from shared.settings import Settings
from tests.conftest import ServerUrls
from tests.helpers import carewatch, eventually
from tests.integration.test_escalation import (
    LONDON,
    FakeClock,
    Publisher,
    Tap,
    announce,
    concern,
    handled,
    http_client,
    london,
    overlapping_bookings,
    own_stack,
    pool_of,
    publishing,
    resolved,
    running,
    tapping,
    updated,
)

pytestmark = pytest.mark.integration
ACTOR = {"X-Carewatch-Actor": "quality.lead@icb.example.nhs.uk"}  # who the token is (http_client)


@pytest.fixture(scope="module")
async def mtg_settings(settings: Settings, server_urls: ServerUrls) -> AsyncIterator[Settings]:
    async for own in own_stack(settings, server_urls, "mtg"):
        yield own


@pytest.fixture(scope="module")
async def db(mtg_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The module's database (instead of the session's)."""
    async for pool in pool_of(mtg_settings):
        yield pool


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(london(2033, 3, 7, 8, 0))


@pytest.fixture(scope="module")
async def escalation(mtg_settings: Settings, clock: FakeClock
                     ) -> AsyncIterator[EscalationRuntime]:
    async for runtime in running(mtg_settings, clock):
        yield runtime


@pytest.fixture(scope="module")
async def tap(mtg_settings: Settings, amqp: aio_pika.abc.AbstractConnection
              ) -> AsyncIterator[Tap]:
    async for tap in tapping(mtg_settings, amqp):
        yield tap


@pytest.fixture(scope="module")
async def publisher(mtg_settings: Settings,
                    amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[Publisher]:
    async for publisher in publishing(mtg_settings, amqp):
        yield publisher


@pytest.fixture
async def api(escalation: EscalationRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async for client in http_client(escalation):
        yield client


@pytest.fixture
async def rota(api: httpx.AsyncClient, db: asyncpg.Pool) -> AsyncIterator[list[str]]:
    """People this test adds to the rota; taken off it (inactive) afterwards."""
    added: list[str] = []
    yield added
    for email in added:
        await db.execute("UPDATE escalation.people SET active = false WHERE email = $1", email)


async def add_person(api: httpx.AsyncClient, rota: list[str], email: str, role: str,
                     **extra: Any) -> dict[str, Any]:
    response = await api.put(f"/v1/people/{email}", headers=ACTOR,
                             json={"name": email.split("@")[0], "role": role, **extra})
    assert response.status_code == 200, response.text
    rota.append(email)
    return dict(response.json())


async def on_agenda(db: asyncpg.Pool, concern_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return list(await db.fetch(
        "SELECT concern_id, meeting_id FROM escalation.meeting_concerns"
        " WHERE concern_id = ANY($1)", concern_ids))


# -- one meeting per provider, coalesced updates ---------------------------------------------

async def test_a_providers_concerns_gather_on_one_meeting_with_one_update_per_burst(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    clock.now = london(2033, 3, 7, 8, 0)  # Monday
    first = concern("RAL", Severity.HIGH, raised_at=clock.now)
    await publisher.send(first)
    booked = MeetingScheduled.model_validate(
        (await tap.one("meeting.scheduled.v1", concern_id=first.concern_id)).data)
    assert booked.url and booked.url.startswith("https://") and booked.url in booked.location

    # Within a minute: two more concerns at the provider, and new evidence on the first.
    clock.now += timedelta(seconds=10)
    second = concern("RAL", Severity.HIGH, raised_at=clock.now)
    third = concern("RAL", Severity.HIGH, raised_at=clock.now)
    sent = [await publisher.send(second), await publisher.send(third),
            await publisher.send(updated(first, Severity.HIGH))]
    for envelope in sent:
        await eventually(partial(handled, db, envelope), what="handled")
    rows = await on_agenda(db, [first.concern_id, second.concern_id, third.concern_id])
    assert len(rows) == 3 and {r["meeting_id"] for r in rows} == {booked.meeting_id}
    # Nothing goes out before the coalescing window closes...
    await escalation.ticker.run_due(clock.now + timedelta(seconds=45))
    assert not tap.of("meeting.rescheduled.v1", meeting_id=booked.meeting_id)
    # ...then one update, sequence 1, naming every change.
    await announce(escalation, clock, db)
    update = MeetingRescheduled.model_validate(
        (await tap.one("meeting.rescheduled.v1", meeting_id=booked.meeting_id)).data)
    assert update.sequence == 1
    assert update.change.count("joins the agenda") == 2 and "new piece" in update.change
    assert set(update.concern_ids) == {first.concern_id, second.concern_id, third.concern_id}
    assert "and 2 more concern(s)" in update.title
    await escalation.ticker.run_due(clock.now + timedelta(minutes=5))
    assert len(tap.of("meeting.rescheduled.v1", meeting_id=booked.meeting_id)) == 1
    assert len(tap.of("meeting.scheduled.v1", concern_id=second.concern_id)) == 0

    # A serious concern joins: the policy needs a meeting within 2 working days, so the
    # meeting (booked within 10) is brought forward if it was later.
    clock.now += timedelta(minutes=10)
    serious = concern("RAL", Severity.SERIOUS, raised_at=clock.now)
    sent_serious = await publisher.send(serious)
    await announce(escalation, clock, db, sent_serious)
    moved = MeetingRescheduled.model_validate((await tap.nth(
        "meeting.rescheduled.v1", 2, meeting_id=booked.meeting_id)).data)
    assert moved.sequence == 2 and moved.severity == Severity.SERIOUS
    assert moved.ends_at <= london(2033, 3, 9, 17, 0)

    # One concern resolves: the meeting stays for the others; all resolved: cancelled at once.
    for c in (first, second, third):
        await publisher.send(resolved(c, clock.now))
    last = await publisher.send(resolved(serious, clock.now))
    cancelled = await tap.one("meeting.cancelled.v1", meeting_id=booked.meeting_id)
    await eventually(lambda: handled(db, last), what="last resolution")
    assert cancelled.data["sequence"] == 3
    assert len(tap.of("meeting.cancelled.v1", meeting_id=booked.meeting_id)) == 1
    meeting = (await api.get(f"/v1/meetings/{booked.meeting_id}")).json()
    assert meeting["status"] == "cancelled" and len(meeting["concerns"]) == 4


async def test_a_started_meeting_is_not_joined_and_takes_no_outcome_before_it_starts(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    clock.now = london(2033, 3, 14, 8, 0)
    first = concern("RF4", Severity.SERIOUS, raised_at=clock.now)
    await publisher.send(first)
    booked = await tap.one("meeting.scheduled.v1", concern_id=first.concern_id)
    meeting_id = booked.data["meeting_id"]
    outcome = {"outcome": "held"}  # who records it is the authenticated identity
    response = await api.post(f"/v1/meetings/{meeting_id}/outcome", json=outcome)
    assert response.status_code == 409 and "has not started" in response.json()["detail"]

    clock.now = datetime.fromisoformat(booked.data["starts_at"]) + timedelta(minutes=5)
    later = concern("RF4", Severity.SERIOUS, raised_at=clock.now)
    await publisher.send(later)
    second = await tap.one("meeting.scheduled.v1", concern_id=later.concern_id)
    assert second.data["meeting_id"] != meeting_id  # the first has started: a new one
    response = await api.post(f"/v1/meetings/{meeting_id}/outcome", json=outcome)
    assert response.status_code == 201, response.text


# -- the rota --------------------------------------------------------------------------------

async def test_the_rota_shares_meetings_respects_caps_buffers_and_leave(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient, mtg_settings: Settings,
        rota: list[str]) -> None:
    clock.now = london(2033, 3, 21, 8, 0)  # Monday
    deputy = "deputy.lead@icb.example.nhs.uk"
    lay2 = "second.lay@icb.example.nhs.uk"
    await add_person(api, rota, deputy, "deputy quality lead", max_meetings_per_day=2)
    await add_person(api, rota, lay2, "lay member")
    # The settings' quality lead is on leave on Monday (by hand); the second lay member's
    # calendar says they are busy all Monday morning (imported free/busy).
    response = await api.post(
        f"/v1/people/{mtg_settings.quality_lead_email}/unavailability", headers=ACTOR,
        json={"starts_at": london(2033, 3, 21, 0).isoformat(),
              "ends_at": london(2033, 3, 22, 0).isoformat(), "reason": "annual leave"})
    assert response.status_code == 201, response.text
    leave_id = response.json()["id"]
    ics = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:test\r\nBEGIN:VFREEBUSY\r\nUID:fb-lay2\r\n"
           b"FREEBUSY;FBTYPE=BUSY:20330321T090000Z/20330321T130000Z\r\nEND:VFREEBUSY\r\n"
           b"END:VCALENDAR\r\n")
    response = await api.post(f"/v1/people/{lay2}/calendar", content=ics,
                              headers={**ACTOR, "Content-Type": "text/calendar"})
    assert response.status_code == 200 and response.json()["imported"] == 1, response.text
    assert (await api.post(f"/v1/people/{lay2}/calendar", content=b"nonsense",
                           headers=ACTOR)).status_code == 409

    concerns = [concern(ods, Severity.SERIOUS, raised_at=clock.now)
                for ods in ("RJ1", "RKE", "RJZ", "RRV", "RJ2")]
    for c in concerns:
        await publisher.send(c)
    meetings = [MeetingScheduled.model_validate(
        (await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)).data)
        for c in concerns]
    leads = {m.meeting_id: next(a.email for a in m.attendees
                                if a.role == "commissioner quality lead") for m in meetings}
    monday = [m for m in meetings if m.starts_at.astimezone(LONDON).day == 21]
    # Monday: only the deputy (the lead is on leave), at most their cap of 2.
    assert monday and len(monday) <= 2 and all(leads[m.meeting_id] == deputy for m in monday)
    for m in meetings:
        lay = next(a.email for a in m.attendees if a.role == "lay member")
        if lay == lay2:  # never inside the imported busy period
            assert not (m.starts_at < london(2033, 3, 21, 13) and
                        m.ends_at > london(2033, 3, 21, 9))
    # Nobody over their cap, nobody inside a buffer.
    for email, cap in ((deputy, 2), (mtg_settings.quality_lead_email, 3),
                       (mtg_settings.lay_member_email, 3), (lay2, 3)):
        rows = await db.fetch(
            "SELECT lower(during) AS s, upper(during) AS e FROM escalation.bookings"
            " WHERE attendee = $1 AND during && tstzrange($2, $3) ORDER BY 1",
            f"person:{email}", london(2033, 3, 21, 0), london(2033, 3, 28, 0))
        days: dict[Any, int] = {}
        for r in rows:
            day = r["s"].astimezone(LONDON).date()
            days[day] = days.get(day, 0) + 1
        assert all(n <= cap for n in days.values()), (email, days)
        assert all(a["e"] + timedelta(minutes=30) <= b["s"] for a, b in itertools.pairwise(rows))
    assert await overlapping_bookings(db) == 0
    people = (await api.get("/v1/people")).json()
    assert {deputy, lay2} <= {p["email"] for p in people}
    assert (await api.delete(f"/v1/unavailability/{leave_id}", headers=ACTOR)).status_code == 200


async def test_a_breach_names_its_reason_and_the_head_of_quality(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient, mtg_settings: Settings,
        rota: list[str]) -> None:
    clock.now = london(2033, 4, 4, 8, 0)  # Monday
    await add_person(api, rota, "head.of.quality@icb.example.nhs.uk", "head of quality")
    # The lay member is away for the whole serious window.
    response = await api.post(
        f"/v1/people/{mtg_settings.lay_member_email}/unavailability", headers=ACTOR,
        json={"starts_at": london(2033, 4, 4, 0).isoformat(),
              "ends_at": london(2033, 4, 7, 0).isoformat(), "reason": "conference"})
    assert response.status_code == 201, response.text
    c = concern("RV5", Severity.SERIOUS, raised_at=clock.now)
    await publisher.send(c)
    meeting = MeetingScheduled.model_validate(
        (await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)).data)
    assert meeting.breach and meeting.starts_at >= london(2033, 4, 7, 9)
    assert meeting.breach_reason and "lay member" in meeting.breach_reason \
        and "unavailable" in meeting.breach_reason
    assert meeting.head_of_quality is not None
    assert meeting.head_of_quality.email == "head.of.quality@icb.example.nhs.uk"
    await api.delete(f"/v1/unavailability/{response.json()['id']}", headers=ACTOR)


# -- people in control -----------------------------------------------------------------------

async def test_people_reschedule_staff_and_cancel_with_a_reason_and_the_audit_trail(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient, mtg_settings: Settings,
        rota: list[str]) -> None:
    clock.now = london(2033, 4, 18, 8, 0)  # Monday
    c = concern("RKE", Severity.HIGH, raised_at=clock.now)
    await publisher.send(c)
    booked = MeetingScheduled.model_validate(
        (await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)).data)
    mid = booked.meeting_id

    # No identity: refused (the module's client carries the quality lead's token).
    async with httpx.AsyncClient(base_url=api.base_url) as anonymous:
        assert (await anonymous.post(f"/v1/meetings/{mid}/cancel",
                                     json={"reason": "x"})).status_code == 401
    # To a time: Wednesday 14:00.
    response = await api.post(f"/v1/meetings/{mid}/reschedule", headers=ACTOR, json={
        "reason": "the provider's chief nurse is away on Monday",
        "to": london(2033, 4, 20, 14, 0).isoformat()})
    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["starts_at"]) == london(2033, 4, 20, 14, 0)
    # A deputy replaces the lead; a safeguarding lead is added.
    deputy = "deputy.two@icb.example.nhs.uk"
    await add_person(api, rota, deputy, "deputy quality lead")
    lead = next(a.email for a in booked.attendees if a.role == "commissioner quality lead")
    response = await api.post(f"/v1/meetings/{mid}/attendees", headers=ACTOR, json={
        "email": deputy, "replaces": lead, "reason": "the lead is at the board"})
    assert response.status_code == 200, response.text
    response = await api.post(f"/v1/meetings/{mid}/attendees", headers=ACTOR, json={
        "email": "safeguarding.adults@council.example.gov.uk", "name": "Adult safeguarding",
        "role": "local authority safeguarding", "reason": "a Section 42 enquiry is open"})
    assert response.status_code == 200, response.text
    # The same attendee twice, or someone who does not attend: 409.
    assert (await api.post(f"/v1/meetings/{mid}/attendees", headers=ACTOR, json={
        "email": deputy, "reason": "again"})).status_code == 409
    # Three changes, one updated invitation.
    await announce(escalation, clock, db)
    update = MeetingRescheduled.model_validate(
        (await tap.one("meeting.rescheduled.v1", meeting_id=mid)).data)
    assert update.sequence == 1 and update.starts_at == london(2033, 4, 20, 14, 0)
    assert deputy in {a.email for a in update.attendees}
    assert lead not in {a.email for a in update.attendees}
    assert len(update.attendees) == 4
    assert await db.fetchval("SELECT count(*) FROM escalation.bookings WHERE meeting_id = $1"
                             " AND attendee = $2", mid, f"person:{deputy}") == 1

    # Cancelled: at once, no waiting for the window.
    response = await api.post(f"/v1/meetings/{mid}/cancel", headers=ACTOR,
                              json={"reason": "the provider closed the ward; a visit instead"})
    assert response.status_code == 200, response.text
    cancelled = await tap.one("meeting.cancelled.v1", meeting_id=mid)
    assert cancelled.data["sequence"] == 2
    assert (await api.post(f"/v1/meetings/{mid}/cancel", headers=ACTOR,
                           json={"reason": "again"})).status_code == 409
    audit = (await api.get(f"/v1/concerns/{c.concern_id}/audit")).json()
    mine = [(a["actor"], a["action"]) for a in audit if a["party"] == "commissioner"]
    assert mine == [(ACTOR["X-Carewatch-Actor"], action) for action in (
        "meeting rescheduled", "attendee substituted", "attendee added", "meeting cancelled")]


async def test_the_cli_keeps_the_rota_and_moves_and_cancels_meetings(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, mtg_settings: Settings, rota: list[str], tmp_path: Any) -> None:
    clock.now = london(2033, 5, 2, 8, 0)  # Monday
    deputy = "cli.deputy@icb.example.nhs.uk"
    code, out = await carewatch(mtg_settings, "people", "set", deputy, "--name", "Dee Deputy",
                                "--role", "deputy quality lead", "--from", "10:00",
                                "--until", "16:00", "--days", "mon,tue,wed",
                                "--max-per-day", "2", "--buffer", "45")
    assert code == 0, out
    rota.append(deputy)
    code, out = await carewatch(mtg_settings, "people", "set", "x@icb.example.nhs.uk",
                                "--role", "chair")
    assert code == 1 and "a new person needs a name and a role" in out, out
    code, out = await carewatch(mtg_settings, "people", "away", deputy, "--from",
                                "2033-05-09T00:00", "--until", "2033-05-10T00:00",
                                "--reason", "training")
    assert code == 0, out
    ics = tmp_path / "deputy.ics"
    # The CLI's clock is the real one: it imports the coming year's busy periods.
    board = (datetime.now(LONDON) + timedelta(days=20)).strftime("%Y%m%d")
    ics.write_bytes(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\nBEGIN:VEVENT\r\nUID:b1\r\n"
                    + f"DTSTART:{board}T090000Z\r\nDTEND:{board}T100000Z\r\n".encode()
                    + b"SUMMARY:Board\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    code, out = await carewatch(mtg_settings, "people", "import-calendar", deputy, str(ics))
    assert code == 0 and "imported" in out, out
    code, out = await carewatch(mtg_settings, "people", "unavailable", deputy, "--json")
    assert code == 0, out
    assert sorted(p["reason"] for p in json.loads(out)) == ["Board", "training"]
    code, out = await carewatch(mtg_settings, "people", "list", "--json")
    person = next(p for p in json.loads(out) if p["email"] == deputy)
    assert (person["max_meetings_per_day"], person["buffer_minutes"], person["working_days"]) \
        == (2, 45, [0, 1, 2])

    c = concern("RV5", Severity.HIGH, raised_at=clock.now)
    await publisher.send(c)
    booked = await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)
    mid = booked.data["meeting_id"]
    code, out = await carewatch(mtg_settings, "meetings", "reschedule", mid, "--to",
                                "2033-05-04T14:00", "--reason", "the provider asked")
    assert code == 0, out
    code, out = await carewatch(mtg_settings, "meetings", "show", mid)
    assert code == 0 and "starts at:           2033-05-04 14:00 BST" in out, out
    code, out = await carewatch(mtg_settings, "meetings", "show", mid, "--json")
    assert code == 0, out
    assert datetime.fromisoformat(json.loads(out)["starts_at"]) == london(2033, 5, 4, 14, 0)
    code, out = await carewatch(mtg_settings, "meetings", "cancel", mid, "--reason",
                                "a visit instead")
    assert code == 0, out
    cancelled = await tap.one("meeting.cancelled.v1", meeting_id=mid)
    # The move went out on its own only if the service's tick came first (the CLI's clock is
    # the real one, the service's is 2033); else it is folded into the cancellation.
    announced = await db.fetchval(
        "SELECT count(*) FROM escalation.schedule WHERE kind = 'meeting_announce'"
        " AND payload->>'meeting_id' = $1 AND outcome LIKE 'announced%'", mid)
    assert cancelled.data["sequence"] == 1 + announced
    audit = await db.fetch("SELECT actor, action FROM escalation.audit_log"
                           " WHERE concern_id = $1 AND party = 'commissioner' ORDER BY id",
                           c.concern_id)
    assert [a["action"] for a in audit] == ["meeting rescheduled", "meeting cancelled"]
    # Without CAREWATCH_TOKEN the console's actor is the local operator.
    assert {a["actor"] for a in audit} == {local_operator()}
