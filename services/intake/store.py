"""intake's tables: the provider registry, feeds, accepted feedback and the quarantine."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg

from shared.events import FULL_EMAIL_CHECK, ProviderRef, RejectionReason

SCHEMA = "intake"
SAMPLE_PROVIDERS = Path(__file__).resolve().parents[2] / "data" / "providers.csv"


def read_providers_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    required = {"ods_code", "name", "provider_type", "quality_contact_email"}
    if rows and not required <= set(rows[0]):
        raise ValueError(f"{path}: columns must include {sorted(required)}")
    for row in rows:  # validates the e-mail address in full and the rest of the snapshot
        FULL_EMAIL_CHECK.validate_python(row["quality_contact_email"].strip())
        ProviderRef(**{k: row[k] for k in required})
    return rows


async def upsert_providers(conn: asyncpg.Connection, rows: Iterable[dict[str, str]]) -> int:
    records = [(r["ods_code"].strip().upper(), r["name"].strip(), r["provider_type"].strip(),
                r["quality_contact_email"].strip(), (r.get("region") or "").strip() or None)
               for r in rows]
    await conn.executemany(
        "INSERT INTO intake.providers (ods_code, name, provider_type, quality_contact_email, region)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ods_code) DO UPDATE SET name = $2,"
        " provider_type = $3, quality_contact_email = $4, region = $5, updated_at = now()",
        records)
    return len(records)


async def list_providers(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM intake.providers ORDER BY ods_code")


async def register_feed(conn: asyncpg.Connection, feed_user: str, ods_codes: list[str],
                        description: str = "") -> None:
    """Create (or re-enable) a feed and allow it to submit for ``ods_codes``."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO intake.feeds (feed_user, description) VALUES ($1, $2)"
            " ON CONFLICT (feed_user) DO UPDATE SET revoked_at = NULL,"
            " description = COALESCE(NULLIF($2, ''), intake.feeds.description)",
            feed_user, description)
        unknown = await conn.fetchval(
            "SELECT array_agg(c) FROM unnest($1::text[]) c"
            " WHERE c NOT IN (SELECT ods_code FROM intake.providers)", ods_codes)
        if unknown:
            raise ValueError(f"unknown ODS codes: {', '.join(unknown)}")
        await conn.executemany(
            "INSERT INTO intake.feed_providers VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(feed_user, c) for c in ods_codes])


@dataclass(frozen=True)
class Registry:
    """What intake knows about the providers and feeds of one batch of submissions."""

    providers: dict[str, ProviderRef] = field(default_factory=dict)
    active_feeds: frozenset[str] = frozenset()
    grants: frozenset[tuple[str, str]] = frozenset()  # (feed_user, ods_code)


async def registry_for(conn: asyncpg.Connection, feed_users: Collection[str],
                       ods_codes: Collection[str]) -> Registry:
    """The providers among ``ods_codes`` and what ``feed_users`` may submit for them."""
    providers = await conn.fetch(
        "SELECT ods_code, name, provider_type, quality_contact_email FROM intake.providers"
        " WHERE ods_code = ANY($1::text[])", list(ods_codes))
    feeds = await conn.fetch(
        "SELECT f.feed_user, fp.ods_code FROM intake.feeds f"
        " LEFT JOIN intake.feed_providers fp ON fp.feed_user = f.feed_user"
        "  AND fp.ods_code = ANY($2::text[])"
        " WHERE f.feed_user = ANY($1::text[]) AND f.revoked_at IS NULL",
        list(feed_users), list(ods_codes))
    return Registry(
        providers={r["ods_code"]: ProviderRef(**dict(r)) for r in providers},
        active_feeds=frozenset(r["feed_user"] for r in feeds),
        grants=frozenset((r["feed_user"], r["ods_code"]) for r in feeds if r["ods_code"]))


@dataclass(frozen=True)
class FeedbackRow:
    feedback_id: uuid.UUID
    submission_id: uuid.UUID
    ods_code: str
    provider_record_id: str
    kind: str
    version: int
    occurred_on: date
    theme: str | None
    content: dict[str, Any]
    redactions: dict[str, int]
    feed_user: str | None


async def insert_feedback(conn: asyncpg.Connection,
                          rows: Sequence[FeedbackRow]) -> set[uuid.UUID]:
    """Store accepted feedback; returns the submission ids stored now (the others are a
    provider record, or a submission, already stored: duplicates)."""
    if not rows:
        return set()
    inserted = await conn.fetchmany(
        "INSERT INTO intake.feedback (feedback_id, submission_id, ods_code, provider_record_id,"
        " kind, version, occurred_on, theme, content, redactions, feed_user)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT DO NOTHING RETURNING submission_id",
        [(r.feedback_id, r.submission_id, r.ods_code, r.provider_record_id, r.kind, r.version,
          r.occurred_on, r.theme, r.content, r.redactions, r.feed_user)
         # One order for every batch, so that concurrent batches never deadlock.
         for r in sorted(rows, key=lambda r: (r.ods_code, r.provider_record_id))])
    return {r["submission_id"] for r in inserted}


async def count_duplicates(conn: asyncpg.Connection,
                           counts: dict[tuple[str, str], int]) -> None:
    """Count further copies of provider records already accepted, by (ODS code, record id)."""
    if counts:
        await conn.executemany(
            "UPDATE intake.feedback SET duplicates = duplicates + $3"
            " WHERE ods_code = $1 AND provider_record_id = $2",
            [(ods, record, n) for (ods, record), n in sorted(counts.items())])


@dataclass(frozen=True)
class QuarantineRow:
    submission_id: uuid.UUID
    feed_user: str | None
    routing_key: str | None
    message_id: str | None
    content_type: str | None
    body: bytes
    body_size: int
    reasons: list[RejectionReason]
    reply_to: str | None = None
    correlation_id: str | None = None
    resubmission_of: uuid.UUID | None = None


async def quarantine(conn: asyncpg.Connection, rows: Sequence[QuarantineRow]) -> set[uuid.UUID]:
    """Keep rejected submissions with their reasons; returns the submission ids kept now
    (the others were kept before)."""
    if not rows:
        return set()
    kept = await conn.fetchmany(
        "INSERT INTO intake.quarantine (submission_id, feed_user, routing_key, message_id,"
        " content_type, body, body_size, reasons, reply_to, correlation_id, resubmission_of)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT DO NOTHING RETURNING submission_id",
        [(r.submission_id, r.feed_user, r.routing_key, r.message_id, r.content_type, r.body,
          r.body_size, [x.model_dump() for x in r.reasons], r.reply_to, r.correlation_id,
          r.resubmission_of) for r in sorted(rows, key=lambda r: r.submission_id)])
    return {r["submission_id"] for r in kept}


@dataclass(frozen=True)
class Receipt:
    submission_id: uuid.UUID
    feed_user: str | None
    outcome: str
    feedback_id: uuid.UUID | None = None
    ods_code: str | None = None
    provider_record_id: str | None = None


async def insert_receipts(conn: asyncpg.Connection, receipts: Sequence[Receipt]) -> None:
    if receipts:
        await conn.executemany(
            "INSERT INTO intake.receipts (submission_id, feed_user, outcome, feedback_id,"
            " ods_code, provider_record_id) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT DO NOTHING",
            [(r.submission_id, r.feed_user, r.outcome, r.feedback_id, r.ods_code,
              r.provider_record_id) for r in sorted(receipts, key=lambda r: r.submission_id)])


async def receipts(conn: asyncpg.Connection,
                   submission_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    """The receipts of these submissions that exist, with the reasons of rejected ones."""
    rows = await conn.fetch(
        "SELECT r.*, q.reasons FROM intake.receipts r"
        " LEFT JOIN intake.quarantine q USING (submission_id)"
        " WHERE r.submission_id = ANY($1::uuid[])", list(submission_ids))
    return {r["submission_id"]: r for r in rows}


# -- feeds ------------------------------------------------------------------------------------
async def set_api_key(conn: asyncpg.Connection, feed_user: str, key_sha256: str) -> None:
    """Give a feed a new API key (replacing any previous one)."""
    await conn.execute(
        "UPDATE intake.feeds SET api_key_sha256 = $2, api_key_created_at = now()"
        " WHERE feed_user = $1", feed_user, key_sha256)


async def feed_for_api_key(conn: asyncpg.Connection | asyncpg.Pool,
                           key_sha256: str) -> asyncpg.Record | None:
    """The active feed holding the API key with this SHA-256, if any."""
    return await conn.fetchrow(
        "SELECT feed_user, api_key_sha256 FROM intake.feeds"
        " WHERE api_key_sha256 = $1 AND revoked_at IS NULL", key_sha256)


async def revoke_feed(conn: asyncpg.Connection, feed_user: str) -> bool:
    """Stop a feed: AMQP submissions under its user and its API key are refused from now."""
    return bool(await conn.fetchval(
        "UPDATE intake.feeds SET revoked_at = now(), api_key_sha256 = NULL"
        " WHERE feed_user = $1 AND revoked_at IS NULL RETURNING true", feed_user))


async def list_feeds(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT f.feed_user, f.description, f.created_at, f.revoked_at,"
        " f.api_key_sha256 IS NOT NULL AS api_key, f.api_key_created_at,"
        " coalesce(array_agg(fp.ods_code ORDER BY fp.ods_code)"
        "   FILTER (WHERE fp.ods_code IS NOT NULL), '{}') AS ods_codes"
        " FROM intake.feeds f LEFT JOIN intake.feed_providers fp USING (feed_user)"
        " GROUP BY f.feed_user ORDER BY f.feed_user")


# -- quarantine -------------------------------------------------------------------------------
async def list_quarantine(conn: asyncpg.Connection, status: str = "open",
                          limit: int = 50, feed_user: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT submission_id, received_at, feed_user, routing_key, reasons, status"
        " FROM intake.quarantine WHERE status = $1 AND ($3::text IS NULL OR feed_user = $3)"
        " ORDER BY received_at DESC LIMIT $2",
        status, limit, feed_user)


async def get_quarantined(conn: asyncpg.Connection, sid: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM intake.quarantine WHERE submission_id = $1", sid)


async def resolve_quarantined(conn: asyncpg.Connection, sid: uuid.UUID, status: str, by: str,
                              resubmitted_as: uuid.UUID | None = None) -> bool:
    """Close an open quarantine row as ``resubmitted`` (with the new submission's id) or
    ``discarded``; False if it is not open."""
    return bool(await conn.fetchval(
        "UPDATE intake.quarantine SET status = $2, resubmitted_as = $3, resolved_at = now(),"
        " resolved_by = $4 WHERE submission_id = $1 AND status = 'open' RETURNING true",
        sid, status, resubmitted_as, by))

