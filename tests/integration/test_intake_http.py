"""intake's HTTP API against the real database (and broker, for the events): API keys, every
kind accepted, the same reasons as over AMQP, hostile input, batches, replays, receipts."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from services.intake import store
from services.intake.app import build
from services.intake.validation import parse
from shared.db import create_pool
from shared.settings import Settings
from tests.helpers import bearer, eventually, token_for
from tests.integration.test_intake_support import (
    VALID_EXAMPLES,
    EventTap,
    body_bytes,
    example_message,
    isolated_intake,
    issue_api_key,
)

pytestmark = pytest.mark.integration
FEED = "http-feed-rj"


class Api:
    def __init__(self, client: httpx.AsyncClient, key: str, pool: asyncpg.Pool,
                 tap: EventTap) -> None:
        self.client, self.key, self.pool, self.tap = client, key, pool, tap

    async def post(self, body: dict[str, Any] | bytes, *, key: str | None = None,
                   content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> httpx.Response:
        raw = body if isinstance(body, bytes) else body_bytes(body)
        return await self.client.post("/v1/submissions", content=raw, headers={
            "Authorization": f"Bearer {key or self.key}", "Content-Type": content_type,
            **(headers or {})})


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with isolated_intake(settings, "http") as s:
        runtime = build(s)
        await runtime.start()
        pool = await create_pool(s.database_url, min_size=1, max_size=4)
        codes = [c for c in store.ods_codes(store.read_providers_csv(store.SAMPLE_PROVIDERS))
                 if c != "RAL"]
        key = await issue_api_key(pool, FEED, codes)
        amqp = await aio_pika.connect_robust(s.amqp_url)
        tap = await EventTap.open(amqp, s)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http.port}", timeout=30)
        try:
            yield Api(client, key, pool, tap)
        finally:
            await client.aclose()
            await amqp.close()
            await pool.close()
            await runtime.stop()


def fresh(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, "record_id": f"{body['record_id']}-{uuid.uuid4().hex[:8]}", **changes}


async def quarantined(pool: asyncpg.Pool, submission_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM intake.quarantine WHERE submission_id = $1",
                              uuid.UUID(submission_id))
    assert row is not None, "every rejection is quarantined"
    return row


# -- every kind -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in VALID_EXAMPLES
                                  if example_message(n)["body"]["ods_code"] != "RAL"])
async def test_every_example_is_accepted(api: Api, name: str) -> None:
    body = example_message(name)["body"]
    response = await api.post(body)
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["outcome"] == "accepted"
    event = await eventually(lambda: api.tap.find(
        "feedback.accepted.v1", feedback_id=result["feedback_id"]), what="feedback.accepted")
    assert event.data["kind"] == body["kind"]
    assert event.data["content"]["record_id"] == body["record_id"]
    # The same record again is a duplicate: a success that changes nothing.
    again = await api.post(body)
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"


async def test_x_api_key_header_works_too(api: Api) -> None:
    response = await api.client.post(
        "/v1/submissions", content=body_bytes(fresh(example_message("compliment")["body"],
                                                    ods_code="RJ1")),
        headers={"X-API-Key": api.key, "Content-Type": "application/json"})
    assert response.status_code == 202, response.text


# -- authentication and authorisation ---------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no key"),
    pytest.param({"Authorization": "Bearer cwk_not-a-real-key"}, id="unknown key"),
    pytest.param({"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}, id="basic auth"),
    pytest.param({"X-API-Key": ""}, id="empty key"),
])
async def test_missing_or_invalid_key_is_401_and_nothing_is_stored(
        api: Api, headers: dict[str, str]) -> None:
    body = fresh(example_message("compliment")["body"], ods_code="RJ1")
    response = await api.client.post("/v1/submissions", content=body_bytes(body), headers={
        "Content-Type": "application/json", **headers})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await api.pool.fetchval(
        "SELECT count(*) FROM intake.receipts WHERE provider_record_id = $1",
        body["record_id"]) == 0


async def test_revoked_key_is_401(api: Api) -> None:
    key = await issue_api_key(api.pool, "http-feed-revoked", ["RJ1"])
    body = fresh(example_message("compliment")["body"], ods_code="RJ1")
    assert (await api.post(body, key=key)).status_code == 202
    async with api.pool.acquire() as conn:
        assert await store.revoke_feed(conn, "http-feed-revoked")
    assert (await api.post(fresh(body), key=key)).status_code == 401


async def test_provider_not_registered_for_the_feed_is_403_and_quarantined(api: Api) -> None:
    body = fresh(example_message("routine-complaint")["body"])  # RAL: not this feed's
    response = await api.post(body)
    assert response.status_code == 403
    result = response.json()
    assert result["reasons"] == [{"loc": "ods_code", "type": "forbidden",
                                  "msg": f"feed {FEED!r} is not registered to submit for RAL"}]
    row = await quarantined(api.pool, result["submission_id"])
    assert row["feed_user"] == FEED


# -- the same reasons as over AMQP ----------------------------------------------------------------
async def test_invalid_body_is_422_with_the_reasons_an_amqp_rejection_carries(api: Api) -> None:
    raw = body_bytes(example_message("invalid-complaint")["body"])
    response = await api.post(raw)
    assert response.status_code == 422
    result = response.json()
    expected = parse(raw, "application/json")
    assert isinstance(expected, list)
    assert result["reasons"] == [r.model_dump() for r in expected]
    assert {r["loc"] for r in result["reasons"]} == {
        "priority", "received_on", "subject_area", "description", "risk.consequence"}
    await eventually(lambda: api.tap.find("feedback.rejected.v1",
                                          submission_id=result["submission_id"]))
    assert (await quarantined(api.pool, result["submission_id"]))["reasons"] == result["reasons"]


def _hostile() -> list[Any]:
    valid = fresh(example_message("compliment")["body"], ods_code="RJ1")
    return [
        pytest.param(b"{" + b" " * 2_000_000 + b"}", "application/json", 413, "too_large",
                     id="huge body"),
        pytest.param(body_bytes(valid), "text/plain", 415, "content_type", id="wrong content type"),
        pytest.param(body_bytes(valid), "application/json; charset=latin-1", 415, "content_type",
                     id="not UTF-8 declared"),
        pytest.param(b'{"kind": "compliment", "description": "caf\xe9"}', "application/json",
                     422, "json_invalid", id="not UTF-8"),
        pytest.param(b'{"kind": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json",
                     422, "json_invalid", id="deeply nested"),
        pytest.param(body_bytes({**valid, "kind": "tweet"}), "application/json", 422,
                     "union_tag_invalid", id="unknown kind"),
        pytest.param(body_bytes({**valid, "received_on": "2099-01-01"}), "application/json", 422,
                     "value_error", id="future date"),
        pytest.param(body_bytes({**valid, "ods_code": "ZZZ99"}), "application/json", 422,
                     "unknown_provider", id="unknown ODS code"),
    ]


@pytest.mark.parametrize("raw, content_type, status, reason_type", _hostile())
async def test_hostile_input_is_refused_with_a_reason_and_quarantined(
        api: Api, raw: bytes, content_type: str, status: int, reason_type: str) -> None:
    response = await api.post(raw, content_type=content_type)
    assert response.status_code == status, response.text
    result = response.json()
    assert reason_type in {r["type"] for r in result["reasons"]}
    row = await quarantined(api.pool, result["submission_id"])
    assert row["body_size"] == len(raw)
    # The service carries on.
    ok = await api.post(fresh(example_message("compliment")["body"], ods_code="RJ1"))
    assert ok.status_code == 202


async def test_json_with_charset_is_accepted(api: Api) -> None:
    body = fresh(example_message("compliment")["body"], ods_code="RJ1")
    response = await api.post(body, content_type="Application/JSON; charset=UTF-8")
    assert response.status_code == 202, response.text


# -- idempotency and receipts ----------------------------------------------------------------------
async def test_retry_with_the_same_idempotency_key_is_a_replay(api: Api) -> None:
    body = fresh(example_message("gp-alert")["body"])
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = (await api.post(body, headers=key)).json()
    again = await api.post(body, headers=key)
    assert again.status_code == 200
    assert again.json() == {"submission_id": first["submission_id"], "outcome": "duplicate",
                            "replay": True, "first_outcome": "accepted"}
    assert await api.pool.fetchval(
        "SELECT duplicates FROM intake.feedback WHERE submission_id = $1",
        uuid.UUID(first["submission_id"])) == 1


async def test_receipt_of_a_submission_is_shown_to_its_feed_only(api: Api) -> None:
    raw = body_bytes(example_message("invalid-complaint")["body"])
    sid = (await api.post(raw, headers={"Idempotency-Key": uuid.uuid4().hex})).json()[
        "submission_id"]
    response = await api.client.get(f"/v1/submissions/{sid}",
                                     headers={"Authorization": f"Bearer {api.key}"})
    assert response.status_code == 200
    assert response.json()["outcome"] == "rejected"
    assert len(response.json()["reasons"]) == 5
    other = await issue_api_key(api.pool, "http-feed-other", ["RJ1"])
    response = await api.client.get(f"/v1/submissions/{sid}",
                                    headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 404


# -- batches ---------------------------------------------------------------------------------------
async def test_batch_of_json_lines_gives_each_outcome_in_order(api: Api) -> None:
    good = fresh(example_message("fft-monthly")["body"])
    lines = [body_bytes(good), body_bytes(good), b"not json",
             body_bytes(fresh(example_message("routine-complaint")["body"]))]
    response = await api.client.post("/v1/submissions/batch", content=b"\n".join(lines), headers={
        "Authorization": f"Bearer {api.key}", "Content-Type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["duplicate"], result["rejected"]) == (1, 1, 2)
    assert [(r["index"], r["outcome"], r["status"]) for r in result["results"]] == [
        (0, "accepted", 202), (1, "duplicate", 200), (2, "rejected", 422), (3, "rejected", 403)]
    assert result["results"][2]["reasons"][0]["type"] == "json_invalid"


async def test_batch_as_a_json_array(api: Api) -> None:
    items = [fresh(example_message("survey-result")["body"]) for _ in range(3)]
    response = await api.client.post("/v1/submissions/batch", content=json.dumps(items), headers={
        "Authorization": f"Bearer {api.key}", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 3


async def test_a_bulk_message_gives_each_item_s_outcome_in_order(api: Api) -> None:
    good = fresh(example_message("fft-response")["body"])
    items = [good, good, {**fresh(example_message("fft-response")["body"]), "answer": "superb"},
             fresh(example_message("fft-response")["body"])]
    envelope = {"kind": "bulk", "version": 1, "item_kind": "fft_response", "items": items}
    response = await api.client.post("/v1/submissions/batch", content=json.dumps(envelope),
                                     headers={"Authorization": f"Bearer {api.key}",
                                              "Content-Type": "application/json",
                                              "Idempotency-Key": "bulk-http-1"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["duplicate"], result["rejected"]) == (2, 1, 1)
    assert [(r["outcome"], r["status"]) for r in result["results"]] == [
        ("accepted", 202), ("duplicate", 200), ("rejected", 422), ("accepted", 202)]
    rejected = result["results"][2]
    assert (await quarantined(api.pool, rejected["submission_id"]))["reasons"] == \
        rejected["reasons"]
    # The same request again: every item a replay, nothing stored twice.
    again = await api.client.post("/v1/submissions/batch", content=json.dumps(envelope),
                                  headers={"Authorization": f"Bearer {api.key}",
                                           "Content-Type": "application/json",
                                           "Idempotency-Key": "bulk-http-1"})
    assert [r.get("replay") for r in again.json()["results"]] == [True] * 4
    # An envelope that cannot be read is refused whole, with its reasons.
    bad = await api.client.post("/v1/submissions/batch", content=json.dumps(
        {**envelope, "item_kind": "complaint"}), headers={
        "Authorization": f"Bearer {api.key}", "Content-Type": "application/json"})
    assert bad.status_code == 400
    assert [r["loc"] for r in bad.json()["reasons"]] == ["item_kind"]


async def test_batch_item_with_a_lone_surrogate_is_rejected_not_a_server_error(api: Api) -> None:
    # Python's JSON reader lets "\ud800" through; the item has no UTF-8 form. Found by the
    # fuzz run (tests/fuzz): it was a 500 for the whole batch.
    good = fresh(example_message("survey-result")["body"])
    content = b'[' + body_bytes(good) + b', {"kind": "complaint", "description": "\\ud800"}]'
    response = await api.client.post("/v1/submissions/batch", content=content, headers={
        "Authorization": f"Bearer {api.key}", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"]) == (1, 1)
    rejected = result["results"][1]
    assert (rejected["status"], rejected["reasons"][0]["type"]) == (422, "json_invalid")
    assert (await quarantined(api.pool, rejected["submission_id"]))["reasons"] == \
        rejected["reasons"]


@pytest.mark.parametrize("content, content_type, status", [
    pytest.param(b"[" * 100_000, "application/json", 400, id="not an array"),
    pytest.param(b'{"kind": "complaint"}', "application/json", 400, id="an object"),
    pytest.param(b"\n".join([b"{}"] * 1001), "application/x-ndjson", 413, id="too many"),
    pytest.param(b"<xml/>", "application/xml", 415, id="not JSON"),
])
async def test_unreadable_batch_is_refused_whole(api: Api, content: bytes, content_type: str,
                                                  status: int) -> None:
    response = await api.client.post("/v1/submissions/batch", content=content, headers={
        "Authorization": f"Bearer {api.key}", "Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["detail"]


# -- the published contract ------------------------------------------------------------------------
async def test_openapi_describes_the_submission_endpoints(api: Api) -> None:
    # The document needs an identity, as every route but liveness does (anyone with a role).
    reader = bearer(await token_for(api.pool, "feed.engineer@icb.example", "operator"))
    spec = (await api.client.get("/openapi.json", headers=reader)).json()
    post = spec["paths"]["/v1/submissions"]["post"]
    assert set(post["responses"]) >= {"200", "202", "401", "403", "413", "415", "422"}
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Submission"}
    assert {"ComplaintV1", "FFTMonthlyV1", "Submission"} <= set(spec["components"]["schemas"])
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
