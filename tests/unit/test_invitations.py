"""Calendar invitations and invitation e-mails (services/notification/invitations.py,
messages.py). The ICS is parsed back with icalendar; the e-mail is serialised and parsed back
as a mail client would see it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from icalendar import Calendar

from services.notification.invitations import PRODID, build_invitation, meeting_uid
from services.notification.messages import meeting_invitation_email, meeting_subject
from shared.events import MeetingScheduled
from tests.unit.builders import meeting

STAMP = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MESSAGE_ID = "<meeting-00000000-0000-4000-8000-000000000001.0@carewatch.example>"


def ics(m: MeetingScheduled, method: str = "REQUEST") -> Calendar:
    return Calendar.from_ical(build_invitation(m, method, stamp=STAMP))  # type: ignore[arg-type]


def vevent(cal: Calendar) -> Any:
    [event] = cal.walk("VEVENT")
    return event


def sent(m: MeetingScheduled) -> EmailMessage:
    """The e-mail as it goes over the wire and is parsed by the recipient."""
    msg = meeting_invitation_email(m, sender="carewatch@icb.example",
                                   recipient="q@provider.example", message_id=MESSAGE_ID)
    return message_from_bytes(msg.as_bytes(), policy=policy.default)  # type: ignore[return-value]


def part(msg: EmailMessage, content_type: str) -> Any:
    [found] = [p for p in msg.walk() if p.get_content_type() == content_type]
    return found


# -- ICS ---------------------------------------------------------------------------------------

def test_request_invitation() -> None:
    cal = ics(meeting())
    assert str(cal["METHOD"]) == "REQUEST"
    assert str(cal["VERSION"]) == "2.0"
    assert str(cal["PRODID"]) == PRODID
    event = vevent(cal)
    assert str(event["UID"]) == "meeting-00000000-0000-4000-8000-000000000001@carewatch"
    assert event.decoded("SEQUENCE") == 0
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Remedial action meeting: falls on elderly care wards"
    assert str(event["LOCATION"]) == "Microsoft Teams"
    assert event.decoded("DTSTAMP") == STAMP
    description = str(event["DESCRIPTION"])
    assert "- Falls data since April" in description
    assert "- Falls risk assessment within 6 hours of admission" in description


def test_uid_is_stable_across_sequence_changes_and_differs_between_meetings() -> None:
    first, moved = vevent(ics(meeting(sequence=0))), vevent(ics(meeting(sequence=3)))
    assert str(first["UID"]) == str(moved["UID"]) == meeting_uid(meeting())
    assert moved.decoded("SEQUENCE") == 3
    other = vevent(ics(meeting(meeting_id=uuid.uuid4())))
    assert str(other["UID"]) != str(first["UID"])


def test_cancellation() -> None:
    cal = ics(meeting(sequence=2), "CANCEL")
    assert str(cal["METHOD"]) == "CANCEL"
    event = vevent(cal)
    assert str(event["STATUS"]) == "CANCELLED"
    assert event.decoded("SEQUENCE") == 2
    assert str(event["UID"]) == meeting_uid(meeting())


@pytest.mark.parametrize("starts, ends, local_start", [
    (datetime(2026, 11, 23, 9, 0, tzinfo=UTC), datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
     "20261123T090000"),  # GMT
    (datetime(2026, 3, 30, 8, 0, tzinfo=UTC), datetime(2026, 3, 30, 9, 0, tzinfo=UTC),
     "20260330T090000"),  # first working day of BST
    (datetime(2026, 6, 1, 15, 30, tzinfo=UTC), datetime(2026, 6, 1, 16, 0, tzinfo=UTC),
     "20260601T163000"),
])
def test_times_are_europe_london_and_decode_to_the_same_instant(
        starts: datetime, ends: datetime, local_start: str) -> None:
    raw = build_invitation(meeting(starts_at=starts, ends_at=ends), stamp=STAMP).decode()
    assert f"DTSTART;TZID=Europe/London:{local_start}" in raw
    event = vevent(Calendar.from_ical(raw))
    assert event["DTSTART"].params["TZID"] == "Europe/London"
    assert event["DTEND"].params["TZID"] == "Europe/London"
    assert event.decoded("DTSTART") == starts
    assert event.decoded("DTEND") == ends


def test_a_vtimezone_for_europe_london_is_included() -> None:
    cal = ics(meeting())
    [tz] = cal.walk("VTIMEZONE")
    assert str(tz["TZID"]) == "Europe/London"
    names = {str(sub["TZNAME"]) for sub in tz.walk() if sub.name in ("STANDARD", "DAYLIGHT")}
    assert names == {"GMT", "BST"}
    # The time zone comes before the event that refers to it.
    assert cal.subcomponents.index(tz) < cal.subcomponents.index(vevent(cal))


def test_organizer_and_one_attendee_per_person_with_rsvp() -> None:
    m = meeting()
    event = vevent(ics(m))
    organizer = event["ORGANIZER"]
    assert str(organizer) == "mailto:olga@icb.example"
    assert organizer.params["CN"] == "Olga Organiser"
    attendees = event["ATTENDEE"]
    attendees = attendees if isinstance(attendees, list) else [attendees]
    assert [str(a) for a in attendees] == [f"mailto:{p.email}" for p in m.attendees]
    for address, person in zip(attendees, m.attendees, strict=True):
        assert address.params["CN"] == person.name
        assert address.params["RSVP"] == "TRUE"
        assert address.params["PARTSTAT"] == "NEEDS-ACTION"
        assert address.params["ROLE"] == "REQ-PARTICIPANT"


def test_attendee_names_with_commas_survive_the_round_trip() -> None:
    people = [meeting().attendees[0].model_copy(update={"name": "Provider, Pat"})]
    event = vevent(ics(meeting(attendees=people)))
    attendee = event["ATTENDEE"]
    attendee = attendee[0] if isinstance(attendee, list) else attendee
    assert attendee.params["CN"] == "Provider, Pat"


# -- e-mail ------------------------------------------------------------------------------------

def test_invitation_email_parts() -> None:
    msg = sent(meeting())
    assert msg.get_content_type() == "multipart/mixed"
    assert msg["Message-ID"] == MESSAGE_ID
    assert msg["From"] == "carewatch@icb.example"
    assert msg["To"] == "q@provider.example"
    assert msg["Date"]
    types = [p.get_content_type() for p in msg.walk() if not p.is_multipart()]
    assert types == ["text/plain", "text/html", "text/calendar", "application/ics"]
    calendar = part(msg, "text/calendar")
    assert calendar.get_param("method") == "REQUEST"
    assert "METHOD:REQUEST" in calendar.get_content()
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_content_disposition() == "attachment"
    attached = Calendar.from_ical(attachment.get_content())
    inline = Calendar.from_ical(calendar.get_content())
    assert str(vevent(attached)["UID"]) == str(vevent(inline)["UID"]) == meeting_uid(meeting())
    assert str(attached["METHOD"]) == "REQUEST"


def test_subject() -> None:
    assert meeting_subject(meeting()) == (
        "Invitation: Remedial action meeting: falls on elderly care wards - Mon 23 Nov 2026 09:00")
    # The subject shows London time, in summer too.
    summer = meeting(starts_at=datetime(2026, 6, 1, 8, 0, tzinfo=UTC),
                     ends_at=datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    assert meeting_subject(summer).endswith("Mon 01 Jun 2026 09:00")


@pytest.mark.parametrize("title", ["Falls review\r\nBcc: evil@x", "Falls review\nBcc: evil@x",
                                   "Falls review\rBcc: evil@x"])
def test_title_cannot_inject_headers(title: str) -> None:
    msg = sent(meeting(title=title))
    assert msg["Bcc"] is None
    subject = msg["Subject"]
    assert "\r" not in subject and "\n" not in subject
    assert subject.startswith("Invitation: Falls review Bcc: evil@x - ")
    raw_headers = meeting_invitation_email(
        meeting(title=title), sender="carewatch@icb.example", recipient="q@provider.example",
        message_id=MESSAGE_ID).as_bytes().split(b"\n\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc:") for line in raw_headers.splitlines())


def test_agenda_is_escaped_in_html_and_literal_in_plain_text() -> None:
    m = meeting(agenda=["<script>alert(1)</script>", "Fish & chips"],
                remedial_actions=['<img src=x onerror="alert(2)">'])
    msg = sent(m)
    html = part(msg, "text/html").get_content()
    plain = part(msg, "text/plain").get_content()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Fish &amp; chips" in html
    assert "- <script>alert(1)</script>" in plain
    assert "- Fish & chips" in plain
    assert '- <img src=x onerror="alert(2)">' in plain


def test_breach_note_only_when_the_deadline_was_missed() -> None:
    assert "no slot was free" not in part(sent(meeting()), "text/plain").get_content()
    plain = part(sent(meeting(breach=True)), "text/plain").get_content()
    assert "no slot was free within the policy window" in plain
    assert "Tuesday 24 November 2026, 17:00" in plain
