"""The rota and the slot a meeting takes (services/escalation/rota.py), and busy periods from
iCalendar (services/escalation/freebusy.py): pure functions over plain data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.escalation.freebusy import CalendarError, busy_periods
from services.escalation.rota import Choice, Diary, Person, choose_slot, why_not

LONDON = ZoneInfo("Europe/London")
HOUR = timedelta(hours=1)
LEAD = "commissioner quality lead"
LAY = "lay member"


def at(d: int, hh: int, mm: int = 0, month: int = 3) -> datetime:
    return datetime(2031, month, d, hh, mm, tzinfo=LONDON)  # 3 March 2031 is a Monday


def person(email: str, role: str = "quality lead", **kw: object) -> Person:
    return Person(email=email, name=email.split("@")[0], role=role, **kw)  # type: ignore[arg-type]


Span = tuple[datetime, datetime]


def diary(p: Person, meetings: Sequence[Span] = (), away: Sequence[Span] = (),
          load: int = 0) -> Diary:
    return Diary(p, tuple(meetings), tuple(away), load)


def choose(roles: dict[str, list[Diary]], provider_busy: Sequence[Span] = (),
           now: datetime | None = None, deadline: datetime | None = None) -> Choice:
    return choose_slot(now or at(3, 8), deadline=deadline or at(5, 17), duration=HOUR,
                       roles=roles, provider_busy=provider_busy)


def test_the_earliest_slot_where_everyone_is_free() -> None:
    lead, lay = person("lead@x"), person("lay@x", "lay member")
    choice = choose({LEAD: [diary(lead)], LAY: [diary(lay)]})
    assert (choice.start, choice.end, choice.breach) == (at(3, 9), at(3, 10), False)
    assert choice.people == {LEAD: lead, LAY: lay}


def test_a_buffer_of_30_minutes_after_and_before_each_meeting() -> None:
    lead, lay = person("lead@x"), person("lay@x", "lay member")
    choice = choose({LEAD: [diary(lead, [(at(3, 9), at(3, 10))])], LAY: [diary(lay)]})
    assert choice.start == at(3, 10, 30)  # 10:00 is inside the buffer
    # A meeting at 11:00 leaves 09:00-10:00 and 09:30-10:30 free, but not 10:00-11:00.
    choice = choose({LEAD: [diary(lead, [(at(3, 11), at(3, 12))])], LAY: [diary(lay)]},
                    now=at(3, 8))
    assert choice.start == at(3, 9)
    assert why_not(diary(lead, [(at(3, 11), at(3, 12))]), at(3, 9, 30), at(3, 10, 30),
                   LONDON) is None
    assert why_not(diary(lead, [(at(3, 11), at(3, 12))]), at(3, 10), at(3, 11),
                   LONDON) == "busy or inside the buffer"


def test_at_most_the_daily_cap_then_the_next_day() -> None:
    lead, lay = person("lead@x", max_meetings_per_day=3), person("lay@x", "lay member")
    busy = [(at(3, 9), at(3, 10)), (at(3, 10, 30), at(3, 11, 30)), (at(3, 12), at(3, 13))]
    choice = choose({LEAD: [diary(lead, busy)], LAY: [diary(lay)]})
    assert choice.start == at(4, 9)
    assert why_not(diary(lead, busy), at(3, 15), at(3, 16), LONDON) == "at the daily cap"


def test_working_hours_days_and_leave() -> None:
    part_time = person("pt@x", works_from=time(10, 0), works_until=time(14, 0),
                       working_days=frozenset({1, 2}))  # Tuesday, Wednesday
    lay = person("lay@x", "lay member")
    choice = choose({LEAD: [diary(part_time)], LAY: [diary(lay)]})
    assert choice.start == at(4, 10)
    on_leave = diary(person("lead@x"), away=[(at(3, 0), at(4, 0))])
    assert choose({LEAD: [on_leave], LAY: [diary(lay)]}).start == at(4, 9)
    assert why_not(on_leave, at(3, 9), at(3, 10), LONDON) == "unavailable"
    assert why_not(diary(part_time), at(4, 13, 30), at(4, 14, 30), LONDON) \
        == "outside working hours"


def test_the_rota_spreads_the_load() -> None:
    busy_lead, idle_lead = person("a@x"), person("b@x", "deputy quality lead")
    lay = person("lay@x", "lay member")
    choice = choose({LEAD: [diary(busy_lead, load=5), diary(idle_lead, load=1)],
                     LAY: [diary(lay)]})
    assert choice.people[LEAD] == idle_lead
    # Equal load: the order is stable (by e-mail).
    choice = choose({LEAD: [diary(idle_lead), diary(busy_lead)], LAY: [diary(lay)]})
    assert choice.people[LEAD] == busy_lead


def test_the_provider_is_never_double_booked() -> None:
    lead, lay = person("lead@x"), person("lay@x", "lay member")
    choice = choose({LEAD: [diary(lead)], LAY: [diary(lay)]},
                    provider_busy=[(at(3, 9), at(3, 12))])
    assert choice.start == at(3, 12)


def test_a_breach_says_why() -> None:
    lead = person("lead@x", max_meetings_per_day=1)
    lay = person("lay@x", "lay member")
    full = [(at(d, 9), at(d, 10)) for d in (3, 4, 5)]
    choice = choose({LEAD: [diary(lead, full)], LAY: [diary(lay)]})
    assert choice.breach and choice.start == at(6, 9)
    assert choice.breach_reason is not None
    assert "commissioner quality lead" in choice.breach_reason
    assert "at the daily cap" in choice.breach_reason
    with pytest.raises(LookupError):
        choose({LEAD: [], LAY: [diary(lay)]})


def test_busy_periods_from_freebusy_and_events() -> None:
    data = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:test\r\n"
            b"BEGIN:VFREEBUSY\r\nUID:fb1\r\nDTSTART:20310301T000000Z\r\nDTEND:20310401T000000Z\r\n"
            b"FREEBUSY;FBTYPE=BUSY:20310303T090000Z/20310303T120000Z,20310304T140000Z/PT2H\r\n"
            b"FREEBUSY;FBTYPE=FREE:20310305T090000Z/20310305T120000Z\r\nEND:VFREEBUSY\r\n"
            b"BEGIN:VEVENT\r\nUID:leave\r\nDTSTART;VALUE=DATE:20310310\r\n"
            b"DTEND;VALUE=DATE:20310312\r\nSUMMARY:Annual leave\r\nEND:VEVENT\r\n"
            b"BEGIN:VEVENT\r\nUID:board\r\nDTSTART:20310303T130000Z\r\nDTEND:20310303T140000Z\r\n"
            b"RRULE:FREQ=WEEKLY;COUNT=3\r\nSUMMARY:Board\r\nEND:VEVENT\r\n"
            b"BEGIN:VEVENT\r\nUID:free\r\nDTSTART:20310306T130000Z\r\nDTEND:20310306T140000Z\r\n"
            b"TRANSP:TRANSPARENT\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    periods = busy_periods(data, LONDON, since=at(1, 0), until=at(1, 0, month=4))
    spans = [(p.starts_at.astimezone(LONDON), p.ends_at.astimezone(LONDON), p.reason)
             for p in periods]
    assert spans == [
        (at(3, 9), at(3, 12), "busy"),
        (at(3, 13), at(3, 14), "Board"),
        (at(4, 14), at(4, 16), "busy"),
        (at(10, 0), at(12, 0), "Annual leave"),
        (at(10, 13), at(10, 14), "Board"),
        (at(17, 13), at(17, 14), "Board"),
    ]
    assert len({p.uid for p in periods}) == len(periods)  # a re-import replaces, by uid
    with pytest.raises(CalendarError):
        busy_periods(b"not a calendar", LONDON, since=at(1, 0), until=at(1, 0, month=4))
