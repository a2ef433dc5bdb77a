"""escalation's HTTP API for the quality team, on the service's own HTTP surface.

Commands run in one transaction each, with their events in the outbox; 404 when the concern,
meeting or action does not exist (or is another provider's, for a provider user), 409 when
the command does not apply to its current state. Every route needs an identity (a bearer
token); ``ACCESS`` below says which roles may use which route, and the audit trail records
the authenticated identity (there is no "recorded by" field to fill in).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import asyncpg
from fastapi import Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from services.escalation import schedule, store, views
from services.escalation.plans import Conflict, NewAction, NotFound
from shared.identity import Access, Identity, RouteKey, allow
from shared.outbox import Outbox
from shared.roles import CLOSERS, ICB_STAFF, OPERATOR, PLANNERS, PROVIDER_USER, READERS

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
    model_config = ConfigDict(extra="forbid")
    outcome: Text
    actions: list[ActionIn] = Field(default_factory=list)


class AddActionIn(ActionIn):
    model_config = ConfigDict(extra="forbid")


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    evidence: Text = Field(description="Evidence of completion")
    party: Literal["provider", "commissioner"] = Field(
        "provider", description="Who completed it (a provider user always completes as the"
        " provider).")


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text


class RescheduleIn(BaseModel):
    reason: Text
    to: datetime | None = Field(default=None, description="The new start (with its offset);"
                                " omitted: the next free slot after the current one")


class CancelIn(BaseModel):
    reason: Text


class AttendeeIn(BaseModel):
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    name: Name | None = None
    role: Name | None = None
    reason: Text
    replaces: str | None = Field(default=None, description="The attendee's e-mail this one"
                                 " replaces (a substitution); omitted: an added attendee")


class PersonIn(BaseModel):
    name: Name | None = None
    role: Literal["quality lead", "deputy quality lead", "lay member", "safeguarding lead",
                  "head of quality"] | None = None
    works_from: time | None = None
    works_until: time | None = None
    working_days: list[Annotated[int, Field(ge=0, le=6)]] | None = Field(
        default=None, description="0 = Monday")
    max_meetings_per_day: Annotated[int, Field(ge=1, le=20)] | None = None
    buffer_minutes: Annotated[int, Field(ge=0, le=240)] | None = None
    active: bool | None = None


class UnavailableIn(BaseModel):
    starts_at: datetime
    ends_at: datetime
    reason: Text


# Who may use each route: the one place that says it (shared/identity.py applies it to every
# request). A provider user sees and acts for its own providers only.
ACCESS: dict[RouteKey, Access] = {
    ("POST", "/v1/meetings/{meeting_id}/outcome"): allow(*PLANNERS),
    ("POST", "/v1/concerns/{concern_id}/actions"): allow(*PLANNERS),
    ("POST", "/v1/actions/{action_id}/complete"): allow(*PLANNERS, PROVIDER_USER),
    ("POST", "/v1/concerns/{concern_id}/close"): allow(*CLOSERS),
    ("GET", "/v1/concerns"): allow(*READERS),
    ("GET", "/v1/concerns/{concern_id}"): allow(*READERS),
    ("GET", "/v1/concerns/{concern_id}/audit"): allow(*ICB_STAFF),
    ("GET", "/v1/meetings"): allow(*READERS),
    ("GET", "/v1/meetings/{meeting_id}"): allow(*READERS),
    ("GET", "/v1/actions"): allow(*READERS),
    ("GET", "/v1/cqrm"): allow(*ICB_STAFF),
    ("GET", "/v1/watch-list"): allow(*ICB_STAFF),
    ("GET", "/v1/visits"): allow(*ICB_STAFF),
    ("GET", "/v1/schedule"): allow(*ICB_STAFF, OPERATOR),
    # People in control of meetings, and the rota.
    ("POST", "/v1/meetings/{meeting_id}/reschedule"): allow(*PLANNERS),
    ("POST", "/v1/meetings/{meeting_id}/cancel"): allow(*PLANNERS),
    ("POST", "/v1/meetings/{meeting_id}/attendees"): allow(*PLANNERS),
    ("GET", "/v1/people"): allow(*ICB_STAFF),
    ("PUT", "/v1/people/{email}"): allow(*PLANNERS),
    ("GET", "/v1/people/{email}/unavailability"): allow(*ICB_STAFF),
    ("POST", "/v1/people/{email}/unavailability"): allow(*PLANNERS),
    ("POST", "/v1/people/{email}/calendar"): allow(*PLANNERS),
    ("DELETE", "/v1/unavailability/{period_id}"): allow(*PLANNERS),
}


def identity_of(request: Request) -> Identity:
    """The caller, as the access control authenticated it."""
    identity = request.state.identity
    assert isinstance(identity, Identity)
    return identity


def visible(identity: Identity, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the caller's providers (all of them for the commissioner's people)."""
    return rows if not identity.provider_scoped else \
        [r for r in rows if identity.may_see(r.get("ods_code"))]


