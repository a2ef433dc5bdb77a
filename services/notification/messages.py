"""E-mail messages built from templates (pure). User text is escaped in the HTML part."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notification.invitations import build_invitation
from shared.events import MeetingScheduled

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def _when(meeting: MeetingScheduled) -> dict[str, str]:
    tz = ZoneInfo(meeting.timezone)
    fmt = "%A %d %B %Y, %H:%M"
    return {"starts": meeting.starts_at.astimezone(tz).strftime(fmt),
            "ends": meeting.ends_at.astimezone(tz).strftime("%H:%M"),
            "deadline": meeting.deadline.astimezone(tz).strftime(fmt)}


def meeting_subject(meeting: MeetingScheduled) -> str:
    starts = meeting.starts_at.astimezone(ZoneInfo(meeting.timezone))
    # Header injection: no line breaks in a subject, whatever the titles contain.
    title = " ".join(meeting.title.split())
    return f"Invitation: {title} - {starts:%a %d %b %Y %H:%M}"


def meeting_invitation_email(meeting: MeetingScheduled, *, sender: str, recipient: str,
                             message_id: str) -> EmailMessage:
    """The invitation e-mail: plain text, HTML, and the RFC 5545 invitation (METHOD:REQUEST)
    both inline (for calendar clients) and as ``invite.ics``."""
    context = {"meeting": meeting, **_when(meeting)}
    msg = EmailMessage()
    msg["Subject"] = meeting_subject(meeting)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Message-ID"] = message_id
    msg["Date"] = formatdate(usegmt=True)
    msg.set_content(_templates.get_template("meeting_scheduled.txt.j2").render(context))
    msg.add_alternative(_templates.get_template("meeting_scheduled.html.j2").render(context),
                        subtype="html")
    ics = build_invitation(meeting, "REQUEST")
    msg.add_alternative(ics.decode(), subtype="calendar", params={"method": "REQUEST"})
    msg.add_attachment(ics, maintype="application", subtype="ics", filename="invite.ics")
    return msg
