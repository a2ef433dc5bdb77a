"""quality-monitor's tables: its copy of accepted feedback, and concerns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.events import (
    ConcernRaised,
    ConcernUpdated,
    Evidence,
    FeedbackAccepted,
    ProviderRef,
    Severity,
)

SCHEMA = "monitor"


async def record_feedback(conn: asyncpg.Connection, fb: FeedbackAccepted) -> None:
    await conn.execute(
        "INSERT INTO monitor.feedback (feedback_id, submission_id, ods_code, site_code, kind,"
        " theme, occurred_on, content) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT DO NOTHING",
        fb.feedback_id, fb.submission_id, fb.provider.ods_code, fb.site_code, fb.kind, fb.theme,
        fb.occurred_on, fb.content)


async def raise_or_update(conn: asyncpg.Connection, *, fingerprint: str, provider: ProviderRef,
                          rule: str, theme: str, severity: Severity, reason: str,
                          figures: dict[str, Any],
                          evidence: list[Evidence]) -> ConcernRaised | ConcernUpdated | None:
    """Open a concern for ``fingerprint`` or add the evidence to the open one.

    Severity may rise, never silently fall. Returns the event to publish, or None when the
    evidence was already on the concern.
    """
    evidence_json = [e.model_dump(mode="json") for e in evidence]
    while True:
        row = await conn.fetchrow(
            "SELECT * FROM monitor.concerns WHERE fingerprint = $1 AND status = 'open'"
            " FOR UPDATE", fingerprint)
        if row is None:
            concern_id = uuid.uuid4()
            raised_at = await conn.fetchval(
                "INSERT INTO monitor.concerns (concern_id, fingerprint, ods_code, provider, rule,"
                " theme, severity, reason, figures, evidence)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                " ON CONFLICT (fingerprint) WHERE status = 'open' DO NOTHING RETURNING raised_at",
                concern_id, fingerprint, provider.ods_code, provider.model_dump(mode="json"),
                rule, theme, severity.value, reason, figures, evidence_json)
            if raised_at is None:  # another replica opened it first: update theirs
                continue
            return ConcernRaised(
                concern_id=concern_id, fingerprint=fingerprint, provider=provider, rule=rule,
                theme=theme, severity=severity, reason=reason, figures=figures,
                evidence=evidence, raised_at=raised_at)
        known = {e["feedback_id"] for e in row["evidence"]}
        new = [e for e in evidence_json if e["feedback_id"] not in known]
        if not new:
            return None
        previous = Severity(row["severity"])
        current = severity if severity.rank > previous.rank else previous
        all_evidence = [*row["evidence"], *new]
        await conn.execute(
            "UPDATE monitor.concerns SET evidence = $2, severity = $3, reason = $4, figures = $5,"
            " updated_at = $6 WHERE concern_id = $1",
            row["concern_id"], all_evidence, current.value, reason, figures, datetime.now(UTC))
        return ConcernUpdated(
            concern_id=row["concern_id"], fingerprint=fingerprint, provider=provider, rule=rule,
            theme=theme, severity=current, previous_severity=previous, reason=reason,
            figures=figures, evidence=[Evidence.model_validate(e) for e in all_evidence],
            raised_at=row["raised_at"])


async def list_concerns(conn: asyncpg.Connection, status: str | None = "open",
                        limit: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM monitor.concerns WHERE ($1::text IS NULL OR status = $1)"
        " ORDER BY raised_at DESC LIMIT $2", status, limit)
