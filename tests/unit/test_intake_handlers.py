"""intake's handler (services/intake/admission.py ``Admissions.admit_many``, which every door
calls) reached through a fake store and outbox: what becomes of each submission of a batch
(accepted, duplicate, rejected, a replay), which events are written for it, where a rejection
is answered, and which copies count as duplicates. Parsing, redaction and authorisation are
the real ones (tested on their own in test_intake_*.py).

What stays with PostgreSQL (tests/integration/test_intake*.py): ``store.admit_batch``'s one
statement (its unique keys decide stored or duplicate; here the fake's dicts do), the
registry's version, the receipts' SQL, and the group commit of concurrent batches."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest

from services.intake import admission as admission_module
from services.intake import store as real_store
from services.intake.admission import Admissions, Incoming
from shared.events import ProviderRef
from shared.outbox import OutboxRow
from tests.unit.builders import example_body, provider
from tests.unit.fakes import FakeOutbox

NS = "unit"
FEED = "feed-rj1"
REPLIES = f"{NS}.replies.{FEED}"


@dataclass
class FakeStore:
    """intake's store over dicts: feedback by (ODS code, record id), quarantine and receipts
    by submission id, and the outbox rows a batch's statement wrote."""

    providers: dict[str, ProviderRef] = field(default_factory=dict)
    grants: set[tuple[str, str]] = field(default_factory=set)
    feedback: dict[tuple[str, str], real_store.FeedbackRow] = field(default_factory=dict)
    quarantine: dict[uuid.UUID, real_store.QuarantineRow] = field(default_factory=dict)
    receipts: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    duplicates: dict[tuple[str, str], int] = field(default_factory=dict)
    replies: list[OutboxRow] = field(default_factory=list)  # rows written whatever happens

    STORED, KEPT, ALWAYS = real_store.STORED, real_store.KEPT, real_store.ALWAYS
    FeedbackRow, QuarantineRow, Receipt = (real_store.FeedbackRow, real_store.QuarantineRow,
                                           real_store.Receipt)

    def RegistryCache(self) -> FakeStore:  # stands in for the class: one cache, this store
        return self

    async def at(self, conn: object, version: int) -> real_store.Registry:
        feeds = frozenset(f for f, _ in self.grants)
        return real_store.Registry(providers=dict(self.providers), active_feeds=feeds,
                                   grants=frozenset(self.grants))

    async def receipts_and_registry_version(
            self, conn: object, submission_ids: set[uuid.UUID]
    ) -> tuple[dict[uuid.UUID, Any], int]:
        return {s: self.receipts[s] for s in submission_ids if s in self.receipts}, 1

    async def admit_batch(self, conn: object, feedback: Sequence[real_store.FeedbackRow],
                          quarantined: Sequence[real_store.QuarantineRow],
                          outbox: Sequence[tuple[str, uuid.UUID, OutboxRow]],
                          receipts: Sequence[real_store.Receipt],
                          redelivered: Sequence[uuid.UUID] | set[uuid.UUID] = (),
                          replays: dict[tuple[str, str], int] | None = None,
                          ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        stored, kept = set(), set()
        for key, n in (replays or {}).items():  # the statement counts them
            self.duplicates[key] = self.duplicates.get(key, 0) + n
        self.replies += [o for gate, _, o in outbox if gate == self.ALWAYS]
        for row in feedback:
            key = (row.ods_code, row.provider_record_id)
            if key not in self.feedback:
                self.feedback[key] = row
                stored.add(row.submission_id)
            elif row.submission_id not in redelivered:  # the statement counts it
                self.duplicates[key] = self.duplicates.get(key, 0) + 1
        for q in quarantined:
            if q.submission_id not in self.quarantine:
                self.quarantine[q.submission_id] = q
                kept.add(q.submission_id)
        for r in receipts:
            outcome = "accepted" if r.submission_id in stored else r.outcome
            self.receipts.setdefault(r.submission_id, {
                "outcome": outcome, "ods_code": r.ods_code,
                "provider_record_id": r.provider_record_id,
                "reasons": ([x.model_dump() for x in self.quarantine[r.submission_id].reasons]
                            if r.submission_id in kept else None)})
        return stored, kept

    async def count_duplicates(self, conn: object, counts: dict[tuple[str, str], int]) -> None:
        for key, n in counts.items():
            self.duplicates[key] = self.duplicates.get(key, 0) + n


class FakePool:
    """A pool whose one connection's transaction is the test's (nothing to commit); it
    counts the transactions opened."""

    def __init__(self) -> None:
        self.transactions = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakePool]:
        yield self

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.transactions += 1
        yield


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    store = FakeStore(providers={"RJ1": provider()}, grants={(FEED, "RJ1")})
    monkeypatch.setattr(admission_module, "store", store)
    return store


