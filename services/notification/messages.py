"""What a notification says, built from templates (pure). User text is escaped in HTML.

Every event has a ``Summary`` (title, severity, provider, text, facts, items): the alert and
group e-mails and the webhook posts are all rendered from summaries. Meetings get their own
e-mail with an RFC 5545 invitation (REQUEST, or CANCEL on cancellation).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notification.invitations import build_invitation
from shared.events import (
    EVENT_TYPES,
    ActionDueSoon,
    ActionOverdue,
    ConcernEscalated,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    ConcernUpdatedV1,
    Event,
    Evidence,
    FeedbackRejected,
    MeetingCancelled,
    MeetingRescheduled,
    MeetingScheduled,
    MeetingSlotProposed,
    ReportPublished,
    VisitScheduled,
)

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
LONDON = ZoneInfo("Europe/London")
# NHS identity colours by severity, for webhook cards and the HTML e-mails.
COLOURS = {"serious": "#d5281b", "high": "#ed8b00", "moderate": "#ffb81c", "low": "#005eb8",
           "resolved": "#007f3b", None: "#425563"}


def one_line(text: str) -> str:
    """Header injection: no line breaks in a subject, whatever the user text contains."""
    return " ".join(text.split())


def _local(value: Any, fmt: str = "%a %d %b %Y %H:%M") -> str:
    return value.astimezone(LONDON).strftime(fmt)


# -- summaries ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """One event, as people read it."""

    title: str
    text: str
    severity: str | None = None
    provider: str | None = None
    status: Literal["firing", "resolved", "info"] = "info"
    facts: tuple[tuple[str, str], ...] = ()
    items: tuple[str, ...] = field(default_factory=tuple)

    @property
    def colour(self) -> str:
        return COLOURS["resolved"] if self.status == "resolved" else COLOURS.get(
            self.severity, COLOURS[None])


def parse_event(event_type: str, payload: dict[str, Any]) -> Event:
    return EVENT_TYPES[event_type].model_validate(payload)


# How many of a concern's evidence items a notification lists (the latest) by default
# (Settings.evidence_listed), before "and K more (total T)".
EVIDENCE_LISTED = 10


def evidence_items(evidence: list[Evidence], total: int, listed: int = EVIDENCE_LISTED,
                   ) -> tuple[str, ...]:
    """The latest ``listed`` items of ``evidence`` (oldest of them first), and "and K more
    (total T)" when the concern holds more than are shown."""
    shown = evidence[-listed:] if listed > 0 else []
    items = [f"{e.kind} of {e.occurred_on}" + (f': "{e.matched}"' if e.matched else "")
             for e in shown]
    if total > len(shown):
        items.append(f"and {total - len(shown)} more (total {total})")
    return tuple(items)


