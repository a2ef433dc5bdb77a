"""Which way each submission of a batch goes (services/intake/classification.py), without a
broker or database: replays, stored feedback, and quarantine with every reason that applies."""

from __future__ import annotations

import json
import uuid

from services.intake import store
from services.intake.classification import Quarantine, Store, classify, first_copies
from services.intake.validation import Parsed, parse, reason
from shared.events import ProviderRef, RejectionReason
from tests.unit.builders import example_body

RAL = ProviderRef(ods_code="RAL", name="Royal Free", provider_type="acute",
                  quality_contact_email="q@ral.example")
REGISTRY = store.Registry(providers={"RAL": RAL}, active_feeds=frozenset({"feed-a"}),
                          grants=frozenset({("feed-a", "RAL")}))
SID = uuid.UUID(int=7)
FEEDBACK_ID = uuid.UUID(int=99)


def complaint(**changes: object) -> Parsed:
    parsed = parse(json.dumps(example_body("routine-complaint") | changes).encode(),
                   "application/json")
    assert isinstance(parsed, Parsed), parsed
    return parsed


def verdict(parsed: Parsed | list[RejectionReason], *, feed_user: str | None = "feed-a",
            reply_to: str | None = None,
            lane: RejectionReason | None = None) -> Store | Quarantine:
    return classify(SID, parsed, feed_user=feed_user, reply_to=reply_to, registry=REGISTRY,
                    namespace="carewatch", lane=lane, new_id=lambda: FEEDBACK_ID)


# -- replays ---------------------------------------------------------------------------------------
def test_copies_of_a_receipt_or_of_an_earlier_item_are_replays() -> None:
    a, b, c = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)
    first, replays = first_copies([a, b, a, c, b, a], earlier={c})
    assert first == {a: 0, b: 1}
    assert list(first.values()) == [0, 1]  # in the batch's order
    assert replays == [2, 3, 4, 5]


def test_a_batch_of_new_submissions_has_no_replays() -> None:
    sids = [uuid.UUID(int=n) for n in range(5)]
    assert first_copies(sids, earlier=set()) == ({s: n for n, s in enumerate(sids)}, [])


# -- stored ----------------------------------------------------------------------------------------
def test_a_valid_submission_from_a_registered_feed_is_stored_as_parsed() -> None:
    parsed = complaint()
    result = verdict(parsed, reply_to="carewatch.replies.feed-a")  # its own reply queue
    assert isinstance(result, Store)
    assert result.provider == RAL
    row = result.row
    assert (row.feedback_id, row.submission_id, row.feed_user) == (FEEDBACK_ID, SID, "feed-a")
    assert (row.ods_code, row.provider_record_id, row.kind, row.version) == (
        "RAL", "DATIX-RAL-2026-08817", "complaint", 1)
    assert row.content == parsed.content and row.redactions == parsed.redactions
    assert row.occurred_on == parsed.submission.occurred_on()
    assert row.theme == parsed.submission.theme()


# -- quarantined -----------------------------------------------------------------------------------
def test_an_invalid_submission_keeps_its_reasons_and_no_submission() -> None:
    reasons = [reason("body", "not JSON", "json_invalid")]
    result = verdict(reasons)
    assert result == Quarantine(reasons, None)


def test_an_invalid_submission_asking_for_another_queue_has_both_reasons() -> None:
    reasons = [reason("body", "not JSON", "json_invalid")]
    result = verdict(reasons, reply_to="carewatch.replies.someone-else")
    assert isinstance(result, Quarantine)
    assert [r.type for r in result.reasons] == ["json_invalid", "reply_to"]


def test_a_feed_not_registered_for_the_provider_is_refused() -> None:
    parsed = complaint(ods_code="RAL")
    result = verdict(parsed, feed_user="feed-b")
    assert isinstance(result, Quarantine)
    assert result.valid is parsed
    assert [r.type for r in result.reasons] == ["forbidden"]


def test_an_unknown_provider_is_refused() -> None:
    result = verdict(complaint(ods_code="ZZZ"))
    assert isinstance(result, Quarantine)
    assert [r.type for r in result.reasons] == ["unknown_provider"]


def test_a_lane_problem_is_the_reason_whoever_the_feed_is() -> None:
    lane = reason("kind", "a complaint on an urgent key", "wrong_routing_key")
    for feed in ("feed-a", "feed-b", None):
        result = verdict(complaint(), feed_user=feed, lane=lane)
        assert isinstance(result, Quarantine)
        assert result.reasons == [lane]


def test_a_valid_submission_asking_for_another_queue_is_quarantined() -> None:
    result = verdict(complaint(), reply_to="carewatch.replies.feed-b")
    assert isinstance(result, Quarantine)
    assert [r.type for r in result.reasons] == ["reply_to"]
    result = verdict(complaint(), feed_user="feed-b", reply_to="elsewhere")
    assert isinstance(result, Quarantine)
    assert [r.type for r in result.reasons] == ["forbidden", "reply_to"]
