"""intake's admission rules without a broker or database: who may submit for whom, where a
rejection may be sent back, HTTP status codes, API keys, batch bodies, content types, and
the batching that admits concurrent submissions in one transaction."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from services.intake import store
from services.intake.admission import Admission, Incoming
from services.intake.classification import authorise, reply_queue, reply_refusal
from services.intake.credentials import api_key_hash, key_matches, new_api_key
from services.intake.http import MAX_BATCH_ITEMS, read_body, split_batch, status_for
from services.intake.validation import content_type_problem, submission_id
from shared.events import ProviderRef, RejectionReason
from shared.groupcommit import Batcher

RJ1 = ProviderRef(ods_code="RJ1", name="Guy's", provider_type="acute",
                  quality_contact_email="q@rj1.example")
REGISTRY = store.Registry(providers={"RJ1": RJ1, "RAL": RJ1.model_copy(update={"ods_code": "RAL"})},
                          active_feeds=frozenset({"feed-a"}),
                          grants=frozenset({("feed-a", "RJ1"), ("feed-revoked", "RJ1")}))


# -- authorise ------------------------------------------------------------------------------------
def test_a_feed_may_submit_for_its_own_provider() -> None:
    assert authorise("feed-a", "RJ1", REGISTRY) == RJ1


@pytest.mark.parametrize("feed, ods, loc, type_", [
    ("feed-a", "RAL", "ods_code", "forbidden"),          # registered, not for this provider
    ("feed-unknown", "RJ1", "ods_code", "forbidden"),    # not a feed at all
    ("feed-revoked", "RJ1", "ods_code", "forbidden"),    # granted once, no longer active
    (None, "RJ1", "", "unauthenticated"),                 # no user_id
    ("", "RJ1", "", "unauthenticated"),
    ("feed-a", "ZZZ", "ods_code", "unknown_provider"),    # not in the registry
])
def test_who_may_not_submit(feed: str | None, ods: str, loc: str, type_: str) -> None:
    reason = authorise(feed, ods, REGISTRY)
    assert isinstance(reason, RejectionReason)
    assert (reason.loc, reason.type) == (loc, type_)
    assert reason.msg


# -- reply_to -------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply_to, feed, expected", [
    ("carewatch.replies.feed-rj1", "feed-rj1", "carewatch.replies.feed-rj1"),
    ("carewatch.replies.feed-rj1", "feed-rrk", None),  # another feed's
    ("amq.gen-JzTY20BRgKO-HjmUJj0wLg", "feed-rj1", None),  # anyone's queue
    ("feed-rj1.replies", "feed-rj1", None),
    ("other.replies.feed-rj1", "feed-rj1", None),  # another deployment's
    ("carewatch.quality_monitor.feedback.accepted.v1", "feed-rj1", None),  # carewatch's own
    ("carewatch.replies.feed-rj1", None, None),  # nobody's
    ("", "feed-rj1", None),
    (None, "feed-rj1", None),
])
def test_replies_go_only_to_the_feeds_own_reply_queue(reply_to: str | None, feed: str | None,
                                                      expected: str | None) -> None:
    assert reply_queue(reply_to, feed, "carewatch") == expected
    refusal = reply_refusal(reply_to, feed, "carewatch")
    if reply_to and expected is None:
        assert refusal is not None and refusal.loc == "reply_to" and "own reply queue" in refusal.msg
    else:
        assert refusal is None


# -- HTTP status --------------------------------------------------------------------------------
def reason(type_: str, loc: str = "") -> RejectionReason:
    return RejectionReason(loc=loc, msg="m", type=type_)


SID = uuid.uuid4()


@pytest.mark.parametrize("admission, status", [
    (Admission(SID, "accepted"), 202),
    (Admission(SID, "duplicate"), 200),
    (Admission(SID, "duplicate", replay=True, first_outcome="accepted"), 200),
    (Admission(SID, "rejected", [reason("forbidden", "ods_code")]), 403),
    (Admission(SID, "rejected", [reason("too_large")]), 413),
    (Admission(SID, "rejected", [reason("content_type")]), 415),
    (Admission(SID, "rejected", [reason("missing", "description"), reason("enum", "x")]), 422),
    (Admission(SID, "rejected", [reason("unknown_provider", "ods_code")]), 422),
])
def test_status_for(admission: Admission, status: int) -> None:
    assert status_for(admission) == status


def test_admission_as_json() -> None:
    fid = uuid.uuid4()
    assert Admission(SID, "accepted", feedback_id=fid).as_json() == {
        "submission_id": str(SID), "outcome": "accepted", "feedback_id": str(fid)}
    assert Admission(SID, "rejected", [reason("missing", "x")], replay=True,
                     first_outcome="rejected").as_json() == {
        "submission_id": str(SID), "outcome": "rejected", "replay": True,
        "first_outcome": "rejected", "reasons": [{"loc": "x", "msg": "m", "type": "missing"}]}


# -- API keys -------------------------------------------------------------------------------------
def test_api_keys_are_random_and_only_their_hash_is_kept() -> None:
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    key = keys.pop()
    assert key.startswith("cwk_") and len(key) >= 46
    stored = api_key_hash(key)
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored
    assert key_matches(key, stored)
    assert not key_matches(key + "x", stored)
    assert not key_matches(keys.pop(), stored)


# -- content types and batches --------------------------------------------------------------------
@pytest.mark.parametrize("content_type", [None, "", "application/json", "text/json",
                                          "Application/JSON", "application/json; charset=utf-8",
                                          'application/json;charset="UTF-8"'])
def test_json_content_types(content_type: str | None) -> None:
    assert content_type_problem(content_type) is None


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml",
                                          "application/json; charset=latin-1",
                                          "application/jsonx", "multipart/form-data"])
def test_other_content_types(content_type: str) -> None:
    assert content_type_problem(content_type)


def test_batch_lines_are_taken_verbatim_and_blank_lines_skipped() -> None:
    body = b'{"kind":"a"}\n\n  \n{"kind": "b"}\r\nnot json\n'
    assert split_batch(body, "application/x-ndjson") == [b'{"kind":"a"}', b'{"kind": "b"}\r',
                                                         b"not json"]


def test_batch_array_items_are_encoded_compactly() -> None:
    items = split_batch(json.dumps([{"kind": "a", "x": "é"}, 1]).encode(), "application/json")
    assert items == ['{"kind":"a","x":"é"}'.encode(), b"1"]


@pytest.mark.parametrize("body, content_type", [
    (b"{}", "application/json"), (b"[" * 100_000, "application/json"),
    (b"[1,", None), (b"[]", "text/csv")])
def test_unreadable_batches(body: bytes, content_type: str | None) -> None:
    assert isinstance(split_batch(body, content_type), str)


def test_batch_limit_is_documented() -> None:
    assert MAX_BATCH_ITEMS == 1000


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_read_body_keeps_the_beginning_and_counts_the_rest() -> None:
    assert await read_body(chunks(b"abc", b"def", b"gh"), 4) == (b"abcd", 8)
    assert await read_body(chunks(b"ab"), 4) == (b"ab", 2)


# -- submission ids -------------------------------------------------------------------------------
def test_incoming_submission_id_is_the_validation_one() -> None:
    item = Incoming(body=b"{}", feed_user="guest", message_id="m-1")
    assert item.submission_id == submission_id("guest", "m-1", b"{}")


# -- batched admission ---------------------------------------------------------------------------------
class FakeAdmissions:
    def __init__(self, fail_on: set[bytes] | None = None, delay: float = 0.01) -> None:
        self.groups: list[list[bytes]] = []
        self.fail_on = fail_on or set()
        self.delay = delay

    async def admit_many(self, items: Sequence[Incoming]) -> list[Admission]:
        self.groups.append([i.body for i in items])
        await asyncio.sleep(self.delay)  # a commit takes a while: others gather meanwhile
        if self.fail_on & {i.body for i in items}:
            raise RuntimeError("bad submission in the group")
        return [Admission(i.submission_id, "accepted") for i in items]


def incoming(n: int) -> Incoming:
    return Incoming(body=str(n).encode(), feed_user="guest", message_id=str(n))


async def test_concurrent_submissions_share_transactions() -> None:
    fake = FakeAdmissions()
    group = Batcher(fake.admit_many, max_batch=50, committers=2)
    results = await asyncio.gather(*(group.run(incoming(n)) for n in range(200)))
    assert [r.submission_id for r in results] == [incoming(n).submission_id for n in range(200)]
    assert sum(len(g) for g in fake.groups) == 200
    assert len(fake.groups) <= 6  # 200 in groups of at most 50, not 200 commits
    assert max(len(g) for g in fake.groups) == 50


async def test_a_lone_submission_is_committed_at_once() -> None:
    fake = FakeAdmissions(delay=0)
    group = Batcher(fake.admit_many)
    result = await asyncio.wait_for(group.run(incoming(1)), 1)
    assert result.outcome == "accepted"
    assert fake.groups == [[b"1"]]


async def test_a_failing_group_is_retried_one_by_one_so_only_the_bad_one_fails() -> None:
    fake = FakeAdmissions(fail_on={b"3"})
    group = Batcher(fake.admit_many, max_batch=10, committers=1)
    results = await asyncio.gather(*(group.run(incoming(n)) for n in range(6)),
                                   return_exceptions=True)
    assert [isinstance(r, RuntimeError) for r in results] == [False, False, False, True, False,
                                                              False]
    assert [b"3"] in fake.groups


def test_the_registry_refuses_an_address_that_only_looks_like_one(tmp_path: Path) -> None:
    """Events check an address's shape only; the full check is at the registry's import."""
    path = tmp_path / "providers.csv"
    path.write_text("ods_code,name,provider_type,quality_contact_email\n"
                    "RJ1,Guy's and St Thomas',acute,quality@provider..example\n")
    with pytest.raises(ValueError, match="email"):
        store.read_providers_csv(path)
    path.write_text("ods_code,name,provider_type,quality_contact_email\n"
                    "RJ1,Guy's and St Thomas',acute,quality.rj1@provider.example\n")
    assert [r["ods_code"] for r in store.read_providers_csv(path)] == ["RJ1"]
