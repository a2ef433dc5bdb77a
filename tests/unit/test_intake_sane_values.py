"""intake's sane-value rules as pure functions: the urgent routing keys, routine kinds refused
on them, per-feed token buckets, repeated keys kept as written in HTTP batches, rejection
reasons redacted."""

from __future__ import annotations

import json

import pytest

from services.intake.admission import lane_problem, urgent_routing_key
from services.intake.http import split_batch
from services.intake.validation import duplicate_keys, reason
from shared.ratelimit import RateLimiter


@pytest.mark.parametrize("key, urgent", [
    ("submission.complaint.v1", True), ("submission.gp_alert.v2", True),
    ("submission.safeguarding_concern.v1", True), ("submission.compliment.v1", False),
    ("submission.complaint.v1.bulk", False), ("complaint", False), (None, False), ("", False)])
def test_urgent_routing_keys_are_those_the_urgent_lane_binds(key: str | None,
                                                            urgent: bool) -> None:
    assert urgent_routing_key(key) is urgent


def test_a_routine_kind_on_an_urgent_key_is_refused_with_the_key_to_use() -> None:
    problem = lane_problem("submission.complaint.v1", "fft_response")
    assert problem is not None and problem.type == "wrong_routing_key"
    assert "submission.fft_response.v1" in problem.msg
    assert lane_problem("submission.complaint.v1", "gp_alert") is None  # urgent on urgent
    assert lane_problem("submission.fft_response.v1", "complaint") is None  # routine lane
    assert lane_problem("submission.complaint.v1.bulk", "fft_response") is None


def test_a_token_bucket_per_feed() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.take("b")  # each feed has its own bucket
    assert limiter.retry_after("a") == 1
    now[0] = 0.5  # one token back
    assert limiter.take("a") and not limiter.take("a")
    assert not limiter.take("a", 10)  # more than the burst: never at once
    assert limiter.retry_after("a", 10) == 2  # (the burst refills in 1.5 s)
    now[0] = 100.0
    assert limiter.take("a", 3) and not limiter.take("a")


def test_a_batch_item_with_a_repeated_key_is_kept_as_written() -> None:
    body = b'[{"kind":"compliment","kind":"complaint"},{"a":{"b":1,"b":2}},{"ok":"\\u00e9"}]'
    items = split_batch(body, "application/json")
    assert isinstance(items, list)
    assert items[0] == b'{"kind":"compliment","kind":"complaint"}'
    assert duplicate_keys(items[0]) == ["kind"] and duplicate_keys(items[1]) == ["b"]
    assert json.loads(items[2]) == {"ok": "\u00e9"} and duplicate_keys(items[2]) == []


def test_reasons_are_redacted() -> None:
    r = reason("extra.9434765919", "unknown ODS code 943 476 5919, ring 07700 900461", "x")
    assert "9434765919" not in r.loc and "943 476 5919" not in r.msg
    assert "[NHS NUMBER]" in r.msg and "[PHONE]" in r.msg


@pytest.mark.parametrize("code, personal", [
    ("9434765919", True), ("C-943-476-5919", True), ("ref07700900461", True),
    ("a@b.org", True), ("\uff19\uff14\uff13\uff14\uff17\uff16\uff15\uff19\uff11\uff19", True),
    ("9434765918", False), ("FFT-RKE-2026-11-004417-12345678", False),
    ("DATIX-RJ1-2026-10452", False), ("FFT-RJ1-RJ122-inpatient-2026-10", False),
    ("RJ1", False), ("CO-1290455", False), ("C 943 476 5919", True),
    ("ref943.476.5919", True), ("C-943/476-5919", True),
    # A UUID's hex: letters part the digit groups, so no NHS number (the check digit passes).
    ("7ab943c476d5919e0f12a3b4c5d6e7f8", False), ("943x476x5919", False),
    # UUIDs are a system's ids, whatever digits they hold; a number beside one is not.
    ("a07700900461b0c1d2e3f40516273849", False), ("PALS-3f2b1c9e-0770-4090-a046-1b2c3d4e5f60",
                                                    False),
    ("3f2b1c9e07700900461b2c3d4e5f6078-07700900461", True),
    ("12345678901234567890123456789012", False)])
def test_a_code_holds_personal_data_only_when_a_number_stands_alone(code: str,
                                                                    personal: bool) -> None:
    from services.intake.redaction import code_holds_personal_data
    assert code_holds_personal_data(code) is personal
