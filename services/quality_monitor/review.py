"""The quality team's review of possible serious risks.

A possible risk (rule ``possible_serious_risk``: a hedge, an unqualified term, an uncertain
experiencer in the free text) raises a ``high`` concern marked for review. The team:

- confirms it: the concern becomes ``serious`` and ``concern.updated.v2`` says so, so that
  escalation books its meeting as for any serious risk;
- or dismisses it with a reason: the concern is resolved (``concern.resolved.v1``).

Either way the decision is audited with its actor, and the redacted free text behind the
concern is kept with the verdict in ``monitor.harm_evaluation`` for the evaluation corpus.
Every function takes the actor and the time explicitly; commands run in the caller's
transaction and return the event they put in the outbox.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.quality_monitor import store
from services.quality_monitor.rules import POSSIBLE_RULE
from shared.events import ConcernResolved, ConcernUpdated, ProviderRef, Severity
from shared.outbox import Outbox

STATUSES = ("pending", "confirmed", "dismissed")
SYSTEM_ACTOR = "quality-monitor"


class ReviewNotFound(LookupError):
    """No concern marked for review has that id."""


class ReviewConflict(ValueError):
    """The review is already decided, or its concern is no longer open."""


async def request(conn: asyncpg.Connection, concern_id: uuid.UUID, at: datetime,
                  actor: str = SYSTEM_ACTOR) -> bool:
    """Mark a concern for review (once: a concern already marked keeps its review)."""
    created = await conn.fetchval(
        "INSERT INTO monitor.reviews (concern_id, requested_at) VALUES ($1, $2)"
        " ON CONFLICT (concern_id) DO NOTHING RETURNING true", concern_id, at)
    if created:
        await _audit(conn, concern_id, at, actor, "requested", None)
    return bool(created)


async def list_reviews(conn: asyncpg.Connection, status: str | None = "pending",
                       limit: int = 100) -> list[dict[str, Any]]:
    """Reviews with their concern and its evidence (phrase, category, context, sentence),
    oldest pending first."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status is one of {', '.join(STATUSES)}")
    rows = await conn.fetch(
        "SELECT r.concern_id, r.status AS review, r.requested_at, r.decided_at, r.decided_by,"
        " r.reason AS review_reason, c.ods_code, c.provider->>'name' AS provider, c.theme,"
        " c.severity, c.status, c.reason, c.figures, c.evidence"
        " FROM monitor.reviews r JOIN monitor.concerns c USING (concern_id)"
        " WHERE ($1::text IS NULL OR r.status = $1) ORDER BY r.requested_at, r.concern_id"
        " LIMIT $2", status, limit)
    return [dict(r) for r in rows]


async def get_review(conn: asyncpg.Connection, concern_id: uuid.UUID) -> dict[str, Any] | None:
    rows = await conn.fetch(
        "SELECT r.concern_id, r.status AS review, r.requested_at, r.decided_at, r.decided_by,"
        " r.reason AS review_reason, c.ods_code, c.provider->>'name' AS provider, c.theme,"
        " c.severity, c.status, c.reason, c.figures, c.evidence"
        " FROM monitor.reviews r JOIN monitor.concerns c USING (concern_id)"
        " WHERE r.concern_id = $1", concern_id)
    if not rows:
        return None
    review = dict(rows[0])
    review["audit"] = [dict(r) for r in await conn.fetch(
        "SELECT at, actor, action, detail FROM monitor.review_audit WHERE concern_id = $1"
        " ORDER BY at, entry_id", concern_id)]
    return review


