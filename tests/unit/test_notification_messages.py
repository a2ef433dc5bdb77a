"""What notifications say (messages.py), how channels render them (channels.py), and
silences (silences.py). Everything is parsed back as the receiving side would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from icalendar import Calendar

from services.notification.channels import EmailChannel, Outgoing, WebhookChannel, sign, verify
from services.notification.messages import event_subject, group_subject, summarise
from services.notification.routing import WebhookTarget
from services.notification.silences import Silence, muting, validate_matchers
from shared.events import (
    Attendee,
    ConcernRaised,
    ConcernResolved,
    ConcernUpdated,
    Evidence,
    MeetingCancelled,
    MeetingRescheduled,
    MeetingScheduled,
    ProviderRef,
    Severity,
)
from shared.settings import Settings

PROVIDER = ProviderRef(ods_code="RX1", name="Example <Trust> & Partners", provider_type="acute",
                       quality_contact_email="q@provider.example")
START = datetime(2026, 11, 24, 9, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def concern(severity: str = "low", reason: str = "3 alerts <b>in</b> 30 days",
            concern_id: uuid.UUID | None = None) -> ConcernRaised:
    return ConcernRaised(
        concern_id=concern_id or uuid.uuid4(), fingerprint="fp", provider=PROVIDER,
        rule="cluster", theme="Discharge", severity=Severity(severity), reason=reason,
        evidence=[Evidence(feedback_id=uuid.uuid4(), kind="gp_alert",
                           occurred_on=START.date(), matched="<script>x</script>")],
        raised_at=NOW)


def meeting_fields(**extra: Any) -> dict[str, Any]:
    return dict(
        meeting_id=uuid.UUID("00000000-0000-4000-8000-00000000000a"), concern_id=uuid.uuid4(),
        provider=PROVIDER, title="Remedial action meeting", starts_at=START,
        ends_at=START + timedelta(hours=1), timezone="Europe/London", location="Teams",
        deadline=START, breach=False, severity=Severity.SERIOUS, agenda=["Falls"],
        remedial_actions=["Audit"],
        organizer=Attendee(role="organizer", name="ICB", email="team@icb.example"),
        attendees=[Attendee(role="provider", name="P", email="q@provider.example")], **extra)


def outgoing(event: Any = None, *, kind: str = "event", payload: dict[str, Any] | None = None,
             recipient: str = "someone@icb.example", event_type: str | None = None) -> Outgoing:
    return Outgoing(notification_id=uuid.UUID("00000000-0000-4000-8000-0000000000ff"),
                    kind=kind, event_type=event_type or event.event_type, route="r",
                    recipient=recipient,
                    subject=event_subject(event) if event is not None else "subject",
                    payload=payload if payload is not None else event.model_dump(mode="json"),
                    message_id="<00000000-0000-4000-8000-0000000000ff@carewatch>")


def wire(msg: EmailMessage) -> EmailMessage:
    return message_from_bytes(msg.as_bytes(), policy=policy.default)  # type: ignore[return-value]


def part(msg: EmailMessage, content_type: str) -> Any:
    [found] = [p for p in msg.walk() if p.get_content_type() == content_type]
    return found


EMAIL = EmailChannel(Settings(mail_from="carewatch@icb.example"))


# -- meetings: request, update, cancel -----------------------------------------------------------
def test_reschedule_is_a_request_with_the_same_uid_and_a_higher_sequence() -> None:
    first = wire(EMAIL.render(outgoing(MeetingScheduled(**meeting_fields()))))
    moved = MeetingRescheduled(**meeting_fields(sequence=1), previous_starts_at=START,
                               change="moved to the afternoon")
    second = wire(EMAIL.render(outgoing(moved)))
    a = Calendar.from_ical(part(first, "text/calendar").get_content())
    b = Calendar.from_ical(part(second, "text/calendar").get_content())
    assert str(a["METHOD"]) == str(b["METHOD"]) == "REQUEST"
    [ea], [eb] = a.walk("VEVENT"), b.walk("VEVENT")
    assert str(ea["UID"]) == str(eb["UID"])
    assert eb.decoded("SEQUENCE") == ea.decoded("SEQUENCE") + 1
    assert second["Subject"].startswith("Updated invitation: Remedial action meeting")
    assert "This meeting has changed: moved to the afternoon" in part(
        second, "text/plain").get_content()


def test_cancellation_is_method_cancel() -> None:
    cancelled = MeetingCancelled(**meeting_fields(sequence=2), reason="concern resolved")
    msg = wire(EMAIL.render(outgoing(cancelled)))
    calendar = part(msg, "text/calendar")
    assert calendar.get_param("method") == "CANCEL"
    cal = Calendar.from_ical(calendar.get_content())
    assert str(cal["METHOD"]) == "CANCEL"
    [event] = cal.walk("VEVENT")
    assert str(event["STATUS"]) == "CANCELLED"
    assert event.decoded("SEQUENCE") == 2
    assert msg["Subject"].startswith("Cancelled: Remedial action meeting")
    assert msg["Message-ID"] == "<00000000-0000-4000-8000-0000000000ff@carewatch>"


# -- alerts and groups ---------------------------------------------------------------------------
def test_alert_email_escapes_user_text_in_html_and_keeps_it_in_plain_text() -> None:
    msg = wire(EMAIL.render(outgoing(concern("serious"))))
    html = part(msg, "text/html").get_content()
    plain = part(msg, "text/plain").get_content()
    assert "<b>in</b>" not in html and "<script>" not in html
    assert "3 alerts &lt;b&gt;in&lt;/b&gt; 30 days" in html
    assert "Example &lt;Trust&gt; &amp; Partners" in html
    assert "3 alerts <b>in</b> 30 days" in plain
    assert msg["Subject"] == "New serious concern at Example <Trust> & Partners (RX1): Discharge"


def test_subject_cannot_carry_header_injection() -> None:
    c = concern().model_copy(update={"theme": "Falls\r\nBcc: evil@example"})
    msg = wire(EMAIL.render(outgoing(c)))
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"] and "Falls Bcc: evil@example" in msg["Subject"]


def group_payload(n: int = 3) -> dict[str, Any]:
    alerts = [{"key": f"concern:{i}", "status": "firing", "change": "new",
               "event_type": "concern.raised.v1",
               "payload": concern(reason=f"reason {i} <i>x</i>").model_dump(mode="json")}
              for i in range(n)]
    alerts.append({"key": "concern:r", "status": "resolved", "change": "resolved",
                   "event_type": "concern.resolved.v1",
                   "payload": ConcernResolved(
                       concern_id=uuid.uuid4(), fingerprint="fp", provider=PROVIDER,
                       rule="cluster", theme="Falls", severity=Severity.LOW,
                       resolution="back to common cause", resolved_at=NOW
                   ).model_dump(mode="json")})
    return {"route": "low", "labels": {"provider": "RX1", "provider_name": PROVIDER.name},
            "reason": "changes", "digest": False, "alerts": alerts}


def test_group_email_lists_every_alert_with_its_change() -> None:
    payload = group_payload()
    subject = group_subject(payload["labels"], payload["alerts"], False)
    assert subject == ("[carewatch] 4 alerts at Example <Trust> & Partners (RX1)"
                       " (3 open, 3 new, 1 resolved)")
    msg = wire(EMAIL.render(outgoing(kind="group", payload=payload, event_type="mixed")))
    plain = part(msg, "text/plain").get_content()
    for i in range(3):
        assert f"reason {i} <i>x</i>" in plain
    assert plain.count("[NEW]") == 3 and plain.count("[RESOLVED]") == 1
    assert "back to common cause" in plain
    html = part(msg, "text/html").get_content()
    assert "<i>x</i>" not in html and "reason 0 &lt;i&gt;x&lt;/i&gt;" in html


# -- webhooks ------------------------------------------------------------------------------------
HOOKS = {"team": WebhookTarget(url="http://127.0.0.1:9/hook", secret="s3cret"),
         "teams": WebhookTarget(url="http://127.0.0.1:9/hook", secret="k", format="teams")}


def test_webhook_post_is_slack_shaped_and_signed_over_timestamp_and_body() -> None:
    channel = WebhookChannel(HOOKS, clock=lambda: 1_800_000_000.0)
    url, body, headers = channel.render(outgoing(concern("serious"), recipient="team"))
    assert url == "http://127.0.0.1:9/hook"
    doc = json.loads(body)
    assert doc["text"].startswith("New serious concern at Example")
    [attachment] = doc["attachments"]
    assert attachment["color"] == "#d5281b"
    assert {"title": "Rule", "value": "cluster", "short": True} in attachment["fields"]
    assert doc["carewatch"]["event_type"] == "concern.raised.v1"
    assert headers["X-Carewatch-Timestamp"] == "1800000000"
    assert headers["X-Carewatch-Delivery"] == "00000000-0000-4000-8000-0000000000ff"
    signature = headers["X-Carewatch-Signature"]
    assert signature == sign("s3cret", "1800000000", body)
    assert verify("s3cret", "1800000000", body, signature, now=1_800_000_100)
    assert not verify("wrong", "1800000000", body, signature, now=1_800_000_100)
    assert not verify("s3cret", "1800000000", body + b" ", signature, now=1_800_000_100)
    assert not verify("s3cret", "1800000001", body, signature, now=1_800_000_100)
    # An old post replayed later fails the freshness check.
    assert not verify("s3cret", "1800000000", body, signature, now=1_800_000_000 + 3600)


def test_teams_webhook_gets_a_message_card_per_alert() -> None:
    channel = WebhookChannel(HOOKS)
    _, body, _ = channel.render(outgoing(kind="group", payload=group_payload(2),
                                         event_type="mixed", recipient="teams"))
    doc = json.loads(body)
    assert doc["@type"] == "MessageCard" and doc["text"] == "subject"
    assert len(doc["sections"]) == 3
    assert doc["sections"][0]["activityTitle"].startswith("new: New low concern")


@pytest.mark.parametrize("recipient", ["team", "teams"])
def test_webhook_text_people_see_is_escaped_and_the_data_is_kept_as_it_is(recipient: str) -> None:
    # Slack reads <...> as control sequences (<!channel> pings everyone, <url|label> hides a
    # link) and Teams renders HTML: user text reaches either only escaped.
    reason = "Ward 7 <!channel> <https://evil.example|log in> <img src=x onerror=alert(1)> & co"
    _, body, _ = WebhookChannel(HOOKS).render(outgoing(concern("serious", reason=reason),
                                                       recipient=recipient))
    doc = json.loads(body)
    shown = json.dumps({k: v for k, v in doc.items() if k != "carewatch"})
    assert "<" not in shown and ">" not in shown
    assert "&lt;!channel&gt; &lt;https://evil.example|log in&gt;" in shown
    assert "&lt;script&gt;x&lt;/script&gt;" in shown or recipient == "teams"  # the evidence
    assert "&amp; co" in shown
    assert doc["carewatch"]["payload"]["reason"] == reason


def test_unknown_webhook_is_a_permanent_failure() -> None:
    from services.notification.channels import DeliveryError

    with pytest.raises(DeliveryError) as exc:
        WebhookChannel(HOOKS).render(outgoing(concern(), recipient="gone"))
    assert exc.value.permanent


def test_every_routed_event_has_a_readable_summary() -> None:
    summary = summarise(concern("moderate"))
    assert summary.status == "firing" and summary.severity == "moderate"
    assert summary.items == ('gp_alert of 2026-11-24: "<script>x</script>"',)


# -- silences ------------------------------------------------------------------------------------
def silence(**matchers: str) -> Silence:
    return Silence(silence_id=uuid.uuid4(), matchers=matchers, starts_at=NOW,
                   ends_at=NOW + timedelta(hours=2), created_by="op", reason="maintenance")


def test_silence_mutes_only_what_all_its_matchers_fit_while_active() -> None:
    s = silence(provider="RX*", rule="cluster")
    labels = {"provider": "RX1", "rule": "cluster", "route": "low"}
    assert muting([s], labels, NOW) is s
    assert muting([s], {**labels, "rule": "spc"}, NOW) is None
    assert muting([s], {"provider": "RX1"}, NOW) is None  # no rule label: not muted
    assert muting([s], labels, NOW - timedelta(seconds=1)) is None
    assert muting([s], labels, NOW + timedelta(hours=2)) is None
    expired = Silence(**{**s.__dict__, "expired_at": NOW})
    assert muting([expired], labels, NOW + timedelta(minutes=1)) is None


def test_a_silence_needs_a_known_matcher() -> None:
    assert validate_matchers({"provider": "RX1", "rule": None}) == {"provider": "RX1"}
    with pytest.raises(ValueError, match="at least one"):
        validate_matchers({"provider": None})
    with pytest.raises(ValueError, match="unknown"):
        validate_matchers({"postcode": "N1"})


# -- a concern with much evidence lists the latest few -------------------------------------------

def _many(n: int) -> list[Evidence]:
    return [Evidence(feedback_id=uuid.UUID(int=i + 1), kind="complaint",
                     occurred_on=(START - timedelta(days=n - i)).date()) for i in range(n)]


def test_a_concern_with_500_items_lists_the_latest_ten_and_the_rest_as_a_count() -> None:
    raised = concern().model_copy(update={"evidence": _many(500)})
    items = summarise(raised).items
    assert len(items) == 11
    latest = (START - timedelta(days=1)).date()
    assert items[-2] == f"complaint of {latest}"
    assert items[-1] == "and 490 more (total 500)"
    assert len(summarise(raised, listed=3).items) == 4


def test_an_update_lists_its_new_items_and_counts_the_concern_s_total() -> None:
    update = ConcernUpdated(**concern().model_dump(), evidence_count=500,
                            previous_severity=Severity.LOW)
    items = summarise(update).items
    assert len(items) == 2 and items[-1] == "and 499 more (total 500)"


def test_the_e_mail_and_the_webhook_of_a_big_concern_stay_short() -> None:
    raised = concern().model_copy(update={"evidence": _many(2000)})
    settings = Settings(evidence_listed=5)
    body = part(wire(EmailChannel(settings).render(outgoing(raised))),
                "text/plain").get_content()
    assert "and 1995 more (total 2000)" in body
    assert body.count("- complaint of") == 5
    hook = WebhookChannel({"team": WebhookTarget(url="https://hooks.example/t", secret="s")},
                          evidence_listed=5)
    _, raw, _ = hook.render(outgoing(raised, recipient="team"))
    doc = json.loads(raw)
    assert doc["attachments"][0]["text"].count("- complaint of") == 5