def summarise(event: Event, listed: int = EVIDENCE_LISTED) -> Summary:
    """The summary of any event notification routes (a concern lists its latest ``listed``
    items of evidence)."""
    provider = getattr(event, "provider", None)
    who = f"{provider.name} ({provider.ods_code})" if provider is not None else None
    if isinstance(event, ConcernResolved):
        return Summary(
            title=f"Resolved: {event.severity} concern at {who}: {event.theme}",
            text=event.resolution, severity=event.severity, provider=who, status="resolved",
            facts=(("Rule", event.rule), ("Theme", event.theme),
                   ("Resolved", _local(event.resolved_at))))
    if isinstance(event, ConcernRaised):
        updated = isinstance(event, ConcernUpdated)
        # An update (v2) carries only its new evidence, with the concern's total.
        total = event.evidence_count if isinstance(event, ConcernUpdated) else len(event.evidence)
        facts = [("Rule", event.rule), ("Theme", event.theme),
                 ("Severity", str(event.severity)), ("Raised", _local(event.raised_at)),
                 ("Evidence", str(total))]
        if isinstance(event, ConcernUpdated) and not isinstance(event, ConcernUpdatedV1):
            facts.append(("New evidence", str(len(event.evidence))))
            facts.append(("Previous severity", str(event.previous_severity)))
        facts += [(str(k), str(v)) for k, v in event.figures.items()
                  if isinstance(v, str | int | float)]
        return Summary(
            title=f"{'Updated' if updated else 'New'} {event.severity} concern at {who}:"
                  f" {event.theme}",
            text=event.reason, severity=event.severity, provider=who, status="firing",
            facts=tuple(facts), items=evidence_items(event.evidence, total, listed))
    if isinstance(event, MeetingScheduled):
        verb = ("Cancelled" if isinstance(event, MeetingCancelled)
                else "Moved" if isinstance(event, MeetingRescheduled) else "Booked")
        text = (event.reason if isinstance(event, MeetingCancelled)
                else event.change if isinstance(event, MeetingRescheduled)
                else f"Remedial action meeting with {who}.")
        return Summary(
            title=f"{verb}: {event.title} - {_local(event.starts_at)}", text=text,
            severity=event.severity, provider=who,
            facts=(("When", f"{_local(event.starts_at)} to {_local(event.ends_at, '%H:%M')}"),
                   ("Where", event.location),
                   *((("Join", event.url),) if event.url else ()),
                   *((("Breach", event.breach_reason),) if event.breach_reason else ())),
            items=tuple(event.agenda))
    if isinstance(event, MeetingSlotProposed):
        return Summary(
            title=f"Declined: {event.title} - {_local(event.starts_at)}",
            text=(f"{event.declined_by.name} ({event.declined_by.role}) declined. Proposed"
                  f" instead: {_local(event.proposed_starts_at)}; reschedule with"
                  f" `carewatch meetings reschedule {event.meeting_id} --to"
                  f" {event.proposed_starts_at.astimezone(LONDON).strftime('%Y-%m-%dT%H:%M')}"
                  " --reason ...`."),
            severity="high", provider=who, status="firing",
            facts=(("Booked", _local(event.starts_at)),
                   ("Proposed", f"{_local(event.proposed_starts_at)} to"
                                f" {_local(event.proposed_ends_at, '%H:%M')}"),
                   ("Why", event.reason)))
    if isinstance(event, ActionDueSoon | ActionOverdue):
        action = event.action
        late = isinstance(event, ActionOverdue)
        when = (f"overdue by {event.days_overdue} days" if isinstance(event, ActionOverdue)
                else f"due in {event.days_left} days")
        return Summary(
            title=f"Remedial action {when} at {who}", text=action.description,
            severity="high" if late else "moderate", provider=who, status="firing",
            facts=(("Owner", action.owner), ("Due", action.due_on.isoformat()),
                   ("Status", action.status)))
    if isinstance(event, ConcernEscalated):
        level = event.level.replace("_", " ")
        return Summary(
            title=f"Escalated to {level}: {who}", text=event.reason, severity="serious",
            provider=who, status="firing",
            facts=(("Level", level),),
            items=tuple(f"{_local(step.at, '%d %b %Y')}: {step.level.replace('_', ' ')}"
                        f" - {step.reason}" for step in event.history))
    if isinstance(event, VisitScheduled):
        kind = event.visit_kind.replace("_", " ")
        return Summary(title=f"{kind.capitalize()} due by {event.due_on:%d %b %Y}: {who}",
                       text=event.reason, provider=who,
                       facts=(("Visit", kind), ("Due by", event.due_on.isoformat())))
    if isinstance(event, ReportPublished):
        return Summary(title=f"{event.title} (version {event.version})", text=event.summary,
                       provider=who,
                       facts=(("Report", event.kind.replace("_", " ")), ("Period", event.period),
                              ("Version", str(event.version)),
                              ("Generated", _local(event.generated_at))),
                       items=tuple(f"attached: {a.filename}" for a in event.attachments))
    if isinstance(event, FeedbackRejected):
        return Summary(title=f"Submission rejected from {event.feed_user or 'unknown feed'}"
                             f" for {event.ods_code or 'unknown provider'}",
                       text=f"{len(event.reasons)} problem(s) in submission"
                            f" {event.submission_id}.",
                       items=tuple(f"{r.loc or '(message)'}: {r.msg}" for r in event.reasons))
    return Summary(title=event.event_type, text=str(event.subject() or ""), provider=who)


# -- subjects -------------------------------------------------------------------------------
def meeting_subject(meeting: MeetingScheduled) -> str:
    starts = meeting.starts_at.astimezone(ZoneInfo(meeting.timezone))
    prefix = ("Cancelled" if isinstance(meeting, MeetingCancelled)
              else "Updated invitation" if isinstance(meeting, MeetingRescheduled)
              else "Invitation")
    return f"{prefix}: {one_line(meeting.title)} - {starts:%a %d %b %Y %H:%M}"


