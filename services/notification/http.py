"""notification's operator API: deliveries that failed for good, and sending them again,
for the workspace's operations pages (the CLI: ``carewatch notifications list --status
failed``, ``carewatch notifications retry``)."""

from __future__ import annotations

import uuid
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder

from services.notification import store
from shared.identity import OPERATOR, Access, Identity, RouteKey, allow

if TYPE_CHECKING:
    from shared.runtime import ServiceRuntime

ACCESS: dict[RouteKey, Access] = {
    ("GET", "/v1/notifications"): allow(OPERATOR),
    ("POST", "/v1/notifications/{notification_id}/retry"): allow(OPERATOR),
}


def add_routes(runtime: ServiceRuntime) -> None:
    api = runtime.http.api
    tags: list[str | Enum] = ["operations"]
    runtime.http.declare(ACCESS)

    @api.get("/v1/notifications", tags=tags, summary="Notifications, newest first, with their"
             " delivery state (status=failed: the failed deliveries)")
    async def notifications(
            status: Literal["pending", "sent", "failed", "suppressed"] | None = "failed",
            limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
        async with runtime.pool.acquire() as conn:
            rows = await store.list_notifications(conn, status, limit)
        return jsonable_encoder([dict(r) for r in rows])

    @api.post("/v1/notifications/{notification_id}/retry", tags=tags,
              summary="Send a failed notification again, with a fresh set of attempts")
    async def retry(notification_id: uuid.UUID, request: Request) -> Any:
        who = request.state.identity
        assert isinstance(who, Identity)
        async with runtime.pool.acquire() as conn, conn.transaction():
            requeued = await store.requeue_failed(conn, [notification_id], who.actor)
        if not requeued:
            raise HTTPException(409, f"notification {notification_id} is not failed: nothing"
                                     " to retry")
        return {"notification_id": notification_id, "status": "pending"}
