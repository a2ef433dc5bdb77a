"""intake's HTTP routes: the API for provider feeds that cannot speak AMQP (``install``), and
the operator's (``add_operations_routes``).

Mounted on the service's own FastAPI app (beside /health, /ready, /metrics). Every request is
authenticated by the feed's API key and admitted through the same ``Admissions`` as AMQP
messages: the same validation, authorisation, redaction, de-duplication, quarantine and
outbox.

Status codes of ``POST /v1/submissions``:
- 202 accepted; 200 duplicate (the record was accepted before: a retry is safe and changes
  nothing, so it is a success, not a conflict);
- 401 no API key, or not a valid one (nothing is stored: the sender is unknown);
- 403 the feed is not registered for the body's ODS code; 413 body over 1 MiB;
  415 not JSON; 422 the body does not meet the contract (field-level ``reasons``, the same
  list an AMQP rejection carries). Every 4xx after authentication is quarantined, but
- 429 the feed is over its rate limit (``Retry-After``; nothing stored, send again).

The operator's routes: the quarantine (list, show, resubmit as stored) and the feeds, for the
workspace's operations pages (the CLI does the same, and more, with ``carewatch quarantine``
and ``carewatch feeds``). A quarantined body is raw and unredacted: it never leaves intake over
HTTP (only its size and the reasons it was refused). Correcting a body before resubmitting it
stays a CLI task (``carewatch quarantine resubmit --edit``).
"""

import json
import uuid
from collections.abc import AsyncIterator, Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from services.intake import store
from services.intake.admission import ACCEPTED, DUPLICATE, Admission, Admissions, Incoming, totals
from services.intake.bulk_message import item_bytes, keep_repeated_keys, read_bulk
from services.intake.credentials import api_key_hash, key_matches
from services.intake.validation import MAX_BODY_BYTES
from shared.events import RejectionReason
from shared.identity import (
    FEED_KEY,
    OPERATOR,
    QUALITY_LEAD,
    QUALITY_TEAM,
    Access,
    Identity,
    RouteKey,
    allow,
)
from shared.metrics import Metrics
from shared.ratelimit import RateLimiter
from shared.submissions import BULK_ROUTING_KEY, MAX_BULK_ITEMS, SUBMISSION_ADAPTER, BulkSubmissionV1

if TYPE_CHECKING:
    from shared.runtime import ServiceRuntime

MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 32 * 1_048_576
# Past this many bytes a request is no longer read at all (only its size is reported).
READ_LIMIT = 64 * 1_048_576
NDJSON_TYPES = {"application/x-ndjson", "application/jsonl", "application/json-seq",
                "application/ndjson"}

Outcome = Literal["accepted", "duplicate", "rejected"]

# Who may use intake's routes: provider feeds, by their API keys (checked by the routes
# themselves, ``authenticated_feed``), and operators; the rest of the surface is shared/http.py's.
ACCESS: dict[RouteKey, Access] = {
    ("POST", "/v1/submissions"): FEED_KEY,
    ("POST", "/v1/submissions/batch"): FEED_KEY,
    ("GET", "/v1/submissions/{submission_id}"): FEED_KEY,
    # The public's door (the workspace's public feedback page): the providers to choose from.
    ("GET", "/v1/public/providers"): FEED_KEY,
    # A member of the public's feedback with the contact details they gave: personal data,
    # for the commissioner's quality team only; every read is recorded.
    ("GET", "/v1/public-feedback/{reference}"): allow(QUALITY_TEAM, QUALITY_LEAD),
    # The operator's quarantine and feeds (``add_operations_routes``).
    ("GET", "/v1/quarantine"): allow(OPERATOR),
    ("GET", "/v1/quarantine/{submission_id}"): allow(OPERATOR),
    ("POST", "/v1/quarantine/{submission_id}/resubmit"): allow(OPERATOR),
    ("GET", "/v1/feeds"): allow(OPERATOR),
}

API_DESCRIPTION = """\
Provider feeds that cannot publish to RabbitMQ post their submissions here. Each request
carries the feed's API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`; an operator
issues it with `carewatch feeds create FEED --ods CODE --api-key`). A feed may submit only
for the ODS codes it is registered for.

Submissions go through the same admission as AMQP messages: validated against the schema of
their `kind`, personal data redacted from free text, de-duplicated on the provider's
`record_id`, stored and announced as `feedback.accepted.v1`; or quarantined with
machine-readable reasons and announced as `feedback.rejected.v1`.

202 accepted, 200 duplicate (a safe retry), 401 no valid key (nothing stored), 403 not this
feed's provider, 413 over 1 MiB, 415 not JSON, 422 invalid (field-level `reasons`), 429
over the feed's rate limit (nothing stored; `Retry-After` says when to send again). A JSON
object that repeats a key is refused (`duplicate_key`).
"""