def event_subject(event: Event) -> str:
    if isinstance(event, MeetingScheduled):
        return meeting_subject(event)
    return one_line(summarise(event).title)


def group_subject(labels: dict[str, str], alerts: list[dict[str, Any]], digest: bool) -> str:
    """E.g. ``[carewatch] 20 concerns at Whittington Health (RKE): 20 new``."""
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a["change"]] = counts.get(a["change"], 0) + 1
    changes = ", ".join(f"{n} {c}" for c, n in counts.items() if c != "open")
    firing = sum(1 for a in alerts if a["status"] == "firing")
    where = (f" at {labels['provider_name']} ({labels['provider']})"
             if labels.get("provider_name") else
             f" at {labels['provider']}" if labels.get("provider") else "")
    what = "Daily digest: " if digest else ""
    count = f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''}"
    return one_line(f"[carewatch] {what}{count}{where}"
                    f" ({firing} open{', ' + changes if changes else ''})")


# -- e-mails --------------------------------------------------------------------------------
def _when(meeting: MeetingScheduled) -> dict[str, str]:
    tz = ZoneInfo(meeting.timezone)
    fmt = "%A %d %B %Y, %H:%M"
    return {"starts": meeting.starts_at.astimezone(tz).strftime(fmt),
            "ends": meeting.ends_at.astimezone(tz).strftime("%H:%M"),
            "deadline": meeting.deadline.astimezone(tz).strftime(fmt)}


