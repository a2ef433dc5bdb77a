"""Fakes shared by the handler unit tests (cosmicpython's service-layer tests): an outbox, a
clock and a durable schedule in memory. Each service's fake store stays with its tests (or
in ``fake_escalation_store``): it answers that service's queries over dicts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg

from shared.envelope import Envelope
from shared.events import Event
from shared.outbox import Outbox, OutboxRow

SOURCE = "unit-test"


class FakeOutbox:
    """What one transaction would publish, without a database: ``add`` keeps the event and
    returns its envelope (a real one for an event, as ``shared.outbox.Outbox.add`` does).
    ``handled`` is the envelope of the event being handled (sent ``at``; its ``id`` and
    ``time`` are what handlers read) and ``cause`` is it, or None for work no event caused
    (``caused=False``)."""

    def __init__(self, *, at: datetime | None = None, caused: bool = True) -> None:
        self.handled = Envelope(source=SOURCE, type="unit.cause.v1", data={},
                                time=at or datetime.now(UTC))
        self.cause: Envelope | None = self.handled if caused else None
        self.added: list[Envelope] = []
        self.events: list[Any] = []  # what ``add`` was given, with its options beside it
        self.options: list[dict[str, Any]] = []
        # ``row`` is the real Outbox's (it builds the row without touching the connection).
        self._rows = Outbox(cast(asyncpg.Connection, None), "unit", "unit.events", SOURCE)

    async def add(self, event: Any, **options: Any) -> Envelope:
        envelope = event.envelope(SOURCE, options.get("submission_id")) \
            if isinstance(event, Event) else Envelope(source=SOURCE, type="unit.value.v1",
                                                      data={"value": str(event)})
        self.added.append(envelope)
        self.events.append(event)
        self.options.append(options)
        return envelope

    async def add_many(self, events: list[tuple[Event, uuid.UUID | None]]) -> list[Envelope]:
        return [await self.add(event, submission_id=sid) for event, sid in events]

    def row(self, event: Event, *, submission_id: uuid.UUID | None = None,
            reply_to: str | None = None, correlation_id: str | None = None) -> OutboxRow:
        return self._rows.row(event, submission_id=submission_id, reply_to=reply_to,
                              correlation_id=correlation_id)

    def written(self, envelopes: list[Envelope]) -> None:
        """Rows from ``row`` that the caller's own statement wrote (as ``Outbox.written``)."""
        self.added.extend(envelopes)

    def of(self, kind: type[Any]) -> list[Any]:
        """The events added of this type (subclasses included)."""
        return [e for e in self.events if isinstance(e, kind)]


class FakeClock:
    """A clock that stands still until told: ``clock()`` is ``now``; ``advance`` moves it."""

    def __init__(self, now: datetime = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class FakeSchedule:
    """The durable schedule (``services.escalation.schedule``'s functions) over a dict of
    jobs by id: a ``dedupe_key`` adds a job once; cancelling marks pending jobs done."""

    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)

    async def schedule(self, conn: object, *, kind: str, due_at: datetime,
                       payload: dict[str, Any], concern_id: uuid.UUID | None = None,
                       dedupe_key: str | None = None) -> bool:
        if dedupe_key is not None and any(j["dedupe_key"] == dedupe_key
                                           for j in self.jobs.values()):
            return False
        job_id = len(self.jobs) + 1
        self.jobs[job_id] = {"id": job_id, "kind": kind, "due_at": due_at, "payload": payload,
                             "concern_id": concern_id, "dedupe_key": dedupe_key,
                             "done": None}
        return True

    async def cancel_for_concern(self, conn: object, concern_id: uuid.UUID, now: datetime,
                                 why: str) -> int:
        return self._cancel([j for j in self.waiting() if j["concern_id"] == concern_id], why)

    async def cancel(self, conn: object, dedupe_keys: list[str], now: datetime,
                     why: str) -> int:
        return self._cancel([j for j in self.waiting() if j["dedupe_key"] in dedupe_keys], why)

    def _cancel(self, jobs: list[dict[str, Any]], why: str) -> int:
        for job in jobs:
            job["done"] = why
        return len(jobs)

    def waiting(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [j for j in self.jobs.values()
                if j["done"] is None and (kind is None or j["kind"] == kind)]
