"""quality-monitor's HTTP API for the quality team, on the service's own HTTP surface: the
review of possible serious risks, the Making Data Count summary, rebases, and charts (SVG or
PNG).

Review commands run in one transaction each, with their event in the outbox; 404 when no
concern marked for review has the id, 409 when the review is already decided or the concern
is no longer open. Every route's roles are in ``ACCESS``; every command records the authenticated identity
(:func:`request_actor`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import asyncpg
from fastapi import Depends, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field

from services.quality_monitor import charts, review, store, summary
from services.quality_monitor.config import MetricName
from shared.clock import utc_now
from shared.identity import Access, Identity, RouteKey, allow
from shared.outbox import Outbox
from shared.roles import DECIDERS, ICB_STAFF

if TYPE_CHECKING:
    from services.quality_monitor.app import Monitor
    from shared.runtime import ServiceRuntime

T = TypeVar("T")
Month = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]
# Who may use each route: the one place that says it (shared/identity.py applies it to every
# request). Measures and reviews name providers side by side: the commissioner's people only.
ACCESS: dict[RouteKey, Access] = {
    ("GET", "/v1/measures/summary"): allow(*ICB_STAFF),
    ("GET", "/v1/rebases"): allow(*ICB_STAFF),
    ("POST", "/v1/rebases"): allow(*DECIDERS),
    ("POST", "/v1/rebases/decision"): allow(*DECIDERS),
    ("GET", "/v1/charts/spc"): allow(*ICB_STAFF),
    ("GET", "/v1/charts/funnel"): allow(*ICB_STAFF),
    ("GET", "/v1/reviews"): allow(*DECIDERS),
    ("GET", "/v1/reviews/{concern_id}"): allow(*DECIDERS),
    ("POST", "/v1/reviews/{concern_id}/confirm"): allow(*DECIDERS),
    ("POST", "/v1/reviews/{concern_id}/dismiss"): allow(*DECIDERS),
}


def request_actor(request: Request) -> str:
    """Who is making this request, for the audit trail: the authenticated identity (a person,
    or a service acting for one)."""
    identity = request.state.identity
    assert isinstance(identity, Identity)
    return identity.actor


Actor = Annotated[str, Depends(request_actor)]


class RebaseKey(BaseModel):
    ods_code: Annotated[str, Field(pattern=r"^[A-Z0-9]{3,10}$")]
    metric: MetricName
    setting: Annotated[str, Field(min_length=1, max_length=40)] = "all"
    period: Month


class RebaseIn(RebaseKey):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class DecisionIn(RebaseKey):
    accept: bool


def add_routes(runtime: ServiceRuntime, monitor: Monitor) -> None:
    api = runtime.http.api
    tags: list[str | Enum] = ["measures"]

    async def with_conn(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with runtime.pool.acquire() as conn, conn.transaction():
            return await work(conn)

    @api.get("/v1/measures/summary", tags=tags,
             summary="The latest point of every provider's measures, with Making Data Count"
                     " variation and assurance icons")
    async def measures_summary(provider: str | None = None) -> Any:
        rows = await with_conn(lambda conn: summary.load(conn, monitor.rules, monitor.clock(),
                                                          provider))
        return [r.as_dict() for r in rows]

    @api.get("/v1/rebases", tags=tags, summary="Rebases recorded and proposed")
    async def rebases(provider: str | None = None,
                      status: Literal["proposed", "accepted", "rejected"] | None = None) -> Any:
        return jsonable_encoder([dict(r) for r in await with_conn(
            lambda conn: store.list_rebases(conn, provider, status))])

    @api.post("/v1/rebases", tags=tags, status_code=201,
              summary="Record a rebase: from this month the series has new limits")
    async def record_rebase(body: RebaseIn, actor: Actor) -> Any:
        row = await with_conn(lambda conn: store.record_rebase(
            conn, ods_code=body.ods_code, metric=body.metric, setting=body.setting,
            period=body.period, reason=body.reason, actor=actor, at=monitor.clock()))
        return jsonable_encoder(dict(row))

    @api.post("/v1/rebases/decision", tags=tags,
              summary="Accept or reject a rebase the monitor proposed")
    async def decide_rebase(body: DecisionIn, actor: Actor) -> Any:
        row = await with_conn(lambda conn: store.decide_rebase(
            conn, ods_code=body.ods_code, metric=body.metric, setting=body.setting,
            period=body.period, accept=body.accept, actor=actor, at=monitor.clock()))
        if row is None:
            raise HTTPException(404, "no proposed rebase for that provider, metric, setting"
                                     " and month")
        return jsonable_encoder(dict(row))

    @api.get("/v1/charts/spc", tags=tags,
             summary="The XmR chart of one provider's measure (SVG or PNG)")
    async def spc_chart(provider: str, metric: MetricName, setting: str = "all",
                        format: Literal["svg", "png"] = "svg") -> Response:
        drawn = await with_conn(lambda conn: charts.load_spc(
            conn, monitor.rules, utc_now() if monitor.clock is None else monitor.clock(),
            provider, metric, setting))
        if isinstance(drawn, str):
            raise HTTPException(404, drawn)
        return Response(charts.render(drawn, format), media_type=charts.MEDIA[format])

    @api.get("/v1/charts/funnel", tags=tags,
             summary="The funnel plot of FFT % negative in one setting and month (SVG or PNG)")
    async def funnel_chart(setting: str, period: Annotated[str, Query(
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$")], selected: str | None = None,
            format: Literal["svg", "png"] = "svg") -> Response:
        drawn = await with_conn(lambda conn: charts.load_funnel(
            conn, monitor.rules, monitor.clock(), setting, period, selected))
        if isinstance(drawn, str):
            raise HTTPException(404, drawn)
        return Response(charts.render(drawn, format), media_type=charts.MEDIA[format])


Reason = Annotated[str, Field(min_length=1, max_length=4000)]


class ConfirmIn(BaseModel):
    reason: Reason | None = Field(default=None, description="Why it is a serious risk")


class DismissIn(BaseModel):
    reason: Reason = Field(description="Why it is not a serious risk (kept with the text for"
                                       " the evaluation corpus)")


def add_review_routes(runtime: ServiceRuntime, monitor: Monitor) -> None:
    api = runtime.http.api
    tags: list[str | Enum] = ["review"]

    async def command(work: Callable[[asyncpg.Connection, Outbox], Awaitable[T]]) -> Any:
        try:
            async with runtime.pool.acquire() as conn, conn.transaction():
                result = await work(conn, runtime.outbox(conn))
        except review.ReviewNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except review.ReviewConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        return jsonable_encoder(result)

    @api.get("/v1/reviews", tags=tags,
             summary="Possible serious risks marked for the quality team's review, oldest first,"
                     " with their evidence (phrase, category, context, sentence)")
    async def reviews(status: Literal["pending", "confirmed", "dismissed"] | None = "pending",
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        async with runtime.pool.acquire() as conn:
            return jsonable_encoder(await review.list_reviews(conn, status, limit))

    @api.get("/v1/reviews/{concern_id}", tags=tags,
             summary="One review: the concern, its evidence and the review's audit trail")
    async def one_review(concern_id: uuid.UUID) -> Any:
        async with runtime.pool.acquire() as conn:
            found = await review.get_review(conn, concern_id)
        if found is None:
            raise HTTPException(404, f"no concern {concern_id} marked for review")
        return jsonable_encoder(found)

    @api.post("/v1/reviews/{concern_id}/confirm", tags=tags,
              summary="Confirm a possible risk: the concern becomes serious and its meeting"
                      " is booked (publishes concern.updated.v2)")
    async def confirm(concern_id: uuid.UUID, body: ConfirmIn, actor: Actor) -> Any:
        return await command(lambda conn, outbox: review.confirm(
            conn, outbox, concern_id, actor=actor, at=monitor.clock(), reason=body.reason))

    @api.post("/v1/reviews/{concern_id}/dismiss", tags=tags,
              summary="Dismiss a possible risk with a reason: the concern is resolved"
                      " (publishes concern.resolved.v1)")
    async def dismiss(concern_id: uuid.UUID, body: DismissIn, actor: Actor) -> Any:
        return await command(lambda conn, outbox: review.dismiss(
            conn, outbox, concern_id, actor=actor, at=monitor.clock(), reason=body.reason))
