"""Admission: intake's one way in. Every door (AMQP, HTTP, the bulk loader, a quarantine
resubmission) hands submissions to ``Admissions.admit_many``, which validates, authorises,
redacts, de-duplicates, stores or quarantines them, writes a receipt and puts the events in
the outbox, all in one transaction per batch.

Outcomes:
- ``accepted``: stored, ``feedback.accepted`` published (for a bulk message's items, one
  ``feedback.accepted_batch`` with every item of the message stored now).
- ``duplicate``: the provider's record (ODS code + record id) was accepted before; counted on
  the stored feedback (unless the broker is redelivering the same message).
- ``rejected``: quarantined with machine-readable reasons, ``feedback.rejected`` published,
  and sent back to the publisher's ``reply_to`` queue when it gave one.
- ``bulk``: a bulk message (``bulk_message.py``) read: each of its items has one of the
  outcomes above (``Admission.items``). One that cannot be read is ``rejected`` whole.

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

from services.intake import bulk_message, store
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
from shared.events import (
    FeedbackAccepted,
    FeedbackAcceptedBatch,
    FeedbackRejected,
    ProviderRef,
    RejectionReason,
)
from shared.outbox import Outbox, OutboxRow
from shared.ratelimit import RateLimiter

log = logging.getLogger(__name__)

ACCEPTED, DUPLICATE, REJECTED, BULK = "accepted", "duplicate", "rejected", "bulk"
# Batches holding more than this many bytes are validated and redacted in a worker thread,
# so that the event loop keeps answering (health checks, the urgent lane) meanwhile.
OFF_LOOP_BYTES = 64 * 1024
# Items of a batch read in one turn of the event loop (about 0.3 ms each): the loop, and an
# urgent delivery waiting for it, never waits for a whole batch's reading.
PARSE_PIECE = 10
# At most this many submissions (bulk messages' items included) are written in one
# transaction: a batch of bulk messages is admitted in several (a message never split).
MAX_TRANSACTION_ITEMS = 2_000


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
    # An item of a bulk message: the message's submission id (its accepted items are
    # announced together, in one ``feedback.accepted_batch`` event).
    bulk_of: uuid.UUID | None = None

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
    items: list[Admission] | None = None  # a bulk message's: each item's, in order

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"submission_id": str(self.submission_id),
                               "outcome": self.outcome}
        if self.items is not None:
            out.update(totals(self.items))
            out["items"] = [item.as_json() for item in self.items]
        if self.feedback_id:
            out["feedback_id"] = str(self.feedback_id)
        if self.reasons:
            out["reasons"] = [r.model_dump() for r in self.reasons]
        if self.replay:
            out["replay"] = True
            out["first_outcome"] = self.first_outcome
        return out


def totals(admissions: Sequence[Admission]) -> dict[str, int]:
    """How many of ``admissions`` were accepted, duplicates, rejected."""
    return {o: sum(a.outcome == o for a in admissions) for o in (ACCEPTED, DUPLICATE, REJECTED)}


@dataclass(frozen=True)
class Message:
    """What one message became: the submissions to admit (itself, or a bulk message's
    items), each parsed or with why it is invalid."""

    incoming: Incoming
    units: list[Incoming]
    parsed: list[Parsed | list[RejectionReason]]
    bulk: bool = False


def read_message(item: Incoming) -> Message:
    """A message as the submissions to admit: a bulk message (read once) as its items, each
    parsed on its own; any other message (or a bulk message that cannot be read: quarantined
    whole, with why) as itself."""
    if bulk_message.is_bulk(item.routing_key):
        read = bulk_message.read_bulk(item.body, item.content_type, item.size)
        if isinstance(read, tuple):
            kind, bodies = read
            units = bulk_message.items_of(item, kind, bodies)
            return Message(item, units, [bulk_message.wrong_kind(parse(u.body), kind)
                                         for u in units], bulk=True)
        return Message(item, [item], [read])
    return Message(item, [item], [parse(item.body, item.content_type, item.size)])


def read_messages(items: Sequence[Incoming]) -> list[Message]:
    return [read_message(i) for i in items]


def in_transactions(messages: Sequence[Message],
                    limit: int = MAX_TRANSACTION_ITEMS) -> list[list[Message]]:
    """Messages grouped for their transactions: at most ``limit`` submissions in each, but
    a message (a bulk message's items) never split across two."""
    groups: list[list[Message]] = []
    held = 0
    for m in messages:
        if not groups or held + len(m.units) > limit:
            groups.append([])
            held = 0
        groups[-1].append(m)
        held += len(m.units)
    return groups


def written(outbox: Outbox, rows: Sequence[tuple[str, uuid.UUID, OutboxRow]],
            stored: set[uuid.UUID], kept: set[uuid.UUID]) -> None:
    """The outbox rows the batch's statement wrote (``store.admit_batch``'s gates)."""
    outbox.written([o.envelope for gate, sid, o in rows
                    if gate == store.ALWAYS or sid in (stored if gate == store.STORED
                                                       else kept)])


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
        """Admit a batch of messages, in one statement (``_admit``; in several for a batch of
        bulk messages holding more than ``MAX_TRANSACTION_ITEMS`` submissions); one Admission
        per message, in order. The batch is read (validated, redacted) ``PARSE_PIECE``
        messages at a time, the loop getting a turn between pieces (a piece of more than
        ``OFF_LOOP_BYTES``, such as a bulk message, is read in a worker thread)."""
        messages: list[Message] = []
        for start in range(0, len(items), PARSE_PIECE):
            if start:
                await asyncio.sleep(0)
            piece = items[start:start + PARSE_PIECE]
            if sum(len(i.body) for i in piece) > OFF_LOOP_BYTES:
                messages.extend(await asyncio.to_thread(read_messages, piece))
            else:
                messages.extend(read_messages(piece))
        admitted: list[Admission] = []
        for group in in_transactions(messages):
            units = [u for m in group for u in m.units]
            parsed = [p for m in group for p in m.parsed]
            async with self._pool().acquire() as conn:
                results = iter(await self._admit(conn, units, parsed))
            for m in group:
                mine = [next(results) for _ in m.units]
                admitted.append(Admission(m.incoming.submission_id, BULK, items=mine)
                                if m.bulk else mine[0])
        return admitted

    async def _admit(self, conn: asyncpg.Connection, items: Sequence[Incoming],
                     parsed: list[Parsed | list[RejectionReason]]) -> list[Admission]:
        """Two round trips for a batch: what was received before (and the registry's
        version), then every write in one statement (store.admit_batch: what is stored or
        quarantined, the events, the receipts, replays' replies and every duplicate count),
        atomic on its own. A batch with a bulk message's items writes their one event, which
        needs the statement's result, in the same transaction."""
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
        in_bulk: dict[tuple[uuid.UUID, str], list[FeedbackAccepted]] = {}
        for n, row, provider in to_store:
            accepted = FeedbackAccepted(
                feedback_id=row.feedback_id, submission_id=row.submission_id,
                provider=provider, kind=row.kind, provider_record_id=row.provider_record_id,
                occurred_on=row.occurred_on, theme=row.theme,
                site_code=row.content.get("site_code"), content=row.content)
            bulk_of = items[n].bulk_of
            if bulk_of is not None:  # announced with the message's others, once stored
                in_bulk.setdefault((bulk_of, row.kind), []).append(accepted)
            else:
                rows.append((store.STORED, row.submission_id,
                             outbox.row(accepted, submission_id=row.submission_id)))
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
        # Replays: what became of the first copy is known before the write (its receipt, or
        # its verdict in this batch), so a replay's reply and count go in the statement too.
        quarantined_now = {q.submission_id: (q, valid) for _, q, valid in to_quarantine}
        to_store_at = {n: row for n, row, _ in to_store}
        replayed: dict[int, tuple[bool, list[RejectionReason]]] = {}
        counts: Counter[tuple[str, str]] = Counter()
        for n in replays:
            item, sid = items[n], sids[n]
            if sid in earlier:
                receipt = earlier[sid]
                rejected = receipt["outcome"] == REJECTED
                key = (receipt["ods_code"], receipt["provider_record_id"])
                reasons = [RejectionReason(**r) for r in receipt["reasons"] or []]
            elif sid in quarantined_now:
                q, valid = quarantined_now[sid]
                rejected, reasons = True, q.reasons
                key = ((valid.submission.ods_code, valid.submission.record_id) if valid
                       else (None, None))
            else:
                row = to_store_at[first_in_batch[sid]]
                rejected, reasons, key = False, [], (row.ods_code, row.provider_record_id)
            replayed[n] = (rejected, reasons)
            if rejected:  # answered again, when the publisher asks for a reply
                queue = self._reply_queue(item)
                if queue:
                    rows.append((store.ALWAYS, sid, outbox.row(
                        FeedbackRejected(submission_id=sid, feed_user=item.feed_user,
                                         ods_code=key[0], provider_record_id=key[1],
                                         reasons=reasons),
                        submission_id=sid, reply_to=queue,
                        correlation_id=item.correlation_id or item.message_id)))
            elif not item.redelivered and key[0] and key[1]:
                counts[(key[0], key[1])] += 1  # the provider sent it again
        redelivered = {sids[n] for n, _, _ in to_store if items[n].redelivered}

        async def admit() -> set[uuid.UUID]:
            stored, kept = await store.admit_batch(
                conn, [row for _, row, _ in to_store], [q for _, q, _ in to_quarantine], rows,
                receipts, redelivered, counts)
            written(outbox, rows, stored, kept)
            self._settle(to_store, to_quarantine, stored, kept, results)
            for n, (rejected, reasons) in replayed.items():
                sid = sids[n]
                prior = None if sid in earlier else results[first_in_batch[sid]]
                first = earlier[sid]["outcome"] if prior is None else prior.outcome
                results[n] = Admission(sid, REJECTED if rejected else DUPLICATE, reasons,
                                       replay=True, first_outcome=first)
            return stored

        if not in_bulk:
            await admit()  # one statement: no transaction needed
            return [r for r in results if r is not None]
        async with conn.transaction():
            stored = await admit()
            # A bulk message's items stored now, in one event (duplicates and replays not).
            await outbox.add_many([
                (FeedbackAcceptedBatch(kind=kind, items=now), bulk_of)
                for (bulk_of, kind), accepted in in_bulk.items()
                if (now := [a for a in accepted if a.submission_id in stored])])
        return [r for r in results if r is not None]

    @staticmethod
    def _settle(to_store: list[tuple[int, store.FeedbackRow, ProviderRef]],
                to_quarantine: list[tuple[int, store.QuarantineRow, Parsed | None]],
                stored: set[uuid.UUID], kept: set[uuid.UUID],
                results: list[Admission | None]) -> None:
        """Each first copy's outcome, from what the batch's statement stored and kept."""
        for n, row, _ in to_store:
            results[n] = (Admission(row.submission_id, ACCEPTED, feedback_id=row.feedback_id)
                          if row.submission_id in stored
                          else Admission(row.submission_id, DUPLICATE))
        for n, q, _ in to_quarantine:
            results[n] = Admission(q.submission_id, REJECTED, q.reasons)
            if q.submission_id in kept:
                log.info("submission %s from %s rejected: %s", q.submission_id,
                         q.feed_user, _describe(q.reasons))

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