def admissions() -> tuple[Admissions, list[FakeOutbox]]:
    outboxes: list[FakeOutbox] = []

    def outbox_for(conn: object) -> FakeOutbox:
        outboxes.append(FakeOutbox(caused=False))
        return outboxes[-1]
    pool = FakePool()
    return Admissions(lambda: pool, outbox_for, NS, keep_body_bytes=1000), outboxes  # type: ignore[arg-type]


def submission(record_id: str = "DATIX-RJ1-1", feed: str | None = FEED,
               message_id: str | None = None, **extra: Any) -> Incoming:
    body = example_body("serious-complaint") | {"record_id": record_id}
    return Incoming(body=json.dumps(body).encode(), feed_user=feed,
                    message_id=message_id or record_id, content_type="application/json",
                    **extra)


async def test_a_valid_submission_is_stored_and_its_redacted_feedback_published(
        fake: FakeStore) -> None:
    a, outboxes = admissions()
    [result] = await a.admit_many([submission()])
    assert result.outcome == "accepted" and result.feedback_id is not None
    [envelope] = outboxes[0].added
    assert envelope.type == "feedback.accepted.v1"
    assert envelope.submissionid == result.submission_id
    assert envelope.data["feedback_id"] == str(result.feedback_id)
    assert envelope.data["provider"]["ods_code"] == "RJ1"
    assert "943 476 5919" not in json.dumps(envelope.data)  # the NHS number stays in intake
    assert fake.receipts[result.submission_id]["outcome"] == "accepted"


async def test_a_second_copy_of_a_record_is_a_duplicate_counted_unless_redelivered(
        fake: FakeStore) -> None:
    a, outboxes = admissions()
    await a.admit_many([submission()])
    again = await a.admit_many([submission(message_id="resent"),
                                submission(message_id="redelivered", redelivered=True)])
    assert [r.outcome for r in again] == ["duplicate", "duplicate"]
    assert not outboxes[1].added  # nothing published for a duplicate
    assert fake.duplicates == {("RJ1", "DATIX-RJ1-1"): 1}


async def test_a_feed_not_registered_for_the_provider_is_rejected_and_answered(
        fake: FakeStore) -> None:
    a, outboxes = admissions()
    stranger = submission(feed="feed-other", reply_to=f"{NS}.replies.feed-other",
                          correlation_id="c-1")
    [result] = await a.admit_many([stranger])
    assert result.outcome == "rejected"
    assert [r.type for r in result.reasons] == ["forbidden"]
    assert fake.quarantine[result.submission_id].feed_user == "feed-other"
    published, reply = outboxes[0].added
    assert published.type == reply.type == "feedback.rejected.v1"
    assert not fake.feedback


