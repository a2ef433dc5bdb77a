"""escalation through the REAL broker and database, on a controllable clock.

The escalation runtime runs in this process, on the session's database but in a broker
namespace of this module's own; the tests publish concern events as quality-monitor would
(envelopes on that namespace's events exchange) and watch what escalation publishes through a
queue of their own bound to that exchange. Time never passes by itself:
the tests set the clock and call ``ticker.run_due(now)``.

Every test works in its own week of 2031-2033, far from the real today, so meetings booked
here never crowd the windows of the tests that run on the real clock; themes are unique per
test so that no two tests' concerns count as the same persistent concern.
ODS codes used: RAN, RP6, RPY, RRU, RAX, RQY, RVR, RJ6, RKL, RAS, R1K, RYX, RJ7, RV3, RQM.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg
import httpx
import pytest

from services.escalation.app import EscalationRuntime, build
from services.escalation.calendar import is_working_day, working_days_after
from services.escalation.ladder import revisit_due_on
from shared.envelope import CONTENT_TYPE, Envelope
from shared.events import (
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    Event,
    Evidence,
    FeedbackAccepted,
    MeetingRescheduled,
    MeetingScheduled,
    ProviderRef,
    Severity,
)
from shared.settings import Settings
from tests.conftest import ServerUrls
from tests.helpers import bearer, carewatch, eventually, token_for
from tools.stacks import database_url, deprovision, provision

pytestmark = pytest.mark.integration
LONDON = ZoneInfo("Europe/London")
PROVIDERS_CSV = Path(__file__).resolve().parents[2] / "data" / "providers.csv"
OUTPUT_TYPES = ("meeting.scheduled.v1", "meeting.rescheduled.v1", "meeting.cancelled.v1",
                "action.due_soon.v1", "action.overdue.v1", "concern.escalated.v1",
                "concern.closed.v1", "visit.scheduled.v1")
FILLER_ODS = ["RVR", "RJ6", "RKL", "RAS", "R1K", "RYX", "RJ7", "RV3", "RQM"]


def london(y: int, m: int, d: int, hh: int = 9, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=LONDON)


def provider(ods: str) -> ProviderRef:
    with PROVIDERS_CSV.open() as f:
        row = next(r for r in csv.DictReader(f) if r["ods_code"] == ods)
    return ProviderRef(ods_code=ods, name=row["name"], provider_type=row["provider_type"],
                       quality_contact_email=row["quality_contact_email"],
                       icb_code=row["icb_code"] or None, icb_name=row["icb_name"] or None)


def concern(ods: str, severity: Severity, *, theme: str | None = None, raised_at: datetime,
            evidence: int = 1, concern_id: uuid.UUID | None = None) -> ConcernRaised:
    return ConcernRaised(
        concern_id=concern_id or uuid.uuid4(), fingerprint=f"{ods}:test:{uuid.uuid4().hex[:6]}",
        provider=provider(ods), rule="immediate_serious_risk",
        theme=theme or f"theme-{uuid.uuid4().hex[:8]}", severity=severity,
        reason=f"a {severity} risk reported at {ods}", figures={"triggers": ["harm_in_text"]},
        evidence=[Evidence(feedback_id=uuid.uuid4(), kind="complaint",
                           occurred_on=raised_at.date()) for _ in range(evidence)],
        raised_at=raised_at)


def updated(c: ConcernRaised, severity: Severity, new_evidence: int = 1) -> ConcernUpdated:
    more = [Evidence(feedback_id=uuid.uuid4(), kind="gp_alert", occurred_on=c.raised_at.date(),
                     matched="serious harm") for _ in range(new_evidence)]
    # concern.updated.v2 carries the new evidence only, with the concern's total.
    return ConcernUpdated(**(c.model_dump() | {"severity": severity, "evidence": more,
                                               "reason": f"{c.reason}, and more"}),
                          evidence_count=len(c.evidence) + new_evidence,
                          previous_severity=c.severity)


def resolved(c: ConcernRaised, at: datetime) -> ConcernResolved:
    return ConcernResolved(concern_id=c.concern_id, fingerprint=c.fingerprint,
                           provider=c.provider, rule=c.rule, theme=c.theme, severity=c.severity,
                           resolution="signal returned to common cause", resolved_at=at)


class FakeClock:
    """The escalation runtime's clock: it says what the test says."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Publisher:
    """Publishes events as quality-monitor's relay would: persistent, mandatory, confirmed,
    message_id = envelope id."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel, namespace: str) -> None:
        self.channel = channel
        self.namespace = namespace

    async def send(self, event: Event, source: str = "carewatch/quality_monitor") -> Envelope:
        envelope = event.envelope(source)
        exchange = await self.channel.get_exchange(f"{self.namespace}.events", ensure=False)
        await exchange.publish(
            aio_pika.Message(envelope.to_bytes(), message_id=str(envelope.id), user_id="guest",
                             content_type=CONTENT_TYPE,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=event.routing_key(), mandatory=True)
        return envelope


class Tap:
    """A queue of the test's own on the events exchange: what escalation published."""

    def __init__(self) -> None:
        self.events: list[Envelope] = []

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.events.append(Envelope.from_bytes(message.body))

    def of(self, event_type: str, **match: Any) -> list[Envelope]:
        return [e for e in self.events if e.type == event_type
                and all(e.data.get(k) == (str(v) if isinstance(v, uuid.UUID) else v)
                        for k, v in match.items())]

    async def one(self, event_type: str, **match: Any) -> Envelope:
        found = await eventually(lambda: _async(self.of(event_type, **match)), timeout=20,
                                 what=f"{event_type} {match}")
        return found[-1]

    async def nth(self, event_type: str, n: int, **match: Any) -> Envelope:
        """The n-th such event (1-based), once it has arrived."""
        found = await eventually(lambda: _async(len(self.of(event_type, **match)) >= n),
                                 timeout=20, what=f"{n} x {event_type} {match}")
        assert found
        return self.of(event_type, **match)[n - 1]


