"""What notification makes of the meetings of issue 17 (pure): the joining link in the
invitation and the e-mail, a breach told to the head of quality with its reason, a proposed
slot told to the quality team, and attendees' replies parsed (services/notification/
invitations.py, messages.py, routing.py, inbound.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from icalendar import Calendar, vCalAddress, vText
from icalendar import Event as VEvent

from services.escalation.config import OnlineMeetingsPolicy
from services.notification.config import load_routing
from services.notification.inbound import ReplyRefused, parse_reply
from services.notification.invitations import build_invitation
from services.notification.messages import meeting_invitation_email, summarise
from services.notification.routing import event_labels, route_event
from shared.events import Attendee, MeetingSlotProposed
from shared.settings import Settings
from tests.helpers import body_text
from tests.unit.builders import meeting, provider

SETTINGS = Settings(quality_team_email="team@icb.example")
URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_q%40thread.v2/0"
HEAD = Attendee(role="head of quality", name="Hana Head", email="head@icb.example")


def test_the_joining_link_is_in_location_url_and_the_email() -> None:
    venue = OnlineMeetingsPolicy(rooms={"Quality room": URL}, default_room="Quality room")\
        .venue("team@icb.example")
    assert venue.url == URL and URL in venue.location and "Quality room" in venue.location
    m = meeting(location=venue.location, url=venue.url)
    event = Calendar.from_ical(build_invitation(m)).walk("VEVENT")[0]
    assert str(event["URL"]) == URL and URL in str(event["LOCATION"])
    mail = meeting_invitation_email(m, sender="c@icb.example", recipient="q@provider.example",
                                    message_id="<x@y>")
    assert f"Join:  {URL}" in body_text(mail)
    assert f'href="{URL}"' in body_text(mail, "html")
    # No room configured: the meeting is in person, and no link is promised.
    venue = OnlineMeetingsPolicy(in_person="ICB HQ, room 4").venue("team@icb.example")
    assert (venue.location, venue.url) == ("ICB HQ, room 4", None)
    with pytest.raises(ValueError, match="no URL"):
        OnlineMeetingsPolicy(default_room="Nowhere")


def test_a_breach_goes_to_the_head_of_quality_with_its_reason() -> None:
    routing = load_routing(None, SETTINGS)
    reason = "no slot before the deadline: no lay member free (unavailable 12)"
    breached = meeting(breach=True, breach_reason=reason, head_of_quality=HEAD)
    told = [(d.route.name, d.recipient)
            for d in route_event(routing, breached, event_labels(breached), SETTINGS)]
    assert ("meeting-breaches", "head@icb.example") in told
    assert ("meetings", "team@icb.example") in told
    on_time = meeting()
    assert "head@icb.example" not in {
        d.recipient for d in route_event(routing, on_time, event_labels(on_time), SETTINGS)}
    mail = meeting_invitation_email(breached, sender="c@icb.example",
                                    recipient="head@icb.example", message_id="<x@y>")
    assert f"Why: {reason}" in body_text(mail)


def test_a_proposed_slot_goes_to_the_quality_team() -> None:
    proposal = MeetingSlotProposed(
        meeting_id=uuid.uuid4(), provider=provider(), title="Remedial action meeting",
        starts_at=datetime(2031, 3, 3, 9, tzinfo=UTC),
        proposed_starts_at=datetime(2031, 3, 4, 11, tzinfo=UTC),
        proposed_ends_at=datetime(2031, 3, 4, 12, tzinfo=UTC),
        declined_by=Attendee(role="provider quality lead", name="Pat", email="q@p.example"),
        reason="the provider quality lead declined the invitation (sequence 0)")
    routing = load_routing(None, SETTINGS)
    assert [(d.route.name, d.recipient) for d in route_event(
        routing, proposal, event_labels(proposal), SETTINGS)] == [
        ("meeting-proposals", "team@icb.example")]
    summary = summarise(proposal)
    assert summary.title.startswith("Declined:")
    assert "--to 2031-03-04T11:00" in summary.text


def reply_message(attendee: str, partstat: str, sender: str | None = None,
                  uid: str = "meeting-00000000-0000-4000-8000-000000000001@carewatch"
                  ) -> bytes:
    cal = Calendar()
    cal.add("prodid", "-//client//EN")
    cal.add("version", "2.0")
    cal.add("method", "REPLY")
    event = VEvent()
    event.add("uid", uid)
    event.add("sequence", 2)
    who = vCalAddress(f"mailto:{attendee}")
    who.params["partstat"] = vText(partstat)
    event.add("attendee", who, encode=False)
    cal.add_component(event)
    msg = EmailMessage()
    msg["From"] = sender or attendee
    msg["Message-ID"] = "<r1@client>"
    msg.set_content("Declined")
    msg.add_alternative(cal.to_ical().decode(), subtype="calendar", params={"method": "REPLY"})
    return msg.as_bytes()


def test_replies_are_parsed_and_what_is_not_one_attendees_reply_refused() -> None:
    r = parse_reply(reply_message("q@provider.example", "DECLINED"), "Q@provider.example")
    assert (str(r.meeting_id), r.attendee, r.partstat, r.sequence) == (
        "00000000-0000-4000-8000-000000000001", "q@provider.example", "declined", 2)
    with pytest.raises(ReplyRefused, match="not the sender"):
        parse_reply(reply_message("q@provider.example", "ACCEPTED", sender="x@evil.example"),
                    "x@evil.example")
    with pytest.raises(ReplyRefused, match="not the envelope sender"):
        parse_reply(reply_message("q@provider.example", "ACCEPTED"), "x@evil.example")
    with pytest.raises(ReplyRefused, match="PARTSTAT"):
        parse_reply(reply_message("q@provider.example", "DELEGATED"), "q@provider.example")
    with pytest.raises(ReplyRefused, match="not a carewatch meeting"):
        parse_reply(reply_message("q@provider.example", "ACCEPTED", uid="other@x"),
                    "q@provider.example")
