"""escalation's HTTP API for the quality team, on the service's own HTTP surface.

Commands run in one transaction each, with their events in the outbox; 404 when the concern,
meeting or action does not exist, 409 when the command does not apply to its current state.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import asyncpg
from fastapi import HTTPException, Query
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field

from services.escalation import schedule, store, views
from services.escalation.plans import Conflict, NewAction, NotFound
from shared.outbox import Outbox

if TYPE_CHECKING:
    from services.escalation.app import EscalationRuntime

T = TypeVar("T")
Text = Annotated[str, Field(min_length=1, max_length=4000)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class ActionIn(BaseModel):
    description: Text
    owner: Name
    due_on: date

    def new(self) -> NewAction:
        return NewAction(self.description, self.owner, self.due_on)


class OutcomeIn(BaseModel):
    outcome: Text
    recorded_by: Name
    actions: list[ActionIn] = Field(default_factory=list)


class AddActionIn(ActionIn):
    recorded_by: Name


class CompleteIn(BaseModel):
    evidence: Text = Field(description="Evidence of completion")
    completed_by: Name
    party: Literal["provider", "commissioner"] = "provider"


class CloseIn(BaseModel):
    closed_by: Name
    reason: Text


def add_routes(runtime: EscalationRuntime) -> None:
    api = runtime.http.api
    plans = runtime.escalation.plans
    tags: list[str | Enum] = ["escalation"]

    async def command(work: Callable[[asyncpg.Connection, Outbox], Awaitable[T]]) -> Any:
        try:
            async with runtime.pool.acquire() as conn, conn.transaction():
                result = await work(conn, runtime.outbox(conn))
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from exc
        return jsonable_encoder(result)

    async def read(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> Any:
        async with runtime.pool.acquire() as conn:
            result = await work(conn)
        if result is None:
            raise HTTPException(404, "not found")
        return jsonable_encoder(result)

    # -- commands --------------------------------------------------------------------------
    @api.post("/v1/meetings/{meeting_id}/outcome", tags=tags, status_code=201,
              summary="Record a meeting's outcome and the action plan it agreed")
    async def meeting_outcome(meeting_id: uuid.UUID, body: OutcomeIn) -> Any:
        return await command(lambda conn, outbox: plans.record_outcome(
            conn, outbox, meeting_id, outcome=body.outcome,
            actions=[a.new() for a in body.actions], recorded_by=body.recorded_by))

    @api.post("/v1/concerns/{concern_id}/actions", tags=tags, status_code=201,
              summary="Add a remedial action (owner, due date) to a concern's plan")
    async def add_action(concern_id: uuid.UUID, body: AddActionIn) -> Any:
        return await command(lambda conn, outbox: plans.add_action(
            conn, outbox, concern_id, body.new(), recorded_by=body.recorded_by))

    @api.post("/v1/actions/{action_id}/complete", tags=tags,
              summary="Complete a remedial action, with the evidence of completion")
    async def complete_action(action_id: uuid.UUID, body: CompleteIn) -> Any:
        return await command(lambda conn, outbox: plans.complete_action(
            conn, outbox, action_id, evidence=body.evidence, completed_by=body.completed_by,
            party=body.party))

    @api.post("/v1/concerns/{concern_id}/close", tags=tags,
              summary="Close a concern whose actions are complete (publishes concern.closed.v1)")
    async def close_concern(concern_id: uuid.UUID, body: CloseIn) -> Any:
        return await command(lambda conn, outbox: plans.close_concern(
            conn, outbox, concern_id, closed_by=body.closed_by, reason=body.reason))

    # -- reading ---------------------------------------------------------------------------
    @api.get("/v1/concerns", tags=tags, summary="Concerns escalation knows, newest first")
    async def concerns(status: Literal["open", "closed", "resolved"] | None = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        return await read(lambda conn: store.list_concerns(conn, status, limit))

    @api.get("/v1/concerns/{concern_id}", tags=tags,
             summary="A concern with its meeting, action plan, ladder, visits and pending jobs")
    async def concern(concern_id: uuid.UUID) -> Any:
        return await read(lambda conn: views.concern_file(conn, concern_id))

    @api.get("/v1/concerns/{concern_id}/audit", tags=tags,
             summary="The audit trail of a concern: what the provider, the commissioner and"
                     " the service did, oldest first")
    async def audit(concern_id: uuid.UUID) -> Any:
        async def work(conn: asyncpg.Connection) -> list[dict[str, Any]] | None:
            if await store.get_concern(conn, concern_id) is None:
                return None
            return await store.audit_trail(conn, concern_id)
        return await read(work)

    @api.get("/v1/meetings", tags=tags, summary="Remedial-action meetings, soonest first")
    async def meetings(status: Literal["scheduled", "held", "cancelled"] | None = None,
                       ods_code: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        return await read(lambda conn: store.list_meetings(conn, limit, status, ods_code))

    @api.get("/v1/meetings/{meeting_id}", tags=tags, summary="One meeting")
    async def meeting(meeting_id: uuid.UUID) -> Any:
        async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
            row = await store.get_meeting(conn, meeting_id)
            return dict(row) if row else None
        return await read(work)

    @api.get("/v1/actions", tags=tags, summary="Remedial actions, by due date")
    async def actions(status: Literal["open", "overdue", "completed"] | None = None,
                      concern_id: uuid.UUID | None = None) -> Any:
        return await read(lambda conn: store.list_actions(conn, status, concern_id))

    @api.get("/v1/cqrm", tags=tags,
             summary="The agenda of each provider's CQRM (moderate concerns), soonest first")
    async def cqrm(ods_code: str | None = None, since: datetime | None = None) -> Any:
        return await read(lambda conn: views.cqrm_agendas(conn, ods_code, since))

    @api.get("/v1/watch-list", tags=tags, summary="Low concerns watched for the quarterly report")
    async def watch_list(since: datetime | None = None, ods_code: str | None = None) -> Any:
        return await read(lambda conn: store.watch_list(conn, since, ods_code))

    @api.get("/v1/visits", tags=tags, summary="Insight visits and re-visits")
    async def visits(ods_code: str | None = None,
                     status: Literal["planned", "held", "cancelled"] | None = None) -> Any:
        return await read(lambda conn: store.list_visits(conn, ods_code, status))

    @api.get("/v1/schedule", tags=tags, summary="Pending time-driven jobs, soonest first")
    async def pending_jobs(concern_id: uuid.UUID | None = None) -> Any:
        return await read(lambda conn: schedule.pending(conn, concern_id))
