"""Bulk messages (services/intake/bulk_message.py, ``BulkSubmissionV1``): reading the envelope
(its limits, what makes it unreadable), and what ``Admissions.admit_many`` makes of one through
the fake store of test_intake_handlers.py: each item admitted, quarantined with its own
reasons, or a duplicate on its own; the message read once, stored once when redelivered; its
accepted items announced in one ``feedback.accepted_batch`` event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.intake.admission import Incoming, in_transactions, read_message
from services.intake.bulk_message import read_bulk
from shared.events import FeedbackAcceptedBatch
from shared.submissions import BULK_ROUTING_KEY, MAX_BULK_BYTES, MAX_BULK_ITEMS, BulkSubmissionV1
from tests.unit.builders import example_body
from tests.unit.test_intake_handlers import FEED, NS, FakeStore, admissions, fake  # noqa: F401


def response(n: int, **changes: Any) -> dict[str, Any]:
    return example_body("fft-response") | {"ods_code": "RJ1", "record_id": f"FFT-RJ1-{n}"} | changes


def envelope(items: Any, **changes: Any) -> dict[str, Any]:
    return {"kind": "bulk", "version": 1, "item_kind": "fft_response", "items": items} | changes


def bulk(body: dict[str, Any] | bytes, message_id: str | None = "bulk-1", feed: str | None = FEED,
         **extra: Any) -> Incoming:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Incoming(body=raw, feed_user=feed, message_id=message_id,
                    routing_key=BULK_ROUTING_KEY, content_type="application/json", **extra)


# -- the envelope --------------------------------------------------------------------------------
def test_a_valid_envelope_gives_its_items_as_written() -> None:
    items = [response(1), response(2)]
    read = read_bulk(json.dumps(envelope(items)).encode())
    assert isinstance(read, tuple), read
    kind, bodies = read
    assert kind == "fft_response"
    assert [json.loads(b) for b in bodies] == items
    # The contract's own model takes the same envelope.
    assert len(BulkSubmissionV1.model_validate(envelope(items)).items) == 2


@pytest.mark.parametrize(("body", "loc", "type_"), [
    (b"[1, 2]", "", "bulk_envelope"),
    (b"{not json", "", "json_invalid"),
    (json.dumps(envelope([response(1)], kind="fft_response")).encode(), "kind", "bulk_envelope"),
    (json.dumps(envelope([response(1)], version=2)).encode(), "version", "bulk_envelope"),
    (json.dumps(envelope([response(1)], item_kind="complaint")).encode(), "item_kind",
     "bulk_envelope"),
    (json.dumps(envelope([])).encode(), "items", "bulk_envelope"),
    (json.dumps(envelope({"a": 1})).encode(), "items", "bulk_envelope"),
    (json.dumps(envelope([response(1)], source="x")).encode(), "source", "extra_forbidden"),
    (b'{"kind": "bulk", "kind": "bulk", "item_kind": "fft_response", "items": [{}]}', "kind",
     "duplicate_key"),
])
def test_an_unreadable_envelope_is_refused_whole_with_its_reason(
        body: bytes, loc: str, type_: str) -> None:
    reasons = read_bulk(body)
    assert isinstance(reasons, list)
    assert (loc, type_) in [(r.loc, r.type) for r in reasons]


def test_the_envelope_s_limits() -> None:
    at_limit = json.dumps(envelope([response(n) for n in range(MAX_BULK_ITEMS)])).encode()
    assert isinstance(read_bulk(at_limit), tuple)
    over = json.dumps(envelope([response(n) for n in range(MAX_BULK_ITEMS + 1)])).encode()
    [too_many] = read_bulk(over)  # type: ignore[misc]
    assert too_many.type == "too_many_items"
    [too_large] = read_bulk(b"{}", size=MAX_BULK_BYTES + 1)  # type: ignore[misc]
    assert too_large.type == "too_large"
    [not_json] = read_bulk(at_limit, content_type="text/csv")  # type: ignore[misc]
    assert not_json.type == "content_type"


def test_each_item_is_its_own_submission_with_an_id_that_survives_redelivery() -> None:
    body = envelope([response(1), response(2)])
    first, again = read_message(bulk(body)), read_message(bulk(body, redelivered=True))
    assert first.bulk and len(first.units) == 2
    ids = [u.submission_id for u in first.units]
    assert len(set(ids)) == 2 and ids == [u.submission_id for u in again.units]
    assert [u.message_id for u in first.units] == ["bulk-1#0", "bulk-1#1"]
    assert {u.routing_key for u in first.units} == {"submission.fft_response.v1.bulk"}
    assert all(u.redelivered for u in again.units)
    # Another message with the same items is another submission of each.
    assert read_message(bulk(body, message_id="bulk-2")).units[0].submission_id != ids[0]


def test_transactions_hold_whole_messages() -> None:
    big = read_message(bulk(envelope([response(n) for n in range(600)])))
    single = read_message(Incoming(body=json.dumps(response(9)).encode(), feed_user=FEED))
    groups = in_transactions([big, big, single, big], limit=1_300)
    assert [[len(m.units) for m in g] for g in groups] == [[600, 600, 1], [600]]


# -- admitted ----------------------------------------------------------------------------------
async def test_valid_items_are_stored_and_invalid_ones_quarantined_each_with_its_reasons(
        fake: FakeStore) -> None:  # noqa: F811
    a, outboxes = admissions()
    items: list[Any] = [
        response(1, comment="Call me on 07700 900123, the nurse was lovely"),
        response(2, answer="superb"),                       # not an answer
        response(3, ods_code="RXX"),                        # not a provider
        example_body("serious-complaint"),                  # a kind for the urgent lane
        "not an object",
        response(4),
    ]
    [result] = await a.admit_many([bulk(envelope(items), reply_to=f"{NS}.replies.{FEED}")])
    assert result.outcome == "bulk" and result.items is not None
    assert [i.outcome for i in result.items] == ["accepted", "rejected", "rejected", "rejected",
                                                 "rejected", "accepted"]
    reasons = [[r.type for r in i.reasons] for i in result.items]
    assert reasons[1] == ["enum"] and reasons[2] == ["unknown_provider"]
    assert reasons[3] == ["wrong_kind"] and reasons[4] == ["dict_type"]
    assert result.as_json()["accepted"] == 2 and result.as_json()["rejected"] == 4
    # Each rejected item is quarantined on its own, as written, resubmittable as a single.
    for item in result.items[1:5]:
        row = fake.quarantine[item.submission_id]
        assert row.routing_key == "submission.fft_response.v1.bulk"
        assert row.feed_user == FEED and (row.message_id or "").startswith("bulk-1#")
    assert json.loads(fake.quarantine[result.items[1].submission_id].body)["answer"] == "superb"
    # The accepted items in one event, redacted; each rejection its own event, also
    # answered on the feed's reply queue.
    types = [e.type for e in outboxes[0].added]
    assert types.count("feedback.accepted.v1") == 0
    assert types.count("feedback.rejected.v1") == 4 * 2
    [announced] = outboxes[0].of(FeedbackAcceptedBatch)
    assert announced.kind == "fft_response"
    assert [a.submission_id for a in announced.items] == [result.items[0].submission_id,
                                                          result.items[5].submission_id]
    assert [a.feedback_id for a in announced.items] == [result.items[0].feedback_id,
                                                        result.items[5].feedback_id]
    [sent] = [e for e in outboxes[0].added if e.type == "feedback.accepted_batch.v1"]
    assert sent.submissionid == result.submission_id
    assert "07700 900123" not in json.dumps([e.data for e in outboxes[0].added])
    stored = fake.feedback[("RJ1", "FFT-RJ1-1")]
    assert "07700" not in stored.content["comment"] and stored.redactions


async def test_a_feed_not_registered_has_each_item_quarantined_as_forbidden(
        fake: FakeStore) -> None:  # noqa: F811
    a, _ = admissions()
    [result] = await a.admit_many([bulk(envelope([response(1), response(2)]), feed="feed-x")])
    assert result.items is not None
    assert [[r.type for r in i.reasons] for i in result.items] == [["forbidden"], ["forbidden"]]
    assert not fake.feedback and len(fake.quarantine) == 2
    [unauthenticated] = (await a.admit_many([bulk(envelope([response(3)]), feed=None)]))[0].items \
        or []
    assert [r.type for r in unauthenticated.reasons] == ["unauthenticated"]


async def test_duplicates_follow_the_rules_of_single_submissions(
        fake: FakeStore) -> None:  # noqa: F811
    a, outboxes = admissions()
    await a.admit_many([Incoming(body=json.dumps(response(1)).encode(), feed_user=FEED,
                                 message_id="single")])
    [result] = await a.admit_many([bulk(envelope([response(1), response(2), response(2)]))])
    assert result.items is not None
    # Accepted before as a single; then the same record twice in the message.
    assert [i.outcome for i in result.items] == ["duplicate", "accepted", "duplicate"]
    assert fake.duplicates == {("RJ1", "FFT-RJ1-1"): 1, ("RJ1", "FFT-RJ1-2"): 1}
    [announced] = outboxes[1].of(FeedbackAcceptedBatch)  # the one stored now, alone
    assert [a.provider_record_id for a in announced.items] == ["FFT-RJ1-2"]
    assert [e.type for e in outboxes[1].added] == ["feedback.accepted_batch.v1"]


async def test_a_redelivered_bulk_message_is_stored_once(fake: FakeStore) -> None:  # noqa: F811
    a, outboxes = admissions()
    body = envelope([response(1), response(2, answer="superb")])
    await a.admit_many([bulk(body)])
    [again] = await a.admit_many([bulk(body, redelivered=True)])
    assert again.items is not None and all(i.replay for i in again.items)
    assert [i.first_outcome for i in again.items] == ["accepted", "rejected"]
    assert len(fake.feedback) == 1 and len(fake.quarantine) == 1 and not fake.duplicates
    assert not outboxes[1].added


async def test_an_unreadable_bulk_message_is_quarantined_whole(
        fake: FakeStore) -> None:  # noqa: F811
    a, outboxes = admissions()
    message = bulk(envelope([response(n) for n in range(MAX_BULK_ITEMS + 1)]))
    [result] = await a.admit_many([message])
    assert result.outcome == "rejected" and result.items is None
    assert [r.type for r in result.reasons] == ["too_many_items"]
    row = fake.quarantine[result.submission_id]
    assert row.routing_key == BULK_ROUTING_KEY and row.body_size == len(message.body)
    assert [e.type for e in outboxes[0].added] == ["feedback.rejected.v1"]
