"""The public's door (issue 19), its pure parts: who may submit the public's kind (intake), the
form's CSRF tokens and acknowledgement references, and the form's answers made into a
``public_feedback`` submission that intake accepts (the workspace)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from services.intake import store
from services.intake.classification import authorise
from services.intake.redaction import code_holds_personal_data
from services.intake.validation import Parsed, parse
from services.workspace.public import (
    SUBJECTS,
    Answers,
    check_token,
    errors_of_reasons,
    issue_token,
    read_answers,
    reference_for,
    sent_signature,
    submission_of,
)
from shared.events import ProviderRef, RejectionReason

RJ1 = ProviderRef(ods_code="RJ1", name="Guy's and St Thomas'", provider_type="acute",
                  quality_contact_email="quality@gstt.example.nhs.uk")
REGISTRY = store.Registry(
    providers={"RJ1": RJ1}, active_feeds=frozenset({"feed-a", "public-door"}),
    grants=frozenset({("feed-a", "RJ1")}), public_feeds=frozenset({"public-door"}))
SECRET = "a test secret"
TODAY = date(2026, 11, 20)
PROVIDERS = {"RJ1": "Guy's and St Thomas'"}


# -- intake: who may submit the public's kind ---------------------------------------------------
def test_the_public_door_submits_public_feedback_for_any_registered_provider() -> None:
    assert authorise("public-door", "RJ1", REGISTRY, "public_feedback") == RJ1
    unknown = authorise("public-door", "XYZ", REGISTRY, "public_feedback")
    assert isinstance(unknown, RejectionReason) and unknown.type == "unknown_provider"


@pytest.mark.parametrize("feed, kind", [("feed-a", "public_feedback"),  # a provider's feed
                                        ("public-door", "complaint"),  # the door, another kind
                                        ("revoked-door", "public_feedback")])
def test_the_public_kind_comes_only_from_the_public_door(feed: str, kind: str) -> None:
    refused = authorise(feed, "RJ1", REGISTRY, kind)
    assert isinstance(refused, RejectionReason)
    assert (refused.loc, refused.type) == ("kind", "forbidden")
    assert "public's door" in refused.msg


def test_a_provider_feed_is_unchanged() -> None:
    assert authorise("feed-a", "RJ1", REGISTRY, "complaint") == RJ1


# -- the workspace: tokens and references ------------------------------------------------------
def test_a_token_is_good_only_with_its_cookie_and_for_a_while() -> None:
    token = issue_token(SECRET, "cookie-1", 1_000_000)
    nonce = check_token(SECRET, token, "cookie-1", 1_000_060)
    assert nonce and nonce == token.split(".")[1]
    assert check_token(SECRET, token, "cookie-2", 1_000_060) is None  # another browser
    assert check_token(SECRET, token, None, 1_000_060) is None  # no cookie (cross-site POST)
    assert check_token("another secret", token, "cookie-1", 1_000_060) is None
    assert check_token(SECRET, token, "cookie-1", 1_000_000 + 5 * 3600) is None  # expired
    issued, nonce, mac = token.split(".")
    assert check_token(SECRET, f"{issued}.{nonce}x.{mac}", "cookie-1", 1_000_060) is None
    assert check_token(SECRET, "", "cookie-1", 1_000_060) is None


def test_a_reference_is_stable_per_form_and_never_reads_as_personal_data() -> None:
    references = {reference_for(SECRET, f"nonce-{n}") for n in range(2000)}
    assert len(references) == 2000
    assert reference_for(SECRET, "nonce-1") == reference_for(SECRET, "nonce-1")
    for ref in references:
        assert len(ref) == 12 and ref.startswith("CW-") and ref[7] == "-"
        assert not any(c.isdigit() for c in ref) and not code_holds_personal_data(ref)
    assert sent_signature(SECRET, "CW-BKTM-QXRP") != sent_signature("x", "CW-BKTM-QXRP")


# -- the workspace: the form ---------------------------------------------------------------------
def answers(**values: str) -> Answers:
    base = {"provider": "RJ1", "purpose": "concern", "relationship": "carer",
            "subject": "treatment", "description": "My father fell on the ward and broke his"
            " hip; nobody came for an hour.", "share_feedback": "yes", "contact_by": "none"}
    return read_answers(list({**base, **values}.items()))


def test_a_complete_form_is_a_submission_intake_accepts() -> None:
    body, errors = submission_of(answers(
        contact_by="email", email="alex@example.org", name="Alex", share_identity="yes",
        **{"happened-day": "3", "happened-month": "11", "happened-year": "2026"}),
        PROVIDERS, "CW-BKTM-QXRP", TODAY)
    assert errors == [] and body is not None
    assert body["subject_area"] == "Clinical treatment"
    assert body["contact"] == {"email": "alex@example.org", "name": "Alex"}
    assert body["happened_on"] == "2026-11-03" and body["consent_share_identity"] is True
    parsed = parse(json.dumps(body).encode(), "application/json")
    assert isinstance(parsed, Parsed), parsed
    assert parsed.withheld == {"contact": {"email": "alex@example.org", "name": "Alex"}}


def test_no_contact_details_are_kept_without_a_way_to_contact() -> None:
    """A name (or an email) typed but "do not contact me" chosen: nothing of it is sent."""
    body, errors = submission_of(answers(name="Alex", email="alex@example.org",
                                         share_identity="yes"), PROVIDERS, "CW-B", TODAY)
    assert errors == [] and body is not None
    assert "contact" not in body and body["contact_by"] == "none"
    assert body["consent_share_identity"] is False


@pytest.mark.parametrize("change, field", [
    ({"provider": "RXX"}, "provider"), ({"purpose": ""}, "purpose"),
    ({"relationship": "boss"}, "relationship"), ({"subject": ""}, "subject"),
    ({"description": "   "}, "description"), ({"description": "x" * 5001}, "description"),
    ({"share_feedback": ""}, "share_feedback"), ({"contact_by": ""}, "contact_by"),
    ({"contact_by": "email"}, "email"), ({"contact_by": "email", "email": "alex"}, "email"),
    ({"contact_by": "phone", "phone": "12"}, "phone"),
    ({"contact_by": "phone", "phone": "call 0207 946 0000"}, "phone"),
    ({"happened-day": "31", "happened-month": "2", "happened-year": "2026"}, "happened-day"),
    ({"happened-day": "1", "happened-month": "1", "happened-year": "2027"}, "happened-day")])
def test_each_mistake_is_said_at_its_question(change: dict[str, str], field: str) -> None:
    body, errors = submission_of(answers(**change), PROVIDERS, "CW-BKTM-QXRP", TODAY)
    assert body is None
    assert [f for f, _ in errors] == [field]


def test_every_subject_is_a_ko41a_subject_area() -> None:
    from shared.submissions import KO41aSubject

    assert {s[2] for s in SUBJECTS} <= {s.value for s in KO41aSubject}


def test_intake_reasons_point_at_the_questions() -> None:
    assert errors_of_reasons([{"loc": "contact.email", "msg": "bad", "type": "x"},
                              {"loc": "", "msg": "other", "type": "y"}]) == [
        ("email", "This could not be accepted: bad"), ("", "This could not be accepted: other")]