async def _async(value: Any) -> Any:
    return value


# -- fixtures ------------------------------------------------------------------------------------

async def own_stack(settings: Settings, server_urls: ServerUrls,
                    suffix: str) -> AsyncIterator[Settings]:
    """A database and a broker namespace of the module's own. The meetings booked here, on a
    clock of the module's own (2031-2033), never reach the session's notification queues,
    and never sit in the future of the modules that run on the real clock (a provider's
    meeting still to come is the one its next concern joins)."""
    tag = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={
        "database_url": database_url(server_urls.postgres_admin,
                                     f"carewatch_test_{suffix}_{tag}"),
        "namespace": f"{settings.namespace}_{suffix}"})
    await provision(server_urls.postgres_admin, own)
    yield own
    await deprovision(server_urls.postgres_admin, own)


async def pool_of(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    from shared.db import create_pool

    pool = await create_pool(settings.database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


async def running(settings: Settings, clock: FakeClock) -> AsyncIterator[EscalationRuntime]:
    runtime = build(settings, clock=clock)
    await runtime.start()
    yield runtime
    await runtime.stop()


async def tapping(settings: Settings, amqp: aio_pika.abc.AbstractConnection
                  ) -> AsyncIterator[Tap]:
    tap = Tap()
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    for key in OUTPUT_TYPES:
        await queue.bind(f"{settings.namespace}.events", key)
    await queue.consume(tap.on_message)
    yield tap
    await channel.close()


async def publishing(settings: Settings, amqp: aio_pika.abc.AbstractConnection
                     ) -> AsyncIterator[Publisher]:
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    yield Publisher(channel, settings.namespace)
    await channel.close()


async def http_client(runtime: EscalationRuntime) -> AsyncIterator[httpx.AsyncClient]:
    """The API as the quality lead (the audit trail records that account)."""
    token = await token_for(runtime.pool, "quality.lead@icb.example.nhs.uk", "quality_lead",
                            "quality_team")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http.port}",
                                 headers=bearer(token)) as client:
        yield client


@pytest.fixture(scope="module")
async def esc_settings(settings: Settings, server_urls: ServerUrls) -> AsyncIterator[Settings]:
    async for own in own_stack(settings, server_urls, "esc"):
        yield own