async def confirm(conn: asyncpg.Connection, outbox: Outbox, concern_id: uuid.UUID, *,
                  actor: str, at: datetime, reason: str | None = None) -> ConcernUpdated:
    """The quality team confirms a possible risk: the concern becomes serious (escalation
    books its meeting on the ``concern.updated`` this publishes)."""
    row = await _pending(conn, concern_id)
    note = f"confirmed as a serious risk by the quality team ({actor})" + (
        f": {reason}" if reason else "")
    figures = {**row["figures"], "review": "confirmed"}
    new_reason = f"{row['reason']}; {note}"
    await conn.execute(
        "UPDATE monitor.concerns SET severity = $2, reason = $3, figures = $4, updated_at = $5"
        " WHERE concern_id = $1", concern_id, Severity.SERIOUS.value, new_reason, figures, at)
    await _decide(conn, row, "confirmed", actor, at, reason)
    event = ConcernUpdated(
        concern_id=concern_id, fingerprint=row["fingerprint"],
        provider=ProviderRef.model_validate(row["provider"]), rule=row["rule"],
        theme=row["theme"], severity=Severity.SERIOUS,
        previous_severity=Severity(row["severity"]), reason=new_reason, figures=figures,
        evidence=[], evidence_count=len(row["evidence"]),  # no new evidence: severity only
        raised_at=row["raised_at"])
    await outbox.add(event)
    return event


async def dismiss(conn: asyncpg.Connection, outbox: Outbox, concern_id: uuid.UUID, *,
                  actor: str, at: datetime, reason: str) -> ConcernResolved:
    """The quality team dismisses a possible risk, with a reason: the concern is resolved."""
    if not reason or not reason.strip():
        raise ReviewConflict("a dismissal needs a reason")
    row = await _pending(conn, concern_id)
    await _decide(conn, row, "dismissed", actor, at, reason)
    event = await store.resolve(
        conn, concern_id, f"dismissed by the quality team ({actor}): {reason}", at)
    if event is None:  # _pending holds the row lock: the concern is open
        raise ReviewConflict(f"concern {concern_id} is not open")
    await outbox.add(event)
    return event


async def _pending(conn: asyncpg.Connection, concern_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT c.*, r.status AS review FROM monitor.reviews r"
        " JOIN monitor.concerns c USING (concern_id) WHERE r.concern_id = $1"
        " FOR UPDATE OF r, c", concern_id)
    if row is None:
        raise ReviewNotFound(f"no concern {concern_id} marked for review")
    if row["review"] != "pending":
        raise ReviewConflict(f"concern {concern_id} was already {row['review']}")
    if row["status"] != "open" or row["rule"] != POSSIBLE_RULE:
        raise ReviewConflict(f"concern {concern_id} is {row['status']}: nothing to review")
    return row


async def _decide(conn: asyncpg.Connection, row: asyncpg.Record, decision: str, actor: str,
                  at: datetime, reason: str | None) -> None:
    if not actor or not actor.strip():
        raise ReviewConflict("a review decision needs the name of who made it")
    concern_id = row["concern_id"]
    await conn.execute(
        "UPDATE monitor.reviews SET status = $2, decided_at = $3, decided_by = $4, reason = $5"
        " WHERE concern_id = $1", concern_id, decision, at, actor, reason)
    await _audit(conn, concern_id, at, actor, decision, reason)
    await _keep_for_evaluation(conn, row, decision, actor, at, reason)


async def _audit(conn: asyncpg.Connection, concern_id: uuid.UUID, at: datetime, actor: str,
                 action: str, detail: str | None) -> None:
    await conn.execute(
        "INSERT INTO monitor.review_audit (concern_id, at, actor, action, detail)"
        " VALUES ($1, $2, $3, $4, $5)", concern_id, at, actor, action, detail)


async def _keep_for_evaluation(conn: asyncpg.Connection, row: asyncpg.Record, decision: str,
                               actor: str, at: datetime, reason: str | None) -> None:
    """The (already redacted: intake redacts before publishing) free text of each item
    behind the concern, with the pipeline's reading and the verdict."""
    feedback_ids = [uuid.UUID(str(e["feedback_id"])) for e in row["evidence"]]
    mentions = row["figures"].get("harm_in_text", {}).get("mentions", [])
    await conn.execute(
        "INSERT INTO monitor.harm_evaluation (concern_id, feedback_id, text, mentions,"
        " decision, reason, decided_by, decided_at)"
        " SELECT $1, f.feedback_id, coalesce(f.content->>'description', f.content->>'comment',"
        " ''), $3, $4, $5, $6, $7 FROM monitor.feedback f WHERE f.feedback_id = ANY($2)"
        " ON CONFLICT (concern_id, feedback_id) DO NOTHING",
        row["concern_id"], feedback_ids, mentions, decision, reason, actor, at)
