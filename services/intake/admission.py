"""Admission: intake's one way in. Every door (AMQP, HTTP, the bulk loader, a quarantine
resubmission) hands submissions to ``Admissions.admit_many``, which validates, authorises,
redacts, de-duplicates, stores or quarantines them, writes a receipt and puts the events in
the outbox, all in one transaction per batch.

Outcomes:
- ``accepted``: stored, ``feedback.accepted`` published.
- ``duplicate``: the provider's record (ODS code + record id) was accepted before; counted on
  the stored feedback (unless the broker is redelivering the same message).
- ``rejected``: quarantined with machine-readable reasons, ``feedback.rejected`` published,
  and sent back to the publisher's ``reply_to`` queue when it gave one.

A *replay* is the very same submission again (same feed, message id and bytes, hence the same
submission id): it changes nothing but the duplicate count, and reports what became of the
first copy (``first_outcome``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.intake import store
from services.intake.classification import (
    Store,
    classify,
    first_copies,
    lane_problem,
    rate_limited,
    reply_queue,
    urgent_routing_key,
)
from services.intake.validation import Parsed, parse, submission_id
from shared.events import FeedbackAccepted, FeedbackRejected, ProviderRef, RejectionReason
from shared.outbox import Outbox, OutboxRow
from shared.ratelimit import RateLimiter

log = logging.getLogger(__name__)

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
# Batches holding more than this many bytes are validated and redacted in a worker thread,
# so that the event loop keeps answering (health checks, the urgent lane) meanwhile.
OFF_LOOP_BYTES = 64 * 1024
# Items of a batch read in one turn of the event loop (about 0.3 ms each): the loop, and an
# urgent delivery waiting for it, never waits for a whole batch's reading.
PARSE_PIECE = 10


@dataclass(frozen=True)
class Incoming:
    """One submission as it arrived, whichever door it came through."""

    body: bytes
    feed_user: str | None
    message_id: str | None = None
    routing_key: str | None = None
    content_type: str | None = None
    redelivered: bool = False  # the broker delivers this message again
    reply_to: str | None = None
    correlation_id: str | None = None
    size: int | None = None  # the full size, when ``body`` is only the beginning
    resubmission_of: uuid.UUID | None = None

    @property
    def submission_id(self) -> uuid.UUID:
        return submission_id(self.feed_user, self.message_id, self.body)


@dataclass(frozen=True)
class Admission:
    """What became of one submission."""

    submission_id: uuid.UUID
    outcome: str
    reasons: list[RejectionReason] = field(default_factory=list)
    feedback_id: uuid.UUID | None = None
    replay: bool = False
    first_outcome: str | None = None  # for a replay: the outcome of the first copy

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"submission_id": str(self.submission_id),
                               "outcome": self.outcome}
        if self.feedback_id:
            out["feedback_id"] = str(self.feedback_id)
        if self.reasons:
            out["reasons"] = [r.model_dump() for r in self.reasons]
        if self.replay:
            out["replay"] = True
            out["first_outcome"] = self.first_outcome
        return out


def _describe(reasons: list[RejectionReason]) -> str:
    return "; ".join(f"{r.loc or '<message>'}: {r.msg}" for r in reasons)


class Admissions:
    """Admits submissions into intake's schema and outbox."""

    def __init__(self, pool: Callable[[], asyncpg.Pool],
                 outbox: Callable[[asyncpg.Connection], Outbox], namespace: str,
                 keep_body_bytes: int, urgent_limiter: RateLimiter | None = None) -> None:
        self._pool = pool
        self._outbox = outbox
        self._namespace = namespace
        self._keep_body_bytes = keep_body_bytes
        self._urgent_limiter = urgent_limiter
        self._registry = store.RegistryCache()

    async def admit(self, item: Incoming) -> Admission:
        [admission] = await self.admit_many([item])
        return admission

    async def admit_many(self, items: Sequence[Incoming]) -> list[Admission]:
        """Admit a batch in one transaction; one Admission per item, in order. The batch is
        read (validated, redacted) ``PARSE_PIECE`` items at a time, the loop getting a turn
        between pieces."""
        parsed: list[Parsed | list[RejectionReason]] = []
        for start in range(0, len(items), PARSE_PIECE):
            if start:
                await asyncio.sleep(0)
            piece = items[start:start + PARSE_PIECE]
            if sum(len(i.body) for i in piece) > OFF_LOOP_BYTES:
                parsed.extend(await asyncio.to_thread(_parse_all, piece))
            else:
                parsed.extend(_parse_all(piece))
        async with self._pool().acquire() as conn, conn.transaction():
            return await self._admit(conn, items, parsed)

    async def _admit(self, conn: asyncpg.Connection, items: Sequence[Incoming],
                     parsed: list[Parsed | list[RejectionReason]]) -> list[Admission]:
        # Two round trips for a batch: what was received before (and the registry's
        # version), then every write in one statement (store.admit_batch).
        sids = [i.submission_id for i in items]
        earlier, version = await store.receipts_and_registry_version(conn, set(sids))
        registry = await self._registry.at(conn, version)

        results: list[Admission | None] = [None] * len(items)
        first_in_batch, replays = first_copies(sids, earlier)
        to_store: list[tuple[int, store.FeedbackRow, ProviderRef]] = []
        to_quarantine: list[tuple[int, store.QuarantineRow, Parsed | None]] = []
        for n in first_in_batch.values():
            item, p = items[n], parsed[n]
            lane = self._lane_check(item, p.submission.kind) if isinstance(p, Parsed) else None
            verdict = classify(sids[n], p, feed_user=item.feed_user, reply_to=item.reply_to,
                               registry=registry, namespace=self._namespace, lane=lane)
            if isinstance(verdict, Store):
                to_store.append((n, verdict.row, verdict.provider))
            else:
                to_quarantine.append((n, self._quarantine_row(item, sids[n], verdict.reasons),
                                      verdict.valid))

        # Each submission's event is written if it is stored (or quarantined) now; its
        # receipt says what became of it.
        outbox = self._outbox(conn)
        rows: list[tuple[str, uuid.UUID, OutboxRow]] = []
        receipts: list[store.Receipt] = []
        for _, row, provider in to_store:
            rows.append((store.STORED, row.submission_id, outbox.row(FeedbackAccepted(
                feedback_id=row.feedback_id, submission_id=row.submission_id,
                provider=provider, kind=row.kind, provider_record_id=row.provider_record_id,
                occurred_on=row.occurred_on, theme=row.theme,
                site_code=row.content.get("site_code"), content=row.content),
                submission_id=row.submission_id)))
            receipts.append(store.Receipt(row.submission_id, row.feed_user, DUPLICATE, None,
                                          row.ods_code, row.provider_record_id))
        for n, q, valid in to_quarantine:
            ods, kind, record = ((valid.submission.ods_code, valid.submission.kind,
                                  valid.submission.record_id) if valid else (None, None, None))
            event = FeedbackRejected(
                submission_id=q.submission_id, feed_user=q.feed_user, ods_code=ods, kind=kind,
                provider_record_id=record, reasons=q.reasons)
            rows.append((store.KEPT, q.submission_id,
                         outbox.row(event, submission_id=q.submission_id)))
            queue = self._reply_queue(items[n])
            if queue:
                rows.append((store.ALWAYS, q.submission_id, outbox.row(
                    event, submission_id=q.submission_id, reply_to=queue,
                    correlation_id=items[n].correlation_id or items[n].message_id)))
            receipts.append(store.Receipt(q.submission_id, q.feed_user, REJECTED, None,
                                          ods, record))
        stored, kept = await store.admit_batch(
            conn, [row for _, row, _ in to_store], [q for _, q, _ in to_quarantine], rows,
            receipts)
        outbox.written([o.envelope for gate, sid, o in rows
                        if gate == store.ALWAYS or sid in (stored if gate == store.STORED
                                                           else kept)])

        duplicates: Counter[tuple[str, str]] = Counter()
        for n, row, _ in to_store:
            if row.submission_id in stored:
                results[n] = Admission(row.submission_id, ACCEPTED, feedback_id=row.feedback_id)
            else:
                results[n] = Admission(row.submission_id, DUPLICATE)
                if not items[n].redelivered:
                    duplicates[(row.ods_code, row.provider_record_id)] += 1
        for n, q, _ in to_quarantine:
            results[n] = Admission(q.submission_id, REJECTED, q.reasons)
            if q.submission_id in kept:
                log.info("submission %s from %s rejected: %s", q.submission_id,
                         q.feed_user, _describe(q.reasons))

        for n in replays:
            results[n] = await self._replay(outbox, items[n], sids[n], earlier,
                                            results, first_in_batch, duplicates)
        await store.count_duplicates(conn, dict(duplicates))
        return [r for r in results if r is not None]

    async def _replay(self, outbox: Outbox, item: Incoming,
                      sid: uuid.UUID, earlier: dict[uuid.UUID, asyncpg.Record],
                      results: list[Admission | None], first_in_batch: dict[uuid.UUID, int],
                      duplicates: Counter[tuple[str, str]]) -> Admission:
        """The same submission again: nothing changes but the duplicate count; a rejected
        one is answered again with its reasons when the publisher asks for a reply."""
        if sid in earlier:
            receipt = earlier[sid]
            first = receipt["outcome"]
            key = (receipt["ods_code"], receipt["provider_record_id"])
            reasons = [RejectionReason(**r) for r in receipt["reasons"] or []]
        else:
            prior = results[first_in_batch[sid]]
            assert prior is not None
            first, reasons = prior.outcome, prior.reasons
            parsed = parse(item.body, item.content_type, item.size)
            key = ((parsed.submission.ods_code, parsed.submission.record_id)
                   if isinstance(parsed, Parsed) else (None, None))
        if first == REJECTED:
            await self._reply(outbox, item, FeedbackRejected(
                submission_id=sid, feed_user=item.feed_user, ods_code=key[0],
                provider_record_id=key[1], reasons=reasons))
            return Admission(sid, REJECTED, reasons, replay=True, first_outcome=first)
        if not item.redelivered and key[0] and key[1]:
            duplicates[(key[0], key[1])] += 1
        return Admission(sid, DUPLICATE, replay=True, first_outcome=first)

    def _lane_check(self, item: Incoming, kind: str) -> RejectionReason | None:
        """A routine kind on an urgent key, or a feed over its urgent-lane rate limit (a
        resubmission by an operator is neither)."""
        if item.resubmission_of is not None:
            return None
        problem = lane_problem(item.routing_key, kind)
        if problem is None and self._urgent_limiter is not None and \
                urgent_routing_key(item.routing_key) and \
                not self._urgent_limiter.take(item.feed_user or ""):
            problem = rate_limited(item.feed_user, self._urgent_limiter)
        return problem

    def _quarantine_row(self, item: Incoming, sid: uuid.UUID,
                        reasons: list[RejectionReason]) -> store.QuarantineRow:
        return store.QuarantineRow(
            submission_id=sid, feed_user=item.feed_user, routing_key=item.routing_key,
            message_id=item.message_id, content_type=item.content_type,
            # An oversized body is kept only in part: enough to see what it was.
            body=item.body[:self._keep_body_bytes],
            body_size=item.size if item.size is not None else len(item.body),
            reasons=reasons, reply_to=item.reply_to, correlation_id=item.correlation_id,
            resubmission_of=item.resubmission_of)

    def _reply_queue(self, item: Incoming) -> str | None:
        """Where a rejection is sent back: the publisher's reply queue, if it may have one
        (and not again for a message the broker redelivers)."""
        return None if item.redelivered else \
            reply_queue(item.reply_to, item.feed_user, self._namespace)

    async def _reply(self, outbox: Outbox, item: Incoming, event: FeedbackRejected) -> None:
        queue = self._reply_queue(item)
        if queue:
            await outbox.add(event, submission_id=event.submission_id, reply_to=queue,
                             correlation_id=item.correlation_id or item.message_id)


def _parse_all(items: Sequence[Incoming]) -> list[Parsed | list[RejectionReason]]:
    return [parse(i.body, i.content_type, i.size) for i in items]