@pytest.fixture(scope="module")
async def db(esc_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The module's database (instead of the session's)."""
    async for pool in pool_of(esc_settings):
        yield pool


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(london(2031, 3, 3, 8, 0))


@pytest.fixture(scope="module")
async def escalation(esc_settings: Settings, clock: FakeClock) -> AsyncIterator[EscalationRuntime]:
    async for runtime in running(esc_settings, clock):
        yield runtime


@pytest.fixture(scope="module")
async def tap(esc_settings: Settings, amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[Tap]:
    async for tap in tapping(esc_settings, amqp):
        yield tap


@pytest.fixture(scope="module")
async def publisher(esc_settings: Settings,
                    amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[Publisher]:
    async for publisher in publishing(esc_settings, amqp):
        yield publisher


@pytest.fixture
async def api(escalation: EscalationRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async for client in http_client(escalation):
        yield client


async def meeting_row(db: asyncpg.Pool, concern_id: uuid.UUID) -> asyncpg.Record | None:
    """The meeting whose agenda the concern is on."""
    return await db.fetchrow(
        "SELECT m.* FROM escalation.meetings m JOIN escalation.meeting_concerns mc"
        " USING (meeting_id) WHERE mc.concern_id = $1", concern_id)


async def announce(runtime: EscalationRuntime, clock: FakeClock, db: asyncpg.Pool,
                   *sent: Envelope) -> None:
    """Once escalation has handled ``sent``, let the coalescing window (60 s) pass and run
    the due announcements."""
    for envelope in sent:
        await eventually(partial(handled, db, envelope), what=f"{envelope.type} handled")
    clock.now += timedelta(seconds=61)
    await runtime.ticker.run_due(clock.now)


async def handled(db: asyncpg.Pool, envelope: Envelope) -> bool:
    """escalation has handled (and audited) this event."""
    return bool(await db.fetchval("SELECT true FROM escalation.audit_log WHERE event_id = $1",
                                  envelope.id))


async def overlapping_bookings(db: asyncpg.Pool) -> int:
    return int(await db.fetchval(
        "SELECT count(*) FROM escalation.bookings a JOIN escalation.bookings b"
        " ON a.attendee = b.attendee AND a.meeting_id < b.meeting_id AND a.during && b.during"))


# -- severity -> action ------------------------------------------------------------------------------

async def test_serious_concern_books_a_remedial_meeting_within_two_working_days(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient, esc_settings: Settings) -> None:
    clock.now = london(2031, 3, 3, 8, 0)  # Monday
    c = concern("RAN", Severity.SERIOUS, raised_at=clock.now)
    sent = await publisher.send(c)

    meeting = MeetingScheduled.model_validate(
        (await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)).data)
    start = meeting.starts_at.astimezone(LONDON)
    assert start >= clock.now + timedelta(hours=1)
    assert is_working_day(start.date())
    assert meeting.deadline == london(2031, 3, 5, 17, 0)  # two working days after Monday
    assert meeting.ends_at <= meeting.deadline and not meeting.breach
    assert meeting.ends_at - meeting.starts_at == timedelta(minutes=60)
    assert {(a.role, a.email) for a in meeting.attendees} == {
        ("provider quality lead", "quality.ran@provider.example"),
        ("commissioner quality lead", esc_settings.quality_lead_email),
        ("lay member", esc_settings.lay_member_email)}
    assert meeting.sequence == 0
    assert any("Evidence: complaint" in item for item in meeting.agenda)

    bookings = await db.fetch("SELECT attendee, during FROM escalation.bookings"
                              " WHERE meeting_id = $1", meeting.meeting_id)
    assert {b["attendee"] for b in bookings} == {
        "provider:RAN", f"person:{esc_settings.quality_lead_email}",
        f"person:{esc_settings.lay_member_email}"}
    assert all(b["during"].lower == meeting.starts_at for b in bookings)

    file = (await api.get(f"/v1/concerns/{c.concern_id}")).json()
    assert file["meeting"]["meeting_id"] == str(meeting.meeting_id)
    assert [s["level"] for s in file["ladder"]] == ["remedial_meeting"]
    audit = (await api.get(f"/v1/concerns/{c.concern_id}/audit")).json()
    assert audit[0]["action"] == "concern raised"
    assert audit[0]["event_id"] == str(sent.id)
    assert audit[0]["detail"]["meeting"].startswith(f"booked {meeting.meeting_id}")


async def test_moderate_goes_on_the_next_cqrm_and_low_on_the_watch_list(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    clock.now = london(2031, 3, 10, 8, 0)  # Monday; + 5 working days = Mon 17 March
    moderate = concern("RP6", Severity.MODERATE, raised_at=clock.now)
    low = concern("RP6", Severity.LOW, raised_at=clock.now)
    await publisher.send(moderate)
    low_sent = await publisher.send(low)

    # The March CQRM (Tue 11) is too soon: the item goes on Tuesday 8 April 2031, 10:00.
    agendas = await eventually(lambda: _cqrm(api, "RP6"), what="CQRM agenda")
    assert [(datetime.fromisoformat(a["cqrm_at"]), len(a["items"])) for a in agendas] == [
        (london(2031, 4, 8, 10, 0), 1)]
    assert agendas[0]["items"][0]["concern_id"] == str(moderate.concern_id)
    await eventually(lambda: handled(db, low_sent), what="low concern handled")
    watch = (await api.get("/v1/watch-list", params={"ods_code": "RP6"})).json()
    assert [w["concern_id"] for w in watch] == [str(low.concern_id)]

    # New evidence on the moderate concern a month later: same CQRM, new text.
    clock.now = london(2031, 3, 31, 8, 0)
    sent = await publisher.send(updated(moderate, Severity.MODERATE, new_evidence=2))
    await eventually(lambda: handled(db, sent), what="update handled")
    agendas = await _cqrm(api, "RP6")
    assert datetime.fromisoformat(agendas[0]["cqrm_at"]) == london(2031, 4, 8, 10, 0)
    assert "[3 piece(s) of evidence]" in agendas[0]["items"][0]["item"]

    # It rises to high: a remedial meeting now, and the item leaves the CQRM agenda.
    await publisher.send(updated(moderate, Severity.HIGH))
    meeting = await tap.one("meeting.scheduled.v1", concern_id=moderate.concern_id)
    assert meeting.data["severity"] == "high"
    assert await _cqrm(api, "RP6") == []
    assert not tap.of("meeting.scheduled.v1", concern_id=low.concern_id)


async def _cqrm(api: httpx.AsyncClient, ods: str) -> list[dict[str, Any]]:
    response = await api.get("/v1/cqrm", params={"ods_code": ods})
    assert response.status_code == 200, response.text
    return list(response.json())


# -- a concern that changes ----------------------------------------------------------------------------

async def test_new_evidence_updates_the_agenda_with_the_next_sequence(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool) -> None:
    clock.now = london(2031, 3, 10, 8, 0)
    c = concern("RPY", Severity.SERIOUS, raised_at=clock.now)
    await publisher.send(c)
    booked = await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)
    # The organiser is the provider's own commissioner, as the registry knows it.
    assert booked.data["organizer"]["name"] == "NHS South West London ICB"

    clock.now = london(2031, 3, 10, 8, 20)
    u = updated(c, Severity.SERIOUS)
    sent = await publisher.send(u)
    await eventually(lambda: handled(db, sent), what="update handled")
    assert not tap.of("meeting.rescheduled.v1", concern_id=c.concern_id)  # not before the window
    await announce(escalation, clock, db)
    event = MeetingRescheduled.model_validate(
        (await tap.one("meeting.rescheduled.v1", concern_id=c.concern_id)).data)
    assert str(event.meeting_id) == booked.data["meeting_id"]
    assert event.sequence == 1
    assert event.starts_at == event.previous_starts_at == datetime.fromisoformat(
        booked.data["starts_at"])
    assert event.change.startswith("agenda updated")
    new_id = str(u.evidence[-1].feedback_id)
    assert any(new_id in item for item in event.agenda)
    assert not any(new_id in item for item in booked.data["agenda"])

    # The same announcement again (a new event id, nothing new in it): no reschedule.
    again = await publisher.send(updated(c, Severity.SERIOUS, new_evidence=0))
    await announce(escalation, clock, db, again)
    assert len(tap.of("meeting.rescheduled.v1", concern_id=c.concern_id)) == 1
    row = await meeting_row(db, c.concern_id)
    assert row is not None and row["sequence"] == 1


async def test_high_to_serious_brings_the_meeting_forward_and_releases_the_old_slot(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, esc_settings: Settings) -> None:
    clock.now = london(2031, 3, 17, 8, 0)  # Monday: the serious window runs to Wed 17:00
    # Nine serious concerns at nine providers fill Monday to Wednesday: the quality lead and
    # the lay member take at most 3 meetings a day, 30 minutes apart.
    fillers = [concern(ods, Severity.SERIOUS, raised_at=clock.now) for ods in FILLER_ODS]
    for f in fillers:
        await publisher.send(f)
    await eventually(lambda: _all_booked(db, fillers), timeout=30, what="9 fillers booked")
    start_of = {r["concern_id"]: r["starts_at"] for r in await db.fetch(
        "SELECT concern_id, starts_at FROM escalation.meetings WHERE concern_id = ANY($1)",
        [f.concern_id for f in fillers])}
    assert sorted(start_of.values()) == [
        london(2031, 3, d, hh, mm) for d in (17, 18, 19) for hh, mm in ((9, 0), (10, 30),
                                                                         (12, 0))]

    # A high concern lands on Thursday, the first free hour (inside its 10-day window).
    c = concern("RRU", Severity.HIGH, raised_at=clock.now)
    await publisher.send(c)
    first = await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)
    assert datetime.fromisoformat(first.data["starts_at"]) == london(2031, 3, 20, 9, 0)
    assert not first.data["breach"]

    # One filler resolves, freeing Tuesday 10:30 (its meeting is cancelled at once); then
    # the concern becomes serious.
    freed = next(f for f in fillers if start_of[f.concern_id] == london(2031, 3, 18, 10, 30))
    clock.now = london(2031, 3, 17, 8, 30)
    await publisher.send(resolved(freed, clock.now))
    await tap.one("meeting.cancelled.v1", concern_id=freed.concern_id)
    sent = await publisher.send(updated(c, Severity.SERIOUS))
    await announce(escalation, clock, db, sent)

    moved = MeetingRescheduled.model_validate(
        (await tap.one("meeting.rescheduled.v1", concern_id=c.concern_id)).data)
    assert str(moved.meeting_id) == first.data["meeting_id"]
    assert moved.sequence == 1
    assert moved.change.startswith("brought forward")
    assert moved.previous_starts_at == london(2031, 3, 20, 9, 0)
    assert moved.starts_at == london(2031, 3, 18, 10, 30)
    assert moved.deadline == london(2031, 3, 19, 17, 0) and not moved.breach
    assert moved.severity == Severity.SERIOUS
    bookings = await db.fetch("SELECT attendee, lower(during) AS s FROM escalation.bookings"
                              " WHERE meeting_id = $1", moved.meeting_id)
    assert len(bookings) == 3 and {b["s"] for b in bookings} == {moved.starts_at}
    # Thursday 09:00 is free again for the quality lead.
    assert not await db.fetchval(
        "SELECT count(*) FROM escalation.bookings WHERE attendee = $1 AND during && tstzrange($2, $3)",
        f"person:{esc_settings.quality_lead_email}", london(2031, 3, 20, 9, 0),
        london(2031, 3, 20, 10, 0))
    assert await overlapping_bookings(db) == 0


async def _all_booked(db: asyncpg.Pool, concerns: list[ConcernRaised]) -> bool:
    """Every concern is on a meeting's agenda."""
    n = await db.fetchval("SELECT count(*) FROM escalation.meeting_concerns"
                          " WHERE concern_id = ANY($1)", [c.concern_id for c in concerns])
    return bool(n == len(concerns))


