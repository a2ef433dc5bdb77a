"""A realistic year: the demo generator's 400 days of serious and high concerns, fed to the
real escalation service (real broker and database, both of the module's own) day by day on
a driven clock (tools/meetings_year.py), then checked as a quality team would:

- nobody over their daily cap or inside their buffer, no double booking;
- at most one remedial meeting per provider booked and not yet started, after every day;
- every concern on exactly one meeting's agenda;
- the invitations notification would send, built and parsed back: SEQUENCE strictly
  increasing per meeting, one update per burst of changes.

Bounded (400 days, about 240 concern events) and waiting on progress, never on a wall-clock
budget.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Literal

import asyncpg
import pytest
from icalendar import Calendar

from services.notification.invitations import build_invitation
from shared.events import MeetingCancelled, MeetingRescheduled, MeetingScheduled
from shared.settings import Settings
from tests.conftest import ServerUrls
from tests.integration.test_escalation import own_stack, pool_of
from tools.meetings_year import LONDON, distribution, live_year, year_of_concerns

pytestmark = pytest.mark.integration
EVENT_CLASS: dict[str, type[MeetingScheduled]] = {"meeting.scheduled.v1": MeetingScheduled,
                                                  "meeting.rescheduled.v1": MeetingRescheduled,
                                                  "meeting.cancelled.v1": MeetingCancelled}


@pytest.fixture(scope="module")
async def year_settings(settings: Settings, server_urls: ServerUrls
                        ) -> AsyncIterator[Settings]:
    async for own in own_stack(settings, server_urls, "year"):
        yield own


@pytest.fixture(scope="module")
async def year_db(year_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    async for pool in pool_of(year_settings):
        yield pool


def one_open_meeting_per_provider(concern_ids: set[uuid.UUID]
                                  ) -> Callable[[asyncpg.Pool, datetime], Awaitable[None]]:
    async def check(db: asyncpg.Pool, now: datetime) -> None:
        rows = await db.fetch(
            "SELECT m.ods_code, count(DISTINCT m.meeting_id) AS n FROM escalation.meetings m"
            " JOIN escalation.meeting_concerns mc USING (meeting_id)"
            " WHERE mc.concern_id = ANY($2) AND m.kind = 'remedial'"
            " AND m.status = 'scheduled' AND m.starts_at > $1"
            " GROUP BY m.ods_code HAVING count(DISTINCT m.meeting_id) > 1",
            now, list(concern_ids))
        assert not rows, f"{now}: providers with two open meetings: {[dict(r) for r in rows]}"
    return check


async def test_a_realistic_year_of_meetings(year_settings: Settings,
                                            year_db: asyncpg.Pool) -> None:
    db = year_db
    timed = year_of_concerns(date.today(), days=400)
    concern_ids = {t.event.concern_id for t in timed}
    # The generated year depends on today's date (intake refuses future days): over the
    # next months it gives 187-242 events on 75-99 concerns; a year thinner than this
    # would not test the meeting capacity.
    assert len(timed) > 150 and len(concern_ids) > 60, (len(timed), len(concern_ids))
    first = min(t.at for t in timed)
    year = await live_year(year_settings, timed, mode="paced",
                           check=one_open_meeting_per_provider(concern_ids))
    assert year.bursts == len({t.at.date() for t in timed})

    # Every concern on exactly one agenda.
    agenda = await db.fetch("SELECT concern_id, meeting_id FROM escalation.meeting_concerns"
                            " WHERE concern_id = ANY($1)", list(concern_ids))
    assert Counter(r["concern_id"] for r in agenda) == Counter(concern_ids)
    meeting_ids = {r["meeting_id"] for r in agenda}

    # Nobody over their cap or inside their buffer; no overlap.
    people = {f"person:{p['email']}": p for p in await db.fetch("SELECT * FROM escalation.people")}
    bookings = await db.fetch(
        "SELECT attendee, lower(during) AS s, upper(during) AS e FROM escalation.bookings"
        " WHERE meeting_id = ANY($1) ORDER BY attendee, lower(during)", list(meeting_ids))
    by_attendee: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for b in bookings:
        by_attendee[b["attendee"]].append(b)
    assert any(k.startswith("person:") for k in by_attendee)
    for attendee, rows in by_attendee.items():
        buffer = timedelta(minutes=people[attendee]["buffer_minutes"]) \
            if attendee in people else timedelta()
        for a, b in itertools.pairwise(rows):
            assert a["e"] + buffer <= b["s"], (attendee, a["s"], b["s"])
        if attendee in people:
            per_day = Counter(r["s"].astimezone(LONDON).date() for r in rows)
            assert max(per_day.values()) <= people[attendee]["max_meetings_per_day"], \
                (attendee, per_day.most_common(3))

    # The invitations, built as notification builds them and parsed back.
    sequences: dict[str, list[int]] = defaultdict(list)
    updates: Counter[str] = Counter()
    for envelope in year.events:
        meeting = EVENT_CLASS[envelope.type].model_validate(envelope.data)
        if str(meeting.meeting_id) not in {str(m) for m in meeting_ids}:
            continue
        method: Literal["REQUEST", "CANCEL"] = \
            "CANCEL" if envelope.type == "meeting.cancelled.v1" else "REQUEST"
        cal = Calendar.from_ical(build_invitation(meeting, method))
        vevent = cal.walk("VEVENT")[0]
        sequences[str(vevent["uid"])].append(int(vevent.decoded("sequence")))
        updates[str(meeting.meeting_id)] += envelope.type == "meeting.rescheduled.v1"
    assert len(sequences) == len(meeting_ids)
    for uid, seq in sequences.items():
        assert seq == sorted(set(seq)) and seq[0] == 0, (uid, seq)
    # One update per burst: each update is one announcement job (one per meeting and
    # sequence), and a meeting is updated at most once in a day's burst.
    announced = await db.fetch(
        "SELECT payload->>'meeting_id' AS m, count(*) AS n FROM escalation.schedule"
        " WHERE kind = 'meeting_announce' AND outcome LIKE 'announced%' GROUP BY 1")
    assert {r["m"]: r["n"] for r in announced if r["m"] in updates} == \
        {m: n for m, n in updates.items() if n}
    touched: dict[str, set[date]] = defaultdict(set)
    for t in timed:
        touched[t.event.provider.ods_code].add(t.at.date())
    for row in await db.fetch("SELECT meeting_id, ods_code FROM escalation.meetings"
                              " WHERE meeting_id = ANY($1)", list(meeting_ids)):
        assert updates[str(row["meeting_id"])] <= len(touched[row["ods_code"]])

    report = await distribution(db, first, first + timedelta(days=430))
    print(f"\nthe year from {first.date()}: {len(timed)} concern events,"
          f" {len(concern_ids)} concerns, {len(meeting_ids)} meetings;"
          f" meetings per day {report['meetings_per_day']},"
          f" at most {report['max_per_person_per_day']} per person per day,"
          f" {report['breaches']} breaches")
