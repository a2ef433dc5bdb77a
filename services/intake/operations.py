"""intake's operator API: the quarantine (list, show, resubmit as stored) and the feeds, for
the workspace's operations pages (the CLI does the same, and more, with ``carewatch
quarantine`` and ``carewatch feeds``).

A quarantined body is raw and unredacted: it never leaves intake over HTTP (only its size and
the reasons it was refused). Correcting a body before resubmitting it stays a CLI task
(``carewatch quarantine resubmit --edit``).
"""

from __future__ import annotations

import uuid
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder

from services.intake import store
from services.intake.admission import Admissions, Incoming
from shared.identity import OPERATOR, Access, Identity, RouteKey, allow

if TYPE_CHECKING:
    from shared.runtime import ServiceRuntime

ACCESS: dict[RouteKey, Access] = {
    ("GET", "/v1/quarantine"): allow(OPERATOR),
    ("GET", "/v1/quarantine/{submission_id}"): allow(OPERATOR),
    ("POST", "/v1/quarantine/{submission_id}/resubmit"): allow(OPERATOR),
    ("GET", "/v1/feeds"): allow(OPERATOR),
}
SHOWN = ("submission_id", "received_at", "feed_user", "routing_key", "reasons", "status",
         "body_size", "resolved_at", "resolved_by", "resubmitted_as", "body_deleted_at")


def without_body(row: Any) -> dict[str, Any]:
    """A quarantine row without its (unredacted) body (pure)."""
    return {k: row[k] for k in SHOWN if k in row.keys()} | {"body_kept": row["body"] is not None}


def add_routes(runtime: ServiceRuntime, admissions: Admissions) -> None:
    api = runtime.http.api
    tags: list[str | Enum] = ["operations"]
    runtime.http.declare(ACCESS)

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
