"""The reports over HTTP, on quality-monitor's surface: the versions kept, one version in
any format (the workspace shows the HTML), and making one now. Roles in ``ACCESS``; a
provider user sees only its own providers' reports (others answer 404), never the
all-provider report."""

from __future__ import annotations

import uuid
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from services.quality_monitor.reports import archive
from shared.identity import (
    Access,
    Identity,
    RouteKey,
    allow,
)
from shared.roles import READERS, REPORT_MAKERS

if TYPE_CHECKING:
    from services.quality_monitor.app import Monitor
    from shared.runtime import ServiceRuntime

ACCESS: dict[RouteKey, Access] = {
    ("GET", "/v1/reports"): allow(*READERS),
    ("GET", "/v1/reports/{report_id}/{fmt}"): allow(*READERS),
    ("POST", "/v1/reports"): allow(*REPORT_MAKERS),
}
# The HTML runs nothing and loads nothing: its charts are data: images, its style inline.
HTML_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["cqrm_pack", "quality_performance", "you_said_we_did"]
    period: Annotated[str, Field(pattern=r"^\d{4}-((0[1-9]|1[0-2])|Q[1-4])$",
                                 description="YYYY-MM (a CQRM pack) or YYYY-Qn")]
    provider: Annotated[str, Field(pattern=r"^[A-Z0-9]{3,10}$")] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "on demand"


def _identity(request: Request) -> Identity:
    identity = request.state.identity
    assert isinstance(identity, Identity)
    return identity


def add_report_routes(runtime: ServiceRuntime, monitor: Monitor) -> None:
    api = runtime.http.api
    tags: list[str | Enum] = ["reports"]
    runtime.http.declare(ACCESS)

    @api.get("/v1/reports", tags=tags, summary="Report versions kept, newest first")
    async def reports(request: Request,
                      kind: Literal["cqrm_pack", "quality_performance",
                                    "you_said_we_did"] | None = None,
                      period: str | None = None, provider: str | None = None) -> Any:
        identity = _identity(request)
        scopes = [provider] if provider else None
        if identity.provider_scoped:
            scopes = sorted(s for s in (scopes or identity.ods_codes) if identity.may_see(s))
        async with runtime.pool.acquire() as conn:
            return jsonable_encoder(await archive.listing(conn, kind, period, scopes))

    @api.get("/v1/reports/{report_id}/{fmt}", tags=tags,
             summary="One version of a report as PDF, HTML, CSV (zip) or XLSX")
    async def report_file(report_id: uuid.UUID, fmt: Literal["pdf", "html", "csv", "xlsx"],
                          request: Request) -> Response:
        async with runtime.pool.acquire() as conn:
            found = await archive.fetch(conn, report_id, fmt)
        identity = _identity(request)
        if found is None or (identity.provider_scoped and (
                found[0]["scope"] == "all" or not identity.may_see(found[0]["scope"]))):
            raise HTTPException(404, "no such report")
        row, body = found
        name = archive.Stored(row["report_id"], row["kind"], row["scope"], row["period"],
                              row["version"], row["title"], False).file_name(fmt)
        headers = {"Content-Security-Policy": HTML_POLICY} if fmt == "html" else \
            {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(body, media_type=archive.FORMATS[fmt], headers=headers)

    @api.post("/v1/reports", tags=tags, status_code=201,
              summary="Make a report now: the next version when its data changed")
    async def make_report(body: ReportIn, request: Request) -> Any:
        if monitor.reports is None:
            raise HTTPException(503, "reports are not configured in this process")
        if body.kind != "quality_performance" and body.provider is None:
            raise HTTPException(422, "provider is needed for this kind of report")
        scope = "all" if body.kind == "quality_performance" else str(body.provider)
        try:
            stored = await monitor.reports.generate(
                runtime.pool, body.kind, scope, body.period, actor=_identity(request).actor,
                reason=body.reason)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return stored.as_dict()
