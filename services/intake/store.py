"""intake's tables: the provider registry, feeds, accepted feedback and the quarantine."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg

from shared.events import ProviderRef, RejectionReason

SCHEMA = "intake"
SAMPLE_PROVIDERS = Path(__file__).resolve().parents[2] / "data" / "providers.csv"


def read_providers_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    required = {"ods_code", "name", "provider_type", "quality_contact_email"}
    if rows and not required <= set(rows[0]):
        raise ValueError(f"{path}: columns must include {sorted(required)}")
    for row in rows:  # validates the e-mail address and the rest of the snapshot
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


async def provider_for_feed(conn: asyncpg.Connection, feed_user: str | None,
                            ods_code: str) -> ProviderRef | RejectionReason:
    """The provider a feed may submit for, or why it may not."""
    row = await conn.fetchrow(
        "SELECT p.*, (f.feed_user IS NOT NULL AND f.revoked_at IS NULL) AS feed_active,"
        " fp.ods_code IS NOT NULL AS allowed"
        " FROM intake.providers p"
        " LEFT JOIN intake.feeds f ON f.feed_user = $1"
        " LEFT JOIN intake.feed_providers fp ON fp.feed_user = $1 AND fp.ods_code = p.ods_code"
        " WHERE p.ods_code = $2", feed_user, ods_code)
    if row is None:
        return RejectionReason(loc="ods_code", msg=f"unknown ODS code {ods_code}",
                               type="unknown_provider")
    if not feed_user:
        return RejectionReason(loc="", msg="the message has no user_id: feeds must identify"
                               " themselves", type="unauthenticated")
    if not row["feed_active"] or not row["allowed"]:
        return RejectionReason(loc="ods_code", msg=f"feed {feed_user!r} is not registered to"
                               f" submit for {ods_code}", type="forbidden")
    return ProviderRef(ods_code=row["ods_code"], name=row["name"],
                       provider_type=row["provider_type"],
                       quality_contact_email=row["quality_contact_email"])


async def insert_feedback(conn: asyncpg.Connection, *, feedback_id: uuid.UUID,
                          submission_id: uuid.UUID, ods_code: str, record_id: str, kind: str,
                          version: int, occurred_on: Any, theme: str | None,
                          content: dict[str, Any], redactions: dict[str, int],
                          feed_user: str | None, count_duplicate: bool = True) -> bool:
    """Store accepted feedback; False if this provider record was already accepted (then
    the duplicate is counted, unless it is the broker redelivering the same message)."""
    inserted = await conn.fetchval(
        "INSERT INTO intake.feedback (feedback_id, submission_id, ods_code, provider_record_id,"
        " kind, version, occurred_on, theme, content, redactions, feed_user)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT DO NOTHING RETURNING true",
        feedback_id, submission_id, ods_code, record_id, kind, version, occurred_on, theme,
        content, redactions, feed_user)
    if not inserted and count_duplicate:
        await conn.execute(
            "UPDATE intake.feedback SET duplicates = duplicates + 1"
            " WHERE ods_code = $1 AND provider_record_id = $2", ods_code, record_id)
    return bool(inserted)


async def quarantine(conn: asyncpg.Connection, *, submission_id: uuid.UUID,
                     feed_user: str | None, routing_key: str | None, message_id: str | None,
                     content_type: str | None, body: bytes,
                     reasons: list[RejectionReason]) -> bool:
    """Keep a rejected submission with its reasons; False if it was already kept."""
    return bool(await conn.fetchval(
        "INSERT INTO intake.quarantine (submission_id, feed_user, routing_key, message_id,"
        " content_type, body, reasons) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT DO NOTHING RETURNING true",
        submission_id, feed_user, routing_key, message_id, content_type, body,
        [r.model_dump() for r in reasons]))


async def list_quarantine(conn: asyncpg.Connection, status: str = "open",
                          limit: int = 50) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT submission_id, received_at, feed_user, routing_key, reasons, status"
        " FROM intake.quarantine WHERE status = $1 ORDER BY received_at DESC LIMIT $2",
        status, limit)


async def get_quarantined(conn: asyncpg.Connection, sid: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM intake.quarantine WHERE submission_id = $1", sid)