def hidden(identity: Identity, ods_code: str | None) -> bool:
    return not identity.may_see(ods_code)


def request_actor(request: Request) -> str:
    """Who is making this request, for the audit trail: the authenticated identity (a
    person, or a service acting for one: ``person (via service)``)."""
    return identity_of(request).actor


Actor = Annotated[str, Depends(request_actor)]


def add_routes(runtime: EscalationRuntime) -> None:
    api = runtime.http.api
    runtime.http.declare(ACCESS)
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
    async def meeting_outcome(meeting_id: uuid.UUID, body: OutcomeIn, request: Request) -> Any:
        actor = identity_of(request).actor
        return await command(lambda conn, outbox: plans.record_outcome(
            conn, outbox, meeting_id, outcome=body.outcome,
            actions=[a.new() for a in body.actions], recorded_by=actor))

    @api.post("/v1/concerns/{concern_id}/actions", tags=tags, status_code=201,
              summary="Add a remedial action (owner, due date) to a concern's plan")
    async def add_action(concern_id: uuid.UUID, body: AddActionIn, request: Request) -> Any:
        actor = identity_of(request).actor
        return await command(lambda conn, outbox: plans.add_action(
            conn, outbox, concern_id, body.new(), recorded_by=actor))

    @api.post("/v1/actions/{action_id}/complete", tags=tags,
              summary="Complete a remedial action, with the evidence of completion")
    async def complete_action(action_id: uuid.UUID, body: CompleteIn, request: Request) -> Any:
        identity = identity_of(request)

        async def work(conn: asyncpg.Connection, outbox: Outbox) -> dict[str, Any]:
            if identity.provider_scoped:
                ods_code = await conn.fetchval(
                    "SELECT c.ods_code FROM escalation.actions a JOIN escalation.concerns c"
                    " USING (concern_id) WHERE a.action_id = $1", action_id)
                if hidden(identity, ods_code):
                    raise NotFound(f"no action {action_id}")
            return await plans.complete_action(
                conn, outbox, action_id, evidence=body.evidence, completed_by=identity.actor,
                party="provider" if identity.provider_scoped else body.party)
        return await command(work)

    @api.post("/v1/concerns/{concern_id}/close", tags=tags,
              summary="Close a concern whose actions are complete (publishes concern.closed.v1)")
    async def close_concern(concern_id: uuid.UUID, body: CloseIn, request: Request) -> Any:
        actor = identity_of(request).actor
        return await command(lambda conn, outbox: plans.close_concern(
            conn, outbox, concern_id, closed_by=actor, reason=body.reason))

    # -- people in control: meetings ---------------------------------------------------------
    control = runtime.escalation.control

    @api.post("/v1/meetings/{meeting_id}/reschedule", tags=tags,
              summary="Move a meeting not yet started (to a time, or the next free slot)")
    async def reschedule(meeting_id: uuid.UUID, body: RescheduleIn, actor: Actor) -> Any:
        return await command(lambda conn, outbox: control.reschedule(
            conn, meeting_id, actor=actor, reason=body.reason, to=body.to))

    @api.post("/v1/meetings/{meeting_id}/cancel", tags=tags,
              summary="Cancel a meeting not yet started (the cancellation goes at once)")
    async def cancel(meeting_id: uuid.UUID, body: CancelIn, actor: Actor) -> Any:
        return await command(lambda conn, outbox: control.cancel(
            conn, outbox, meeting_id, actor=actor, reason=body.reason))

    @api.post("/v1/meetings/{meeting_id}/attendees", tags=tags,
              summary="Add an attendee to a meeting, or substitute one for another")
    async def attendee(meeting_id: uuid.UUID, body: AttendeeIn, actor: Actor) -> Any:
        return await command(lambda conn, outbox: control.change_attendee(
            conn, meeting_id, actor=actor, reason=body.reason, email=body.email,
            name=body.name, role=body.role, replaces=body.replaces))

    # -- the rota --------------------------------------------------------------------------
    @api.get("/v1/people", tags=tags, summary="The commissioner's people on the rota")
    async def people(role: str | None = None, active: bool | None = True) -> Any:
        return await read(lambda conn: store.list_people(conn, role, active))

    @api.put("/v1/people/{email}", tags=tags,
             summary="Add a person to the rota, or change their hours, cap, buffer, role")
    async def put_person(email: str, body: PersonIn, actor: Actor) -> Any:
        return await command(lambda conn, outbox: control.set_person(
            conn, email=email, **body.model_dump()))

    @api.get("/v1/people/{email}/unavailability", tags=tags,
             summary="A person's leave and other commitments")
    async def unavailability(email: str) -> Any:
        return await read(lambda conn: store.list_unavailability(conn, email))

    @api.post("/v1/people/{email}/unavailability", tags=tags, status_code=201,
              summary="Record a period a person cannot meet (leave, another commitment)")
    async def add_unavailable(email: str, body: UnavailableIn, actor: Actor) -> Any:
        return await command(lambda conn, outbox: control.add_unavailability(
            conn, email=email, starts_at=body.starts_at, ends_at=body.ends_at,
            reason=body.reason, actor=actor))

    @api.post("/v1/people/{email}/calendar", tags=tags,
              summary="Import busy periods from iCalendar (VFREEBUSY or VEVENT), body"
                      " text/calendar")
    async def import_calendar(email: str, request: Request, actor: Actor) -> Any:
        data = await request.body()
        if len(data) > 5_000_000:
            raise HTTPException(413, "calendar larger than 5 MB")
        return await command(lambda conn, outbox: control.import_calendar(
            conn, email=email, data=data, actor=actor))

    @api.delete("/v1/unavailability/{period_id}", tags=tags,
                summary="Remove an unavailable period")
    async def remove_unavailable(period_id: int, actor: Actor) -> Any:
        async def work(conn: asyncpg.Connection, outbox: Outbox) -> dict[str, Any]:
            removed = await store.remove_unavailability(conn, period_id)
            if removed is None:
                raise NotFound(f"no unavailable period {period_id}")
            return removed
        return await command(work)

    # -- reading ---------------------------------------------------------------------------
    @api.get("/v1/concerns", tags=tags, summary="Concerns escalation knows, newest first")
    async def concerns(request: Request,
                       status: Literal["open", "closed", "resolved"] | None = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        identity = identity_of(request)
        return visible(identity, await read(lambda conn: store.list_concerns(conn, status, limit)))

    @api.get("/v1/concerns/{concern_id}", tags=tags,
             summary="A concern with its meeting, action plan, ladder, visits and pending jobs")
    async def concern(concern_id: uuid.UUID, request: Request) -> Any:
        identity = identity_of(request)

        async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
            file = await views.concern_file(conn, concern_id)
            return None if file is None or hidden(identity, file["concern"]["ods_code"]) \
                else file
        return await read(work)

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
    async def meetings(request: Request,
                       status: Literal["scheduled", "held", "cancelled"] | None = None,
                       ods_code: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        identity = identity_of(request)
        return visible(identity, await read(
            lambda conn: store.list_meetings(conn, limit, status, ods_code)))

    @api.get("/v1/meetings/{meeting_id}", tags=tags,
             summary="One meeting: time, agenda, its concerns, attendees and their replies")
    async def meeting(meeting_id: uuid.UUID, request: Request) -> Any:
        identity = identity_of(request)

        async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
            row = await views.meeting_file(conn, meeting_id)
            return row if row and not hidden(identity, row["ods_code"]) else None
        return await read(work)

    @api.get("/v1/actions", tags=tags, summary="Remedial actions, by due date")
    async def actions(request: Request,
                      status: Literal["open", "overdue", "completed"] | None = None,
                      concern_id: uuid.UUID | None = None, ods_code: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> Any:
        identity = identity_of(request)
        return visible(identity, await read(
            lambda conn: store.list_actions(conn, status, concern_id, limit, ods_code)))

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