async def test_the_same_message_again_is_a_replay_that_changes_nothing(
        fake: FakeStore) -> None:
    a, outboxes = admissions()
    bad = submission(feed="feed-other")  # rejected: not registered for RJ1
    good = submission(record_id="DATIX-RJ1-2")
    first = await a.admit_many([bad, good])
    # The very same messages (same feed, id and bytes), one of them twice in its batch.
    replays = await a.admit_many([bad, good, good])
    assert [(r.outcome, r.replay, r.first_outcome) for r in replays] == [
        ("rejected", True, "rejected"), ("duplicate", True, "accepted"),
        ("duplicate", True, "accepted")]
    assert [r.submission_id for r in replays] == [r.submission_id for r in [*first, first[1]]]
    assert not outboxes[1].added and not outboxes[1].events  # no reply was asked for
    assert fake.duplicates == {("RJ1", "DATIX-RJ1-2"): 2}


async def test_a_replayed_rejection_is_answered_again_on_the_feed_s_reply_queue(
        fake: FakeStore) -> None:
    fake.grants.discard((FEED, "RJ1"))  # the feed's grant is revoked
    a, outboxes = admissions()
    item = submission(reply_to=REPLIES, correlation_id="c-9")
    await a.admit_many([item])
    first_reply = fake.replies.pop()
    await a.admit_many([item])
    [reply] = fake.replies  # written by the batch's statement, like the first one's
    assert (reply.exchange, reply.routing_key, reply.correlation_id) == ("", REPLIES, "c-9")
    assert reply.envelope.submissionid == item.submission_id
    assert reply.envelope.data["reasons"][0]["type"] == "forbidden"
    assert reply.envelope.data["reasons"] == first_reply.envelope.data["reasons"]
    assert [e.id for e in outboxes[1].added] == [reply.event_id]
    assert not outboxes[1].events  # nothing added in a statement of its own


async def test_a_batch_is_read_in_pieces_with_a_turn_of_the_loop_between_them(
        fake: FakeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is read (validated, redacted) a piece at a time, so the event loop (and an
    urgent delivery waiting for it) never waits for a whole batch's reading."""
    pieces: list[int] = []
    read_messages = admission_module.read_messages

    def recorded(items: Sequence[Incoming]) -> Any:
        pieces.append(len(items))
        return read_messages(items)

    monkeypatch.setattr(admission_module, "read_messages", recorded)
    a, _ = admissions()
    batch = [submission(record_id=f"DATIX-RJ1-{n}") for n in range(25)]
    admitting = asyncio.create_task(a.admit_many(batch))
    await asyncio.sleep(0)
    assert pieces == [admission_module.PARSE_PIECE], "one piece, then the loop's turn"
    results = await asyncio.wait_for(admitting, 5)
    assert [r.outcome for r in results] == ["accepted"] * 25
    assert pieces == [10, 10, 5]


def test_duplicate_counts_are_the_later_copies_or_every_copy_of_a_record_stored_before(
) -> None:
    def row(record: str) -> real_store.FeedbackRow:
        return real_store.FeedbackRow(uuid.uuid4(), uuid.uuid4(), "RJ1", record, "complaint", 1,
                                      date(2026, 1, 1), None, {}, {}, FEED)
    a1, a2, a3, b1 = row("A"), row("A"), row("A"), row("B")
    presets, counts = real_store.duplicate_counts([a1, a2, a3, b1], {a3.submission_id})
    # stored now, A's first copy counts A's second (the third was redelivered); B none
    assert presets == [1, 0, 0, 0]
    # stored before, A gains its two copies delivered for the first time; B one
    assert counts == {("RJ1", "A"): 2, ("RJ1", "B"): 1}
    assert real_store.duplicate_counts([b1], {b1.submission_id}) == ([0], {})


async def test_a_batch_opens_no_transaction_its_one_statement_writing_everything(
        fake: FakeStore) -> None:
    a, _ = admissions()
    pool = a._pool()
    await a.admit_many([submission(), submission(record_id="DATIX-RJ1-2"),
                        submission(feed="feed-other")])  # two stored, one rejected
    assert pool.transactions == 0  # type: ignore[attr-defined]
    # Nor does a replay: its count and any reply are in the same statement.
    await a.admit_many([submission()])
    assert pool.transactions == 0  # type: ignore[attr-defined]
    assert fake.duplicates == {("RJ1", "DATIX-RJ1-1"): 1}