async def test_resolved_concern_cancels_its_meeting_not_yet_held(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    clock.now = london(2031, 3, 24, 8, 0)
    c = concern("RQY", Severity.SERIOUS, raised_at=clock.now)
    await publisher.send(c)
    booked = await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)

    clock.now = london(2031, 3, 24, 8, 30)
    await publisher.send(resolved(c, clock.now))
    cancelled = await tap.one("meeting.cancelled.v1", concern_id=c.concern_id)
    assert cancelled.data["meeting_id"] == booked.data["meeting_id"]
    assert cancelled.data["sequence"] == 1
    assert cancelled.data["starts_at"] == booked.data["starts_at"]
    assert "concern resolved" in cancelled.data["reason"]
    row = await meeting_row(db, c.concern_id)
    assert row is not None and row["status"] == "cancelled" and row["sequence"] == 1
    assert not await db.fetchval("SELECT count(*) FROM escalation.bookings WHERE meeting_id = $1",
                                 row["meeting_id"])
    file = (await api.get(f"/v1/concerns/{c.concern_id}")).json()
    assert file["concern"]["status"] == "resolved"
    assert [a["action"] for a in (await api.get(f"/v1/concerns/{c.concern_id}/audit")).json()] \
        == ["concern raised", "concern resolved"]


async def test_a_resolution_that_overtakes_the_raise_books_nothing(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool) -> None:
    clock.now = london(2031, 3, 24, 9, 0)
    c = concern("RQY", Severity.SERIOUS, raised_at=clock.now)
    first = await publisher.send(resolved(c, clock.now))
    await eventually(lambda: handled(db, first), what="resolution handled")
    late = await publisher.send(c)
    await eventually(lambda: handled(db, late), what="late raise handled")
    assert await meeting_row(db, c.concern_id) is None
    audit = await db.fetch("SELECT action, detail FROM escalation.audit_log WHERE concern_id = $1"
                           " ORDER BY id", c.concern_id)
    assert audit[-1]["detail"]["note"] == "concern already resolved: noted, no action"


# -- after the meeting: action plans and the ladder ----------------------------------------------------

