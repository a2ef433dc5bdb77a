"""The workspace's pure parts: evidence checks, redirects after sign-in, ID token checks,
charts, action forms and timeline lines."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from services.workspace import auth, charts, store, uploads
from services.workspace.http import action_fields
from shared.events import ConcernUpdated, ProviderRef, Severity

NOW = datetime(2027, 1, 11, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("name", "data", "ok", "ctype", "filename"), [
    ("audit.pdf", b"%PDF-1.7 ...", True, "application/pdf", "audit.pdf"),
    ("photo.JPG", b"\xff\xd8\xff\xe0 jpeg", True, "image/jpeg", "photo.jpg"),
    ("../../etc/passwd.png", b"\x89PNG\r\n\x1a\n...", True, "image/png", "passwd.png"),
    ('x"; filename="evil.html', b"%PDF-", True, "application/pdf", "x_ filename_evil.pdf"),
    ("report.pdf", b"<html><script>alert(1)</script>", False, None, ""),
    ("empty.pdf", b"", False, None, ""),
    ("big.pdf", b"%PDF-" + b"0" * 2000, False, None, ""),
])
def test_evidence_is_checked_by_content_and_size(name: str, data: bytes, ok: bool,
                                                 ctype: str | None, filename: str) -> None:
    checked = uploads.check(name, data, limit=1024)
    assert (not checked.problems) is ok, checked.problems
    assert checked.content_type == ctype
    assert checked.filename == filename


@pytest.mark.parametrize(("asked", "goes"), [
    ("/concerns/1", "/concerns/1"), ("//evil.example/x", "/"), ("https://evil.example", "/"),
    ("/\\evil.example", "/"), ("", "/"), (None, "/"), ("concerns", "/"),
])
def test_after_sign_in_only_this_site(asked: str | None, goes: str) -> None:
    assert auth.safe_next(asked) == goes


def id_token(key: RSAKey, **claims: object) -> str:
    base = {"iss": "https://login.example/tenant/v2.0", "aud": "client-1", "sub": "abc",
            "exp": int(NOW.timestamp()) + 300, "iat": int(NOW.timestamp()), "nonce": "n-1",
            "email": "lead@icb.nhs.uk"}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, {**base, **claims}, key)


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "k1"})


def verify(key: RSAKey, token: str) -> dict[str, object]:
    return auth.verify_id_token(token, {"keys": [key.as_dict(private=False)]},
                                issuer="https://login.example/tenant/v2.0", client_id="client-1",
                                nonce="n-1", now=NOW)


def test_an_id_token_from_the_issuer_for_us_is_accepted(key: RSAKey) -> None:
    assert verify(key, id_token(key))["email"] == "lead@icb.nhs.uk"


@pytest.mark.parametrize("claims", [
    {"aud": "another-client"}, {"iss": "https://evil.example"}, {"nonce": "replayed"},
    {"exp": int(NOW.timestamp()) - 3600}, {"sub": None},
])
def test_an_id_token_not_for_us_is_refused(key: RSAKey, claims: dict[str, object]) -> None:
    token = id_token(key, **{k: v for k, v in claims.items() if v is not None})
    if claims.get("sub", "") is None:
        token = jwt.encode({"alg": "RS256", "kid": key.kid},
                           {"iss": "https://login.example/tenant/v2.0", "aud": "client-1",
                            "exp": int(NOW.timestamp()) + 300, "nonce": "n-1"}, key)
    with pytest.raises(auth.OidcError):
        verify(key, token)


def test_an_id_token_signed_by_another_key_is_refused(key: RSAKey) -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(auth.OidcError):
        verify(key, id_token(other))
    with pytest.raises(auth.OidcError):
        verify(key, "")


def test_the_chart_has_a_bar_per_month_and_says_what_it_shows() -> None:
    chart = charts.monthly_bars([{"month": date(2026, 3, 1), "n": 4},
                                 {"month": date(2026, 12, 1), "n": 2}], date(2026, 2, 1), 12,
                                title="Concerns")
    assert [b.value for b in chart.bars] == [0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]
    assert chart.bars[0].label == "Feb 2026" and chart.bars[-1].label == "Jan 2027"
    assert chart.bars[1].height > chart.bars[10].height > chart.bars[0].height == 0
    assert chart.description == ("6 concern(s) in the 12 months from February 2026; most in"
                                 " March 2026 (4).")


def test_the_chart_ends_with_this_month() -> None:
    assert charts.window_start(date(2034, 3, 6), 12) == date(2033, 4, 1)
    assert charts.window_start(date(2027, 1, 31), 12) == date(2026, 2, 1)
    assert charts.window_start(date(2026, 12, 1), 12) == date(2026, 1, 1)


def test_an_action_needs_what_who_and_when() -> None:
    action, errors = action_fields({"description1": " Audit ", "owner1": "DoN",
                                    "due_on1": "2027-02-28"}, "1")
    assert errors == [] and action == {"description": "Audit", "owner": "DoN",
                                       "due_on": "2027-02-28"}
    _, errors = action_fields({"description": "", "owner": "", "due_on": "31/02/2027"}, "")
    assert [f for f, _ in errors] == ["description", "owner", "due_on"]


def test_timeline_lines() -> None:
    provider = ProviderRef(ods_code="RJ1", name="Trust", provider_type="acute",
                           quality_contact_email="q@t.example")
    updated = ConcernUpdated(concern_id=uuid.uuid4(), fingerprint="f", provider=provider,
                             rule="r", theme="t", severity=Severity.SERIOUS, reason="more harm",
                             evidence=[], evidence_count=3, raised_at=NOW,
                             previous_severity=Severity.HIGH)
    assert store.describe(updated) == store.Entry("Concern updated: serious (was high)",
                                                  "more harm")


SPC_SERIES: list[list[str | float]] = [[month, value] for month, value in [
    *((f"2025-{m:02d}", 8.0) for m in range(11, 13)),
    *((f"2026-{m:02d}", 7.0 + (m % 3)) for m in range(1, 10)), ("2026-10", 19.0)]]
SPC_FIGURES = {
    "metric": "complaints_per_month", "setting": "all", "period": "2026-10", "value": 19.0,
    "mean": 8.0, "lower_limit": 0.0, "upper_limit": 16.0, "series": SPC_SERIES,
    "signals": [{"test": "beyond_limits", "direction": "up", "periods": ["2026-10"]}]}
FUNNEL_FIGURES = {"setting": "inpatient", "period": "2026-10", "proportion": 0.123,
                  "responses": 400, "target": 0.081, "lower_998": 0.05, "upper_998": 0.119,
                  "providers": 40, "band": "above_998", "events": 49}


def measure_concern(spc_value: float) -> dict[str, object]:
    spc = {**SPC_FIGURES, "value": spc_value,
           "series": [*SPC_SERIES[:-1], ["2026-10", spc_value]]}
    return {"figures": {"signals": {
        "spc:complaints_per_month": {"rule": "spc_special_cause", "figures": spc},
        "funnel:fft_negative": {"rule": "peer_outlier", "figures": FUNNEL_FIGURES}}}}


def test_an_spc_signal_is_drawn_as_an_xmr_chart_with_its_special_cause() -> None:
    chart = charts.xmr(SPC_FIGURES, "Complaints")
    assert chart is not None and len(chart.points) == 12
    [special] = [p for p in chart.points if p.special]
    assert special.label == "2026-10" and special.y < chart.upper_y  # above the upper limit
    assert chart.lower_y > chart.mean_y > chart.upper_y  # SVG y grows downwards
    assert "special cause in 2026-10" in chart.description
    assert charts.xmr({**SPC_FIGURES, "series": []}, "none") is None


def test_a_providers_measures_keep_the_newest_chart_and_funnel_position() -> None:
    spc, funnels = charts.measure_signals([measure_concern(19.0), measure_concern(3.0),
                                           {"figures": {}}])
    assert len(spc) == 1 and len(funnels) == 1
    assert spc[0].points[-1].value == 19.0  # the newest concern's (the first)
    assert "Complaints per month" in spc[0].title and funnels[0]["band"] == "above_998"


def test_each_attendee_shows_their_latest_reply_or_none() -> None:
    meeting = {"sequence": 2, "attendees": [
        {"role": "organizer", "name": "ICB", "email": "quality@icb.example"},
        {"role": "provider quality lead", "name": "Lead", "email": "Lead@Trust.example"},
        {"role": "lay member", "name": "Lay", "email": "lay@icb.example"},
        {"role": "healthwatch", "name": "HW", "email": "hw@hw.example"},
        {"role": "commissioner quality lead", "name": "QL", "email": "ql@icb.example"}]}
    replies = {"lead@trust.example": {"partstat": "declined", "sequence": 2, "received_at": NOW},
               "lay@icb.example": {"partstat": "accepted", "sequence": 1, "received_at": NOW},
               "hw@hw.example": {"partstat": "tentative", "sequence": 2, "received_at": NOW}}
    people = store.rsvps(meeting, replies)
    assert [(p["name"], p["reply"], p["earlier"]) for p in people] == [
        ("ICB", None, False), ("Lead", "declined", False), ("Lay", "accepted", True),
        ("HW", "tentative", False), ("QL", "no reply", False)]
    assert store.rsvp_summary(people) == {"accepted": ["Lay"], "declined": ["Lead"],
                                          "tentative": ["HW"], "no reply": ["QL"]}


def test_a_dead_letter_says_why_without_the_input_it_quoted() -> None:
    from shared import dead_letters

    error = ("1 validation error for MeetingReplied\nattendee\n  value is not a valid email"
             " [type=value_error, input_value='Jane Smith, 12 Acacia Road', input_type=str]")
    scrubbed = dead_letters.scrub(error)
    assert "Jane Smith" not in scrubbed and "Acacia" not in scrubbed
    assert "value is not a valid email" in scrubbed and "input_type=str" in scrubbed
    assert len(dead_letters.scrub("x" * 5000)) == 1003
    at = datetime(2027, 1, 11, 9, 30, tzinfo=UTC)
    seen = dead_letters.describe("m-1", "ignored", {"x-death": [{
        "queue": "ns.workspace.meeting.reply.v1", "reason": "rejected", "count": 1, "time": at,
        "routing-keys": ["meeting.reply.v1"]}]})
    assert seen == {"message_id": "m-1", "routing_key": "meeting.reply.v1",
                    "queue": "ns.workspace.meeting.reply.v1", "reason": "rejected",
                    "times": 1, "dead_lettered_at": at.isoformat()}
    assert dead_letters.describe(None, "k", None)["routing_key"] == "k"