class SubmissionResult(BaseModel):
    """What became of one submission."""

    submission_id: uuid.UUID
    outcome: Outcome
    feedback_id: uuid.UUID | None = Field(None, description="Set when accepted.")
    reasons: list[RejectionReason] = Field(
        default_factory=list, description="Why it was rejected: one entry per problem, with the"
        " dotted path of the field (`loc`), a message and a machine-readable `type`.")
    replay: bool = Field(False, description="The very same submission (same feed, Idempotency-Key"
                         " and body) was received before; nothing changed.")
    first_outcome: Outcome | None = Field(None, description="For a replay: what became of the"
                                          " first copy.")


class BatchItemResult(SubmissionResult):
    index: int = Field(description="Position of the item in the batch, from 0.")
    status: int = Field(description="The status code this item would have had on its own.")


class BatchResult(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    results: list[BatchItemResult]


class Receipt(SubmissionResult):
    received_at: str


class Problem(BaseModel):
    detail: str


def status_for(admission: Admission) -> int:
    """The HTTP status of one admission (see the module docstring)."""
    if admission.outcome == ACCEPTED:
        return 202
    if admission.outcome == DUPLICATE:
        return 200
    types = {r.type for r in admission.reasons}
    for reason_type, status in (("unauthenticated", 401), ("forbidden", 403),
                                ("too_large", 413), ("content_type", 415)):
        if reason_type in types:
            return status
    return 422


def is_bulk_message(body: bytes, content_type: str | None) -> bool:
    """Whether a batch body is a bulk message (one JSON object, ``BulkSubmissionV1``) rather
    than an array or lines of submissions."""
    media = (content_type or "application/json").partition(";")[0].strip().lower()
    return media in ("application/json", "text/json") and body.lstrip()[:1] == b"{"


def split_batch(body: bytes, content_type: str | None) -> list[bytes] | str:
    """The items of a batch body (a JSON array, or one JSON object per line), each as the
    bytes to admit; or why the batch as a whole cannot be read."""
    media = (content_type or "application/json").partition(";")[0].strip().lower()
    if media in NDJSON_TYPES:
        return [line for line in body.split(b"\n") if line.strip()]
    if media not in ("application/json", "text/json"):
        return f"content type {content_type!r}: send a JSON array or application/x-ndjson"
    try:
        items = json.loads(body, object_pairs_hook=keep_repeated_keys)
    except (ValueError, RecursionError) as exc:
        return f"the batch is not a JSON array: {str(exc)[:200]}"
    if not isinstance(items, list):
        return "the batch must be a JSON array of submissions"
    try:
        return [item_bytes(item) for item in items]
    except RecursionError:  # nesting deeper than any submission (the reader took it)
        return "the batch is nested too deeply to be a JSON array of submissions"


async def read_body(chunks: AsyncIterator[bytes], keep: int) -> tuple[bytes, int]:
    """The first ``keep`` bytes of a request body and its full size (counting stops at
    READ_LIMIT), without holding more than ``keep`` bytes."""
    kept: list[bytes] = []
    held = size = 0
    async for chunk in chunks:
        size += len(chunk)
        if held < keep:
            part = chunk[:keep - held]
            kept.append(part)
            held += len(part)
        if size > READ_LIMIT:
            break
    return b"".join(kept), size


def install(api: FastAPI, admissions: Admissions, pool: Callable[[], asyncpg.Pool],
            metrics: Metrics, limiter: RateLimiter | None = None) -> None:
    """Add intake's routes to the service's FastAPI app."""
    bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                        description="The feed's API key: `Authorization: Bearer <key>`.")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                              description="The feed's API key, as `X-API-Key: <key>`.")

    async def authenticated_feed(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
            x_api_key: Annotated[str | None, Security(header_key)]) -> str:
        key = credentials.credentials if credentials else x_api_key
        if not key:
            raise HTTPException(401, "no API key: send `Authorization: Bearer <key>` or"
                                " `X-API-Key: <key>`", headers={"WWW-Authenticate": "Bearer"})
        row = await store.feed_for_api_key(pool(), api_key_hash(key))
        if row is None or not key_matches(key, row["api_key_sha256"]):
            raise HTTPException(401, "the API key is not valid, or its feed is revoked",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return str(row["feed_user"])

    Feed = Annotated[str, Security(authenticated_feed)]
    unauthorised: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "No valid API key."}}

    def count(outcome: str) -> None:
        metrics.messages.labels(metrics.service, "http", outcome).inc()

    def over_limit(feed: str, n: int) -> JSONResponse | None:
        """429 with Retry-After when ``feed`` may not send ``n`` more submissions now
        (nothing is stored: the feed sends them again after the delay)."""
        if limiter is None or limiter.take(feed, n):
            return None
        count("rate_limited")
        wait = limiter.retry_after(feed, n)
        return JSONResponse(
            {"detail": f"feed {feed!r} is over its rate limit ({limiter.rate:g} submissions a"
                       f" second, {limiter.burst} at once): nothing was stored; send again"
                       f" in {wait} s"},
            status_code=429, headers={"Retry-After": str(wait)})

    router = APIRouter(prefix="/v1", tags=["submissions"])

    @router.post(
        "/submissions", summary="Submit one piece of feedback",
        description="The body is one submission (JSON, UTF-8, at most 1 MiB) whose `kind`"
        " selects the schema. An `Idempotency-Key` header (up to 200 characters) makes a"
        " retry of the same body a recognised replay.",
        responses={202: {"model": SubmissionResult, "description": "Accepted."},
                   200: {"model": SubmissionResult, "description": "Duplicate of a record"
                         " accepted before; nothing changed."},
                   **unauthorised,
                   403: {"model": SubmissionResult, "description": "The feed may not submit"
                         " for this ODS code (quarantined)."},
                   413: {"model": SubmissionResult, "description": "Body over 1 MiB."},
                   415: {"model": SubmissionResult, "description": "Not JSON."},
                   429: {"model": Problem, "description": "Over the feed's rate limit; nothing"
                         " stored: send again after `Retry-After` seconds."},
                   422: {"model": SubmissionResult, "description": "Invalid: field-level"
                         " reasons (quarantined)."}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Submission"}}}}},
        status_code=202, response_model=None)
    async def submit(request: Request, feed: Feed) -> JSONResponse:
        if refused := over_limit(feed, 1):
            return refused
        body, size = await read_body(request.stream(), MAX_BODY_BYTES + 1)
        admission = await admissions.admit(Incoming(
            body=body, feed_user=feed, message_id=_idempotency_key(request),
            content_type=request.headers.get("content-type"), size=size))
        count(admission.outcome)
        return JSONResponse(admission.as_json(), status_code=status_for(admission))

    @router.post(
        "/submissions/batch", summary="Submit up to 1,000 submissions at once",
        description="A JSON array of submissions, or `application/x-ndjson` (one submission"
        " per line), or a bulk message (one JSON object, `BulkSubmission`: up to"
        f" {MAX_BULK_ITEMS:,} items of one routine kind, as published on AMQP with the routing"
        f" key `{BULK_ROUTING_KEY}`). Admitted together in one transaction; the result of each"
        " item is given in order, with the status it would have had on its own. With an"
        " `Idempotency-Key`, item *i* gets the key `<key>:<i>` (`<key>#<i>` in a bulk"
        " message). A bulk message that cannot be read is refused whole (400, or 413 over"
        " its limits) with its `reasons`; nothing is stored.",
        responses={200: {"model": BatchResult, "description": "Every item's outcome."},
                   400: {"model": Problem, "description": "The batch cannot be read."},
                   **unauthorised,
                   413: {"model": Problem, "description": "Over 32 MiB or 1,000 items."},
                   429: {"model": Problem, "description": "Over the feed's rate limit; nothing"
                         " stored: send again after `Retry-After` seconds."},
                   415: {"model": Problem, "description": "Neither JSON nor NDJSON."}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"oneOf": [
                {"type": "array", "maxItems": MAX_BATCH_ITEMS,
                 "items": {"$ref": "#/components/schemas/Submission"}},
                {"$ref": "#/components/schemas/BulkSubmission"}]}},
            "application/x-ndjson": {"schema": {"type": "string",
                                                "description": "One submission per line."}}}}},
        response_model=None)
    async def submit_batch(request: Request, feed: Feed) -> JSONResponse:
        body, size = await read_body(request.stream(), MAX_BATCH_BYTES + 1)
        if size > MAX_BATCH_BYTES:
            return _problem(413, f"batch is {size} bytes; the limit is {MAX_BATCH_BYTES}")
        content_type = request.headers.get("content-type")
        key = _idempotency_key(request)
        if is_bulk_message(body, content_type):
            read = read_bulk(body, content_type, size)
            if isinstance(read, list):
                too_big = any(r.type in ("too_large", "too_many_items") for r in read)
                return JSONResponse({"detail": "; ".join(f"{r.loc or '<message>'}: {r.msg}"
                                                         for r in read),
                                     "reasons": [r.model_dump() for r in read]},
                                    status_code=413 if too_big else 400)
            if refused := over_limit(feed, len(read[1])):
                return refused
            [bulk] = await admissions.admit_many([Incoming(
                body=body, feed_user=feed, message_id=key, routing_key=BULK_ROUTING_KEY,
                content_type=content_type, size=size)])
            admitted = bulk.items or []
        else:
            items = split_batch(body, content_type)
            if isinstance(items, str):
                return _problem(415 if items.startswith("content type") else 400, items)
            if len(items) > MAX_BATCH_ITEMS:
                return _problem(413, f"{len(items)} items; the limit is {MAX_BATCH_ITEMS}")
            if refused := over_limit(feed, len(items)):
                return refused
            admitted = await admissions.admit_many([
                Incoming(body=item, feed_user=feed, content_type="application/json",
                         message_id=f"{key}:{n}" if key else None)
                for n, item in enumerate(items)])
        results = []
        for n, admission in enumerate(admitted):
            count(admission.outcome)
            results.append({"index": n, "status": status_for(admission), **admission.as_json()})
        return JSONResponse({**totals(admitted), "results": results})

    @router.get(
        "/submissions/{submission_id}", summary="What became of a submission",
        description="The receipt of a submission this feed sent, over HTTP or AMQP.",
        responses={200: {"model": Receipt}, **unauthorised,
                   404: {"model": Problem, "description": "No such submission from this feed."}},
        response_model=None)
    async def receipt(submission_id: uuid.UUID, feed: Feed) -> JSONResponse:
        async with pool().acquire() as conn:
            row = (await store.receipts(conn, [submission_id])).get(submission_id)
        if row is None or row["feed_user"] != feed:
            return _problem(404, f"no submission {submission_id} from feed {feed!r}")
        out: dict[str, Any] = {"submission_id": str(submission_id), "outcome": row["outcome"],
                               "received_at": row["received_at"].isoformat()}
        if row["feedback_id"]:
            out["feedback_id"] = str(row["feedback_id"])
        if row["reasons"]:
            out["reasons"] = row["reasons"]
        return JSONResponse(out)

    @router.get(
        "/public/providers", tags=["public door"], summary="The providers the public may give"
        " feedback about", description="For the public's door only (a feed registered with"
        " `--public`): every registered provider's ODS code, name and type.",
        responses={**unauthorised, 403: {"model": Problem, "description": "Not the public's"
                                         " door."}}, response_model=None)
    async def public_providers(feed: Feed) -> JSONResponse:
        async with pool().acquire() as conn:
            if not await store.is_public_door(conn, feed):
                return _problem(403, f"feed {feed!r} is not the public's door")
            rows = await store.list_providers(conn)
        return JSONResponse([{"ods_code": r["ods_code"], "name": r["name"],
                              "provider_type": r["provider_type"]} for r in rows])

    @router.get(
        "/public-feedback/{reference}", tags=["public door"],
        summary="A member of the public's feedback and contact details",
        description="The public feedback with this acknowledgement reference (or feedback id,"
        " as a concern's evidence names it), its consent and"
        " contact preferences, and the contact details the person gave (until they are"
        " deleted after `CAREWATCH_PUBLIC_CONTACT_RETENTION_DAYS`). Personal data: the quality"
        " team's and its lead's only, and every read is recorded with who read it.",
        responses={404: {"model": Problem}}, response_model=None)
    async def public_feedback(reference: str, request: Request) -> JSONResponse:
        who = request.state.identity
        assert isinstance(who, Identity)
        async with pool().acquire() as conn, conn.transaction():
            rows = await store.public_feedback(conn, reference[:128], who.actor)
        if not rows:
            return _problem(404, f"no public feedback with reference {reference[:128]!r}")
        return JSONResponse({"reference": rows[0]["reference"], "items": [{
            "feedback_id": str(r["feedback_id"]), "ods_code": r["ods_code"],
            "reference": r["reference"], "purpose": r["content"].get("purpose"),
            "received_at": r["received_at"].isoformat(),
            "consent_share_feedback": r["content"].get("consent_share_feedback"),
            "consent_share_identity": r["content"].get("consent_share_identity"),
            "contact_by": r["content"].get("contact_by"),
            "communication_needs": r["content"].get("communication_needs", []),
            "contact": r["contact"]} for r in rows]})

    api.include_router(router)
    api.description = API_DESCRIPTION
    _document_submission_schema(api)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    return key.strip()[:200] if key and key.strip() else None


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _document_submission_schema(api: FastAPI) -> None:
    """Add the submission contract (every kind's schema) to the OpenAPI components: the
    routes read the raw body, so that a malformed one is quarantined with its reasons
    rather than refused before intake sees it."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        spec = generate()
        full = SUBMISSION_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(full.pop("$defs", {}))
        schemas["Submission"] = full
        bulk = BulkSubmissionV1.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(bulk.pop("$defs", {}))
        schemas["BulkSubmission"] = bulk
        return spec

    api.openapi = openapi  # type: ignore[method-assign]


# -- the operator's routes ---------------------------------------------------------------
SHOWN = ("submission_id", "received_at", "feed_user", "routing_key", "reasons", "status",
         "body_size", "resolved_at", "resolved_by", "resubmitted_as", "body_deleted_at")


def without_body(row: Any) -> dict[str, Any]:
    """A quarantine row without its (unredacted) body (pure)."""
    return {k: row[k] for k in SHOWN if k in row.keys()} | {"body_kept": row["body"] is not None}


def add_operations_routes(runtime: "ServiceRuntime", admissions: Admissions) -> None:
    """Add the operator's routes (the quarantine, the feeds) to the service's FastAPI app."""
    api = runtime.http.api
    tags: list[str | Enum] = ["operations"]

    @api.get("/v1/quarantine", tags=tags, summary="Rejected submissions, newest first, with"
             " their reasons (never their bodies)")
    async def quarantine(status: Literal["open", "resubmitted", "discarded", "expired"] = "open",
                         limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
        async with runtime.pool.acquire() as conn:
            rows = await store.list_quarantine(conn, status, limit)
        return jsonable_encoder([dict(r) for r in rows])

    @api.get("/v1/quarantine/{submission_id}", tags=tags,
             summary="One rejected submission: its reasons and what is kept (not the body)")
    async def quarantined(submission_id: uuid.UUID) -> Any:
        async with runtime.pool.acquire() as conn:
            row = await store.get_quarantined(conn, submission_id)
        if row is None:
            raise HTTPException(404, f"no quarantined submission {submission_id}")
        return jsonable_encoder(without_body(row))

    @api.post("/v1/quarantine/{submission_id}/resubmit", tags=tags,
              summary="Admit a rejected submission again as stored, as its feed (once the"
                      " cause is fixed elsewhere: a feed registered, a provider added)")
    async def resubmit(submission_id: uuid.UUID, request: Request) -> Any:
        who = request.state.identity
        assert isinstance(who, Identity)
        async with runtime.pool.acquire() as conn:
            row = await store.get_quarantined(conn, submission_id)
            if row is None:
                raise HTTPException(404, f"no quarantined submission {submission_id}")
            if row["status"] != "open":
                raise HTTPException(409, f"submission {submission_id} is {row['status']},"
                                         " not open")
            body = bytes(row["body"]) if row["body"] is not None else None
            if body is None or (row["body_size"] or len(body)) > len(body):
                raise HTTPException(409, "the body was not kept whole: correct and resubmit it"
                                         " with `carewatch quarantine resubmit --file`")
            admission = await admissions.admit(Incoming(
                body=body, feed_user=row["feed_user"],
                message_id=f"resubmission:{submission_id}", routing_key=row["routing_key"],
                content_type="application/json", resubmission_of=submission_id))
            await store.resolve_quarantined(conn, submission_id, "resubmitted", who.actor,
                                            admission.submission_id)
        return admission.as_json()

    @api.get("/v1/feeds", tags=tags, summary="Provider feeds: their providers and whether"
             " they have an API key (never the key)")
    async def feeds() -> Any:
        async with runtime.pool.acquire() as conn:
            return jsonable_encoder([dict(r) for r in await store.list_feeds(conn)])
