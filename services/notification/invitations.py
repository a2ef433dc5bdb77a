"""RFC 5545 calendar invitations for remedial-action meetings (pure).

UID is stable per meeting, so a reschedule (SEQUENCE + 1) or a cancellation (METHOD:CANCEL)
updates the same entry in every attendee's calendar. Times are Europe/London with VTIMEZONE.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from icalendar import Calendar, Timezone, vCalAddress, vText
from icalendar import Event as VEvent

from shared.clock import utc_now
from shared.events import MeetingScheduled

PRODID = "-//carewatch//NHS commissioner quality surveillance//EN"


def meeting_uid(meeting: MeetingScheduled) -> str:
    return f"meeting-{meeting.meeting_id}@carewatch"


def build_invitation(meeting: MeetingScheduled,
                     method: Literal["REQUEST", "CANCEL"] = "REQUEST",
                     stamp: datetime | None = None) -> bytes:
    tz = ZoneInfo(meeting.timezone)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", method)
    event = VEvent()
    event.add("uid", meeting_uid(meeting))
    event.add("sequence", meeting.sequence)
    event.add("dtstamp", stamp or utc_now())
    event.add("dtstart", meeting.starts_at.astimezone(tz))
    event.add("dtend", meeting.ends_at.astimezone(tz))
    event.add("summary", meeting.title)
    event.add("location", meeting.location)
    if meeting.url:  # the joining link, for clients that show a "Join" button
        event.add("url", meeting.url)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    description = ["Agenda:", *(f"- {item}" for item in meeting.agenda),
                   "", "Remedial actions requested:",
                   *(f"- {a}" for a in meeting.remedial_actions)]
    event.add("description", "\n".join(description))
    organizer = vCalAddress(f"mailto:{meeting.organizer.email}")
    organizer.params["cn"] = vText(meeting.organizer.name)
    event["organizer"] = organizer
    for person in meeting.attendees:
        attendee = vCalAddress(f"mailto:{person.email}")
        attendee.params["cn"] = vText(person.name)
        attendee.params["role"] = vText("REQ-PARTICIPANT")
        attendee.params["partstat"] = vText("NEEDS-ACTION")
        attendee.params["rsvp"] = vText("TRUE")
        event.add("attendee", attendee, encode=False)
    # A VTIMEZONE covering the meeting's year and the next, generated from tzdata.
    year = meeting.starts_at.astimezone(tz).year
    cal.add_component(Timezone.from_tzid(meeting.timezone, first_date=date(year, 1, 1),
                                         last_date=date(year + 2, 1, 1)))
    cal.add_component(event)
    return cal.to_ical()