def _envelope(subject: str, sender: str, recipient: str, message_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = one_line(subject)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Message-ID"] = message_id
    msg["Date"] = formatdate(usegmt=True)
    return msg


def meeting_invitation_email(meeting: MeetingScheduled, *, sender: str, recipient: str,
                             message_id: str) -> EmailMessage:
    """The invitation e-mail: plain text, HTML, and the RFC 5545 invitation both inline (for
    calendar clients) and as ``invite.ics``: METHOD:REQUEST for a new or moved meeting (the
    same UID, a higher SEQUENCE), METHOD:CANCEL for a cancelled one."""
    method: Literal["REQUEST", "CANCEL"] = (
        "CANCEL" if isinstance(meeting, MeetingCancelled) else "REQUEST")
    notice = (f"This meeting is cancelled: {meeting.reason}"
              if isinstance(meeting, MeetingCancelled) else
              f"This meeting has changed: {meeting.change}"
              if isinstance(meeting, MeetingRescheduled) else None)
    context = {"meeting": meeting, "notice": notice, **_when(meeting)}
    msg = _envelope(meeting_subject(meeting), sender, recipient, message_id)
    msg.set_content(_templates.get_template("meeting_scheduled.txt.j2").render(context))
    msg.add_alternative(_templates.get_template("meeting_scheduled.html.j2").render(context),
                        subtype="html")
    ics = build_invitation(meeting, method)
    msg.add_alternative(ics.decode(), subtype="calendar", params={"method": method})
    msg.add_attachment(ics, maintype="application", subtype="ics",
                       filename="cancel.ics" if method == "CANCEL" else "invite.ics")
    return msg


def alert_email(summary: Summary, *, subject: str, sender: str, recipient: str,
                message_id: str) -> EmailMessage:
    """One event told at once: plain text and HTML."""
    context = {"s": summary, "colour": summary.colour}
    msg = _envelope(subject, sender, recipient, message_id)
    msg.set_content(_templates.get_template("alert.txt.j2").render(context))
    msg.add_alternative(_templates.get_template("alert.html.j2").render(context),
                        subtype="html")
    return msg


def report_email(report: ReportPublished, *, subject: str, sender: str, recipient: str,
                 message_id: str) -> EmailMessage:
    """A new version of a report: a short note, with the report's files attached."""
    msg = alert_email(summarise(report), subject=subject, sender=sender, recipient=recipient,
                      message_id=message_id)
    for a in report.attachments:
        maintype, _, subtype = a.media_type.partition(";")[0].partition("/")
        msg.add_attachment(base64.b64decode(a.content_base64), maintype=maintype,
                           subtype=subtype, filename=a.filename)
    return msg


def group_email(payload: dict[str, Any], *, subject: str, sender: str, recipient: str,
                message_id: str, listed: int = EVIDENCE_LISTED) -> EmailMessage:
    """A group's (or a digest's) notification: every alert with what changed."""
    entries = [(a["change"], summarise(parse_event(a["event_type"], a["payload"]), listed))
               for a in payload["alerts"]]
    context = {"entries": entries, "labels": payload["labels"], "reason": payload["reason"],
               "digest": payload.get("digest", False)}
    msg = _envelope(subject, sender, recipient, message_id)
    msg.set_content(_templates.get_template("group.txt.j2").render(context))
    msg.add_alternative(_templates.get_template("group.html.j2").render(context),
                        subtype="html")
    return msg


def notification_email(*, kind: str, event_type: str, payload: dict[str, Any], subject: str,
                       sender: str, recipient: str, message_id: str,
                       listed: int = EVIDENCE_LISTED) -> EmailMessage:
    """The e-mail for a recorded notification of any kind (a concern lists its latest
    ``listed`` items of evidence)."""
    if kind in ("group", "digest"):
        return group_email(payload, subject=subject, sender=sender, recipient=recipient,
                           message_id=message_id, listed=listed)
    event = parse_event(event_type, payload)
    if isinstance(event, MeetingScheduled):
        return meeting_invitation_email(event, sender=sender, recipient=recipient,
                                        message_id=message_id)
    if isinstance(event, ReportPublished):
        return report_email(event, subject=subject, sender=sender, recipient=recipient,
                            message_id=message_id)
    return alert_email(summarise(event, listed), subject=subject, sender=sender,
                       recipient=recipient, message_id=message_id)


# -- webhooks -------------------------------------------------------------------------------
def _summaries(kind: str, event_type: str, payload: dict[str, Any],
               listed: int = EVIDENCE_LISTED) -> list[tuple[str | None, Summary]]:
    if kind in ("group", "digest"):
        return [(a["change"], summarise(parse_event(a["event_type"], a["payload"]), listed))
                for a in payload["alerts"]]
    return [(None, summarise(parse_event(event_type, payload), listed))]


def _shown(text: str) -> str:
    """Text a Slack or Teams client shows (and interprets), with ``&``, ``<`` and ``>``
    escaped as entities, which both show as the characters: Slack reads ``<...>`` as its
    control sequences (``<!channel>`` notifies everyone, ``<url|label>`` is a link under any
    label) and Teams renders HTML in connector cards, so user text must not reach them raw."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_body(*, kind: str, event_type: str, payload: dict[str, Any], subject: str,
                 notification_id: str, route: str | None,
                 style: Literal["slack", "teams"] = "slack",
                 listed: int = EVIDENCE_LISTED) -> dict[str, Any]:
    """The JSON a team's webhook receives: ``text`` (what every Slack/Teams client shows)
    plus Slack ``attachments`` or a Teams ``MessageCard`` section per alert, and a
    ``carewatch`` section for machines (ids, kind, event type, the data). What people are
    shown is escaped (``_shown``); the machine section is the data as it is."""
    summaries = _summaries(kind, event_type, payload, listed)
    machine = {"notification_id": notification_id, "kind": kind, "event_type": event_type,
               "route": route, "payload": payload}
    subject = _shown(subject)
    if style == "teams":
        return {
            "@type": "MessageCard", "@context": "https://schema.org/extensions",
            "summary": subject, "themeColor": summaries[0][1].colour.lstrip("#"),
            "title": subject, "text": subject,
            "sections": [{
                "activityTitle": _shown(f"{change}: {s.title}" if change else s.title),
                "text": _shown(s.text),
                "facts": [{"name": _shown(k), "value": _shown(v)} for k, v in s.facts],
            } for change, s in summaries],
            "carewatch": machine,
        }
    return {
        "text": subject,
        "attachments": [{
            "fallback": _shown(s.title), "color": s.colour,
            "title": _shown(f"{change}: {s.title}" if change else s.title),
            "text": _shown("\n".join([s.text, *(f"- {i}" for i in s.items)])),
            "fields": [{"title": _shown(k), "value": _shown(v), "short": len(v) < 40}
                       for k, v in s.facts],
            "footer": "carewatch",
        } for change, s in summaries],
        "carewatch": machine,
    }