async def test_overdue_action_escalates_to_enhanced_surveillance_then_intensive_support(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient, esc_settings: Settings) -> None:
    ticker = escalation.ticker
    clock.now = london(2031, 3, 31, 8, 0)
    c = concern("RRU", Severity.SERIOUS, raised_at=clock.now)
    await publisher.send(c)
    meeting = await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)

    # The meeting is held; the quality team records the outcome and the action plan.
    clock.now = london(2031, 4, 1, 17, 0)
    response = await api.post(f"/v1/meetings/{meeting.data['meeting_id']}/outcome", json={
        "outcome": "Provider accepted the findings; plan agreed.",
        "actions": [
            {"description": "Provide the 72-hour report", "owner": "Chief Nurse",
             "due_on": "2031-04-10"},
            {"description": "Confirm Duty of Candour met", "owner": "Medical Director",
             "due_on": "2031-04-10"}]})
    assert response.status_code == 201, response.text
    overdue_one, done_one = (a["action_id"] for a in response.json()["actions"])
    assert (await api.post(f"/v1/meetings/{meeting.data['meeting_id']}/outcome", json={
        "outcome": "again"})).status_code == 409

    # The provider completes one action at once, with its evidence.
    clock.now = london(2031, 4, 2, 11, 0)
    response = await api.post(f"/v1/actions/{done_one}/complete", json={
        "evidence": "Letter to the family of 2 April, ref DOC-114"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"

    # Three working days before the due date (Thu 10 April): a reminder, for the open one only.
    clock.now = london(2031, 4, 7, 9, 0)
    await ticker.run_due(clock.now)
    reminder = await tap.one("action.due_soon.v1", concern_id=c.concern_id)
    assert reminder.data["action"]["action_id"] == overdue_one
    assert reminder.data["days_left"] == 3

    # Good Friday and Easter Monday pass: not yet overdue.
    clock.now = london(2031, 4, 14, 12, 0)
    await ticker.run_due(clock.now)
    assert not tap.of("action.overdue.v1", concern_id=c.concern_id)

    # Tuesday after Easter, 09:00: overdue, and the concern climbs to enhanced surveillance.
    clock.now = london(2031, 4, 15, 9, 0)
    await ticker.run_due(clock.now)
    overdue = await tap.one("action.overdue.v1", concern_id=c.concern_id)
    assert overdue.data["action"]["action_id"] == overdue_one
    assert overdue.data["days_overdue"] == 5
    step1 = await tap.one("concern.escalated.v1", concern_id=c.concern_id,
                          level="enhanced_surveillance")
    assert [h["level"] for h in step1.data["history"]] == ["remedial_meeting",
                                                          "enhanced_surveillance"]

    # Nine working days on: no further step.
    clock.now = london(2031, 4, 28, 9, 0)
    await ticker.run_due(clock.now)
    assert not tap.of("concern.escalated.v1", concern_id=c.concern_id, level="intensive_support")

    # Ten working days after enhanced surveillance began, still overdue: intensive support
    # (NQB 2022), with a Rapid Quality Review booked as a meeting of the system's partners.
    clock.now = london(2031, 4, 29, 9, 0)
    await ticker.run_due(clock.now)
    summit = await tap.one("concern.escalated.v1", concern_id=c.concern_id,
                           level="intensive_support")
    assert [h["level"] for h in summit.data["history"]] == [
        "remedial_meeting", "enhanced_surveillance", "intensive_support"]
    invited = {a["email"] for a in summit.data["attendees"]}
    members = {esc_settings.qsg_local_authority_email, esc_settings.qsg_cqc_email,
               esc_settings.healthwatch_email, esc_settings.qsg_nhs_england_email,
               esc_settings.quality_lead_email, "quality.rru@provider.example"}
    assert members <= invited
    assert len(tap.of("concern.escalated.v1", concern_id=c.concern_id)) == 2
    review = next(e for e in tap.of("meeting.scheduled.v1", concern_id=c.concern_id)
                  if e.data["kind"] == "rapid_quality_review")
    assert review.data["title"].startswith("Rapid Quality Review: ")
    assert members <= {a["email"] for a in review.data["attendees"]}
    assert "Rapid Quality Review room" in review.data["location"] and review.data["url"]
    assert london(2031, 4, 29, 10, 0) <= datetime.fromisoformat(review.data["starts_at"]) \
        <= london(2031, 5, 6, 17, 0)  # within 5 working days (May Day on the 5th)
    assert any(i.startswith("Ladder: Enhanced surveillance") for i in review.data["agenda"])

    # Not closable while an action is open; closable once it is complete.
    response = await api.post(f"/v1/concerns/{c.concern_id}/close",
                              json={"reason": "plan complete"})
    assert response.status_code == 409 and overdue_one in response.json()["detail"]
    clock.now = london(2031, 5, 2, 10, 0)
    assert (await api.post(f"/v1/actions/{overdue_one}/complete", json={
        "evidence": "72-hour report received 2 May"})
    ).status_code == 200
    response = await api.post(f"/v1/concerns/{c.concern_id}/close",
                              json={"reason": "plan complete"})
    assert response.status_code == 200, response.text
    closed = await tap.one("concern.closed.v1", concern_id=c.concern_id)
    assert closed.data["reason"] == "plan complete"

    audit = (await api.get(f"/v1/concerns/{c.concern_id}/audit")).json()
    assert [(a["party"], a["action"]) for a in audit] == [
        ("system", "concern raised"),
        ("commissioner", "meeting outcome recorded"),
        ("commissioner", "remedial action agreed"),
        ("commissioner", "remedial action agreed"),
        ("provider", "remedial action completed"),
        ("system", "action due soon: reminder sent"),
        ("system", "action overdue"),
        ("system", "concern escalated to enhanced_surveillance"),
        ("system", "concern escalated to intensive_support"),
        ("provider", "remedial action completed"),
        ("commissioner", "concern closed"),
    ]
    # quality-monitor then resolves it: the meeting was held, so nothing is cancelled.
    await publisher.send(resolved(c, clock.now))
    await eventually(lambda: _status(db, c.concern_id, "resolved"), what="resolved")
    assert not tap.of("meeting.cancelled.v1", concern_id=c.concern_id)


async def _status(db: asyncpg.Pool, concern_id: uuid.UUID, status: str) -> bool:
    return bool(await db.fetchval("SELECT status = $2 FROM escalation.concerns"
                                  " WHERE concern_id = $1", concern_id, status))


async def test_commands_refuse_what_does_not_exist_or_apply(
        escalation: EscalationRuntime, api: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    assert (await api.post(f"/v1/meetings/{missing}/outcome", json={
        "outcome": "x"})).status_code == 404
    assert (await api.post(f"/v1/actions/{missing}/complete", json={
        "evidence": "x"})).status_code == 404
    assert (await api.post(f"/v1/concerns/{missing}/actions", json={
        "description": "x", "owner": "y", "due_on": "2031-01-01"})
    ).status_code == 404
    assert (await api.get(f"/v1/concerns/{missing}/audit")).status_code == 404
    assert (await api.post(f"/v1/concerns/{missing}/close", json={
        "closed_by": "x", "reason": "y"})).status_code == 422  # no such field: who is the token


async def test_the_audit_trail_is_append_only(escalation: EscalationRuntime,
                                              db: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("UPDATE escalation.audit_log SET actor = 'someone else'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("DELETE FROM escalation.audit_log")


# -- visits ------------------------------------------------------------------------------------------

async def test_a_second_serious_concern_on_a_theme_plans_an_insight_visit_with_healthwatch(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, esc_settings: Settings) -> None:
    theme = f"pressure ulcers {uuid.uuid4().hex[:6]}"
    clock.now = london(2031, 5, 12, 8, 0)
    first = concern("RAX", Severity.SERIOUS, theme=theme, raised_at=clock.now)
    sent = await publisher.send(first)
    await eventually(lambda: handled(db, sent))
    assert not tap.of("visit.scheduled.v1", concern_id=first.concern_id)

    clock.now = london(2031, 6, 9, 8, 0)  # 28 days later (same theme, new concern)
    second = concern("RAX", Severity.SERIOUS, theme=theme, raised_at=clock.now)
    await publisher.send(second)
    visit = await tap.one("visit.scheduled.v1", concern_id=second.concern_id)
    assert visit.data["visit_kind"] == "insight_visit"
    assert visit.data["due_on"] == working_days_after(date(2031, 6, 9), 20).isoformat()
    assert esc_settings.healthwatch_email in {a["email"] for a in visit.data["attendees"]}
    assert "persistent concern" in visit.data["reason"]

    # A third within the window does not plan another visit.
    third = concern("RAX", Severity.SERIOUS, theme=theme, raised_at=clock.now)
    sent = await publisher.send(third)
    await eventually(lambda: handled(db, sent))
    assert len([v for v in tap.of("visit.scheduled.v1") if v.data["provider"]["ods_code"] == "RAX"
                and v.data["visit_kind"] == "insight_visit"]) == 1


def visit_report(ods: str, visited_on: date, rating: str = "requires_improvement",
                 kind: str = "insight_visit") -> FeedbackAccepted:
    return FeedbackAccepted(
        feedback_id=uuid.uuid4(), submission_id=uuid.uuid4(), provider=provider(ods),
        kind=kind, provider_record_id=f"visit-{uuid.uuid4().hex[:8]}", occurred_on=visited_on,
        theme="visit: ward 7", content={"kind": kind, "visit_type": "enter_and_view",
                                        "visited_on": visited_on.isoformat(),
                                        "service": "ward 7", "rating": rating,
                                        "findings": "Call bells unanswered at night."})


async def test_a_visit_schedules_its_revisit_about_twelve_months_later(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient, esc_settings: Settings) -> None:
    clock.now = london(2031, 6, 4, 10, 0)
    report = visit_report("RQY", date(2031, 6, 3), rating="good")
    await publisher.send(report, source="carewatch/intake")
    # Other accepted feedback is not for escalation: its routing key is not bound.
    other = visit_report("RQY", date(2031, 6, 3), kind="complaint")
    other_sent = await publisher.send(other, source="carewatch/intake")

    visits = await eventually(lambda: _visits(api, "RQY", 2), what="visit and re-visit")
    held = next(v for v in visits if v["status"] == "held")
    revisit = next(v for v in visits if v["status"] == "planned")
    assert held["visited_on"] == "2031-06-03"
    assert revisit["visit_kind"] == "revisit" and revisit["follows_visit_id"] == held["visit_id"]
    assert revisit["due_on"] == revisit_due_on(date(2031, 6, 3)).isoformat() == "2032-06-03"
    assert not await db.fetchval("SELECT true FROM escalation.inbox WHERE event_id = $1",
                                 other_sent.id)

    # Nothing is announced until 20 working days before it is due (Wed 5 May 2032, 09:00).
    clock.now = london(2032, 5, 4, 17, 0)
    await escalation.ticker.run_due(clock.now)
    assert not tap.of("visit.scheduled.v1", visit_id=revisit["visit_id"])
    clock.now = london(2032, 5, 5, 9, 0)
    await escalation.ticker.run_due(clock.now)
    announced = await tap.one("visit.scheduled.v1", visit_id=revisit["visit_id"])
    assert announced.data["visit_kind"] == "revisit"
    assert announced.data["due_on"] == "2032-06-03"
    assert esc_settings.healthwatch_email in {a["email"] for a in announced.data["attendees"]}

    # The re-visit happens: it is held, and plans the next one a year on.
    clock.now = london(2032, 6, 4, 10, 0)
    await publisher.send(visit_report("RQY", date(2032, 6, 3), rating="good"),
                         source="carewatch/intake")
    visits = await eventually(lambda: _visits(api, "RQY", 3), what="next re-visit")
    assert [(v["visit_kind"], v["status"], v["due_on"]) for v in visits] == [
        ("insight_visit", "held", "2031-06-03"),
        ("revisit", "held", "2032-06-03"),
        ("revisit", "planned", revisit_due_on(date(2032, 6, 3)).isoformat())]


async def test_a_requires_improvement_visit_is_followed_up_sooner(
        escalation: EscalationRuntime, clock: FakeClock, publisher: Publisher,
        db: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    clock.now = london(2031, 6, 4, 10, 0)
    report = visit_report("RJ7", date(2031, 6, 3), rating="requires_improvement")
    await publisher.send(report, source="carewatch/intake")
    visits = await eventually(lambda: _visits(api, "RJ7", 3), what="visit, follow-up, re-visit")
    assert [(v["visit_kind"], v["status"], v["due_on"]) for v in visits] == [
        ("insight_visit", "held", "2031-06-03"),
        ("revisit", "planned", revisit_due_on(date(2031, 6, 3), 4).isoformat()),
        ("revisit", "planned", "2032-06-03")]
    follow_up = visits[1]
    assert "follow-up 4 months after the visit of 2031-06-03, rated requires improvement" in \
        follow_up["reason"]
    # The same report again (another message): no second follow-up, no second re-visit.
    again = await publisher.send(report, source="carewatch/intake")
    await eventually(lambda: db.fetchval("SELECT true FROM escalation.inbox WHERE event_id = $1",
                                         again.id), what="the second report handled")
    assert len(await _visits(api, "RJ7", 3) or []) == 3


async def _visits(api: httpx.AsyncClient, ods: str, n: int) -> list[dict[str, Any]] | None:
    visits = (await api.get("/v1/visits", params={"ods_code": ods})).json()
    return visits if len(visits) >= n else None


# -- the CLI ------------------------------------------------------------------------------------------

async def test_cli_adds_completes_and_lists_actions_and_closes_the_concern(
        escalation: EscalationRuntime, clock: FakeClock, tap: Tap, publisher: Publisher,
        esc_settings: Settings, api: httpx.AsyncClient) -> None:
    clock.now = london(2031, 10, 6, 8, 0)
    c = concern("RAN", Severity.HIGH, raised_at=clock.now)
    await publisher.send(c)
    meeting = await tap.one("meeting.scheduled.v1", concern_id=c.concern_id)
    # The CLI acts as the account of its token (CAREWATCH_TOKEN).
    as_lead = {"CAREWATCH_TOKEN": await token_for(escalation.pool, "QL", "quality_lead",
                                                  "quality_team")}

    # The meeting (in 2031) has not started by the CLI's clock: no outcome yet.
    code, out = await carewatch(esc_settings, "meetings", "outcome", meeting.data["meeting_id"],
                                "--outcome", "Agreed a falls prevention plan",
                                "--action", "2031-11-14|Director of Nursing|Audit falls",
                                env=as_lead)
    assert code == 1 and "has not started" in out, out
    clock.now = datetime.fromisoformat(meeting.data["ends_at"])
    response = await api.post(f"/v1/meetings/{meeting.data['meeting_id']}/outcome", json={
        "outcome": "Agreed a falls prevention plan",
        "actions": [{"description": "Audit falls", "owner": "Director of Nursing",
                     "due_on": "2031-11-14"}]})
    assert response.status_code == 201, response.text
    code, out = await carewatch(esc_settings, "actions", "list", "--concern", str(c.concern_id),
                                "--json")
    assert code == 0, out
    [action] = json.loads(out)
    assert (action["owner"], action["due_on"], action["status"]) == (
        "Director of Nursing", "2031-11-14", "open")
    code, out = await carewatch(esc_settings, "actions", "complete", action["action_id"],
                                "--evidence", "Audit report of 10 November", env=as_lead)
    assert code == 0, out
    code, out = await carewatch(esc_settings, "escalation", "close", str(c.concern_id),
                                "--reason", "falls audit done", env=as_lead)
    assert code == 0, out
    # The CLI wrote concern.closed.v1 to the outbox; the running service published it.
    closed = await tap.one("concern.closed.v1", concern_id=c.concern_id)
    assert closed.data["closed_by"] == "QL"
    code, out = await carewatch(esc_settings, "escalation", "audit", str(c.concern_id), "--json")
    assert code == 0, out
    assert [a["action"] for a in json.loads(out)] == [
        "concern raised", "meeting outcome recorded", "remedial action agreed",
        "remedial action completed", "concern closed"]


# -- replicas ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def second_replica(esc_settings: Settings, clock: FakeClock,
                         escalation: EscalationRuntime) -> AsyncIterator[EscalationRuntime]:
    async for runtime in running(esc_settings, clock):
        yield runtime


def handled_count(runtime: EscalationRuntime) -> float:
    return sum(s.value for metric in runtime.metrics.messages.collect() for s in metric.samples
               if s.name.endswith("_total") and s.labels.get("outcome") == "handled")


async def test_two_replicas_on_a_burst_book_one_meeting_per_concern_and_never_double_book(
        escalation: EscalationRuntime, second_replica: EscalationRuntime, clock: FakeClock,
        tap: Tap, publisher: Publisher, db: asyncpg.Pool, esc_settings: Settings) -> None:
    clock.now = london(2031, 9, 1, 8, 0)  # Monday
    before = (handled_count(escalation), handled_count(second_replica))
    rising = [concern(FILLER_ODS[i % 3], Severity.HIGH, raised_at=clock.now) for i in range(15)]
    serious = [concern(FILLER_ODS[3 + i % 4], Severity.SERIOUS, raised_at=clock.now)
               for i in range(15)]
    burst: list[Event] = []
    for r, s in zip(rising, serious, strict=True):
        burst += [r, updated(r, Severity.SERIOUS), s, s]  # s twice: a resend, new event id
    started = time.perf_counter()
    await asyncio.gather(*(publisher.send(e) for e in burst))
    everything = [*rising, *serious]
    await eventually(lambda: _all_booked(db, everything), timeout=60, what="30 meetings")
    await eventually(lambda: _all_audited(db, everything, 60), timeout=60,
                     what="all 60 events handled")
    elapsed = time.perf_counter() - started

    ids = [c.concern_id for c in everything]
    # One meeting per provider (7 providers), every concern on exactly one agenda.
    on_agenda = await db.fetch(
        "SELECT mc.concern_id, m.meeting_id, m.ods_code FROM escalation.meeting_concerns mc"
        " JOIN escalation.meetings m USING (meeting_id) WHERE mc.concern_id = ANY($1)", ids)
    assert len(on_agenda) == 30
    meetings_of: dict[str, set[uuid.UUID]] = {}
    for r in on_agenda:
        meetings_of.setdefault(r["ods_code"], set()).add(r["meeting_id"])
    assert len(meetings_of) == 7 and all(len(m) == 1 for m in meetings_of.values())
    await asyncio.sleep(1)  # let the relays publish
    booked = [e for e in tap.events if e.type == "meeting.scheduled.v1"
              and e.data["concern_id"] in {str(i) for i in ids}]
    assert len(booked) == 7
    assert await overlapping_bookings(db) == 0
    lead = await db.fetch(
        "SELECT lower(during) AS s, upper(during) AS e FROM escalation.bookings"
        " WHERE attendee = $1 AND lower(during) >= $2 AND lower(during) < $3 ORDER BY 1",
        f"person:{esc_settings.quality_lead_email}", london(2031, 9, 1, 0), london(2031, 9, 8, 0))
    assert len(lead) == 7
    # At most 3 a day, 30 minutes apart.
    assert all(a["e"] + timedelta(minutes=30) <= b["s"] for a, b in itertools.pairwise(lead))
    per_day = collections.Counter(r["s"].astimezone(LONDON).date() for r in lead)
    assert max(per_day.values()) <= 3
    rows = await db.fetch("SELECT * FROM escalation.meetings WHERE meeting_id = ANY($1)",
                          list({r["meeting_id"] for r in on_agenda}))
    for row in rows:
        start = row["starts_at"].astimezone(LONDON)
        assert is_working_day(start.date()) and 9 <= start.hour < 17
        assert row["severity"] == "serious"
        assert row["breach"] == (row["ends_at"] > row["deadline"])
    # Both replicas did part of the work.
    after = (handled_count(escalation), handled_count(second_replica))
    assert after[0] > before[0] and after[1] > before[1]
    print(f"\n2 replicas: 30 concerns (60 events) booked in {elapsed:.2f}s;"
          f" handled {after[0] - before[0]:.0f} / {after[1] - before[1]:.0f}")


async def _all_audited(db: asyncpg.Pool, concerns: list[ConcernRaised], n: int) -> bool:
    count = await db.fetchval("SELECT count(*) FROM escalation.audit_log WHERE concern_id = ANY($1)"
                              " AND event_id IS NOT NULL", [c.concern_id for c in concerns])
    return bool(count >= n)


async def test_two_tickers_run_each_due_job_exactly_once(
        escalation: EscalationRuntime, second_replica: EscalationRuntime, clock: FakeClock,
        tap: Tap, publisher: Publisher, db: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    clock.now = london(2031, 11, 3, 8, 0)
    concerns = [concern("RKL", Severity.SERIOUS, raised_at=clock.now) for _ in range(4)]
    for c in concerns:
        await publisher.send(c)
    await eventually(lambda: _all_booked(db, concerns), what="meetings")
    action_ids = []
    for c in concerns:
        for n in range(5):
            response = await api.post(f"/v1/concerns/{c.concern_id}/actions", json={
                "description": f"action {n}", "owner": "Ward manager", "due_on": "2031-11-28"})
            assert response.status_code == 201, response.text
            action_ids.append(response.json()["action_id"])

    await escalation.ticker.run_due(london(2031, 11, 25, 8, 59))  # the jobs due before
    clock.now = london(2031, 11, 25, 9, 0)  # three working days before Friday 28th
    ran = await asyncio.gather(escalation.ticker.run_due(clock.now),
                               second_replica.ticker.run_due(clock.now),
                               escalation.ticker.run_due(clock.now))
    def ours() -> list[Envelope]:
        return [e for e in tap.of("action.due_soon.v1")
                if e.data["action"]["action_id"] in action_ids]

    await eventually(lambda: _async(len(ours()) >= 20), what="20 reminders")
    await asyncio.sleep(1)  # a duplicate would have arrived by now
    assert sorted(e.data["action"]["action_id"] for e in ours()) == sorted(action_ids)
    jobs = await db.fetch("SELECT attempts, outcome FROM escalation.schedule"
                          " WHERE kind = 'action_due_soon' AND payload->>'action_id' = ANY($1)",
                          action_ids)
    assert len(jobs) == 20 and all((j["attempts"], j["outcome"]) == (1, "done") for j in jobs)
    assert sum(ran) <= 20  # the background ticks may have taken some
