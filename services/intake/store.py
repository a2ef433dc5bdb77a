"""intake's tables: the provider registry, feeds, accepted feedback and the quarantine."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg

from shared.events import FULL_EMAIL_CHECK, ProviderRef, RejectionReason
from shared.outbox import OutboxRow, notify_channel

SCHEMA = "intake"
SAMPLE_PROVIDERS = Path(__file__).resolve().parents[2] / "data" / "providers.csv"
# GP practices (with their PCN), care homes (with their CQC location), community,
# mental-health and voluntary services: illustrative, seeded beside the trusts.
SAMPLE_OTHER_PROVIDERS = SAMPLE_PROVIDERS.with_name("providers-gp-care-community.csv")


def read_providers_csv(path: Path) -> list[dict[str, str | None]]:
    """carewatch's provider CSV (data/providers.csv), each row checked."""
    from services.intake.registry import read_registry

    _, loaded = read_registry(path, "carewatch", icb_names=icb_names())
    for row in loaded.rows:
        check_provider(row)
    return loaded.rows


def ods_codes(rows: Iterable[dict[str, str | None]]) -> list[str]:
    """The ODS codes of provider rows as ``read_providers_csv`` returns them (each has one)."""
    codes = []
    for row in rows:
        if not (code := row["ods_code"]):
            raise ValueError("a provider row without an ODS code")
        codes.append(code)
    return codes


def icb_names() -> dict[str, str]:
    from services.intake.registry import SAMPLE_ICBS, read_icb_names

    return read_icb_names(SAMPLE_ICBS) if SAMPLE_ICBS.exists() else {}


def check_provider(row: dict[str, str | None]) -> None:
    """The e-mail address in full and the rest of the snapshot (a row from an ODS file has
    no contact yet: it is checked when one is given)."""
    if row["quality_contact_email"]:
        FULL_EMAIL_CHECK.validate_python(row["quality_contact_email"])
        ProviderRef.model_validate({k: row[k] for k in (
            "ods_code", "name", "provider_type", "quality_contact_email", "icb_code", "icb_name")})


async def upsert_providers(conn: asyncpg.Connection, rows: Iterable[dict[str, str | None]],
                           default_contact: str | None = None) -> int:
    """Add or update providers. A row without a contact (from an ODS file) keeps the known
    provider's, or gets ``default_contact`` when the provider is new; optional columns left
    empty keep what the registry had."""
    records = [(r["ods_code"], r["name"], r["provider_type"], r["quality_contact_email"],
                r.get("region"), r.get("icb_code"), r.get("icb_name"), r.get("network_code"),
                r.get("network_name"), r.get("cqc_location_id"), bool(r.get("keep_type")))
               for r in rows]
    await conn.executemany(
        "INSERT INTO intake.providers (ods_code, name, provider_type, quality_contact_email,"
        " region, icb_code, icb_name, network_code, network_name, cqc_location_id)"
        " VALUES ($1, $2, $3, COALESCE($4, $12), $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (ods_code) DO UPDATE SET name = $2,"
        " provider_type = CASE WHEN $11 THEN intake.providers.provider_type ELSE $3 END,"
        " quality_contact_email = COALESCE($4, intake.providers.quality_contact_email),"
        " region = COALESCE($5, intake.providers.region),"
        " icb_code = COALESCE($6, intake.providers.icb_code),"
        " icb_name = COALESCE($7, intake.providers.icb_name),"
        " network_code = COALESCE($8, intake.providers.network_code),"
        " network_name = COALESCE($9, intake.providers.network_name),"
        " cqc_location_id = COALESCE($10, intake.providers.cqc_location_id),"
        " updated_at = now()",
        [(*r, default_contact) for r in records])
    return len(records)


async def list_providers(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM intake.providers ORDER BY ods_code")


async def register_feed(conn: asyncpg.Connection, feed_user: str, ods_codes: list[str],
                        description: str = "", public_door: bool = False) -> None:
    """Create (or re-enable) a feed and allow it to submit for ``ods_codes``; or, with
    ``public_door``, the public's door: the public's kinds, for any registered provider."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO intake.feeds (feed_user, description, public_door) VALUES ($1, $2, $3)"
            " ON CONFLICT (feed_user) DO UPDATE SET revoked_at = NULL, public_door = $3,"
            " description = COALESCE(NULLIF($2, ''), intake.feeds.description)",
            feed_user, description, public_door)
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
    public_feeds: frozenset[str] = frozenset()  # the public's doors among the active feeds


async def registry_for(conn: asyncpg.Connection, feed_users: Collection[str],
                       ods_codes: Collection[str]) -> Registry:
    """The providers among ``ods_codes`` and what ``feed_users`` may submit for them."""
    providers = await conn.fetch(
        "SELECT ods_code, name, provider_type, quality_contact_email, icb_code, icb_name"
        " FROM intake.providers WHERE ods_code = ANY($1::text[])", list(ods_codes))
    feeds = await conn.fetch(
        "SELECT f.feed_user, f.public_door, fp.ods_code FROM intake.feeds f"
        " LEFT JOIN intake.feed_providers fp ON fp.feed_user = f.feed_user"
        "  AND fp.ods_code = ANY($2::text[])"
        " WHERE f.feed_user = ANY($1::text[]) AND f.revoked_at IS NULL",
        list(feed_users), list(ods_codes))
    return Registry(
        providers={r["ods_code"]: ProviderRef(**dict(r)) for r in providers},
        active_feeds=frozenset(r["feed_user"] for r in feeds),
        grants=frozenset((r["feed_user"], r["ods_code"]) for r in feeds if r["ods_code"]),
        public_feeds=frozenset(r["feed_user"] for r in feeds if r["public_door"]))


async def registry(conn: asyncpg.Connection) -> Registry:
    """The whole registry: every provider, and what every active feed may submit for."""
    providers = await conn.fetch(
        "SELECT ods_code, name, provider_type, quality_contact_email, icb_code, icb_name"
        " FROM intake.providers")
    feeds = await conn.fetch(
        "SELECT f.feed_user, f.public_door, fp.ods_code FROM intake.feeds f"
        " LEFT JOIN intake.feed_providers fp ON fp.feed_user = f.feed_user"
        " WHERE f.revoked_at IS NULL")
    return Registry(
        providers={r["ods_code"]: ProviderRef(**dict(r)) for r in providers},
        active_feeds=frozenset(r["feed_user"] for r in feeds),
        grants=frozenset((r["feed_user"], r["ods_code"]) for r in feeds if r["ods_code"]),
        public_feeds=frozenset(r["feed_user"] for r in feeds if r["public_door"]))


class RegistryCache:
    """The registry kept in memory, reloaded when ``registry_version`` has moved (migration
    006: every change to providers, feeds or grants bumps it in its own transaction)."""

    def __init__(self) -> None:
        self._version: int | None = None
        self._registry = Registry()

    async def at(self, conn: asyncpg.Connection, version: int) -> Registry:
        """The registry as of ``version`` or later (read now if ``version`` is not the one
        held)."""
        if version != self._version:
            self._registry = await registry(conn)
            self._version = version
        return self._registry


async def receipts_and_registry_version(
        conn: asyncpg.Connection, submission_ids: Collection[uuid.UUID],
) -> tuple[dict[uuid.UUID, asyncpg.Record], int]:
    """``receipts`` and the registry's version, in one round trip (migration 007: planned
    for these ids on every call; a plan kept from when the receipts were few reads them all)."""
    rows = await conn.fetch("SELECT * FROM intake.receipts_and_registry_version($1::uuid[])",
                            list(submission_ids))
    return ({r["submission_id"]: r for r in rows if r["submission_id"] is not None},
            rows[0]["registry_version"])


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
    withheld: dict[str, Any] = field(default_factory=dict)  # personal fields (validation.parse)


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
    stored = {r["submission_id"] for r in inserted}
    contacts = [r for r in rows if r.submission_id in stored and r.withheld.get("contact")]
    if contacts:
        await conn.executemany(
            "INSERT INTO intake.public_contacts (feedback_id, ods_code, reference, contact_by,"
            " contact) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [(r.feedback_id, r.ods_code, r.provider_record_id,
              str(r.content.get("contact_by", "")), r.withheld["contact"]) for r in contacts])
    return stored


async def count_duplicates(conn: asyncpg.Connection,
                           counts: dict[tuple[str, str], int]) -> None:
    """Count further copies of provider records already accepted, by (ODS code, record id),
    in one call (migration ``008_count_duplicates.sql``: planned for its arguments every
    time; the records in one order)."""
    if counts:
        keys = sorted(counts)
        await conn.execute("SELECT intake.count_duplicates($1::text[], $2::text[], $3::int[])",
                           [k[0] for k in keys], [k[1] for k in keys], [counts[k] for k in keys])


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


STORED, KEPT, ALWAYS = "stored", "kept", "always"  # when a batch's outbox row is written


def duplicate_counts(feedback: Sequence[FeedbackRow], redelivered: Collection[uuid.UUID],
                     replays: Mapping[tuple[str, str], int] | None = None,
                     ) -> tuple[list[int], dict[tuple[str, str], int]]:
    """What a batch adds to ``feedback.duplicates``, for ``admit_batch``: each row's count
    should it be the one stored (the other copies of its record in the batch), and each
    record's count should it have been stored before (every copy in the batch). A copy the
    broker redelivered counts in neither: it was counted, if at all, when first delivered.
    ``replays`` adds the batch's copies of submissions admitted before (or earlier in the
    batch) to their records' counts. ``feedback`` is in the order the statement inserts it
    (the first copy of a record is the one stored)."""
    counted = [row.submission_id not in redelivered for row in feedback]
    per_record: Counter[tuple[str, str]] = Counter(replays or {})
    for row, one in zip(feedback, counted, strict=True):
        per_record[(row.ods_code, row.provider_record_id)] += one
    presets: list[int] = []
    seen: set[tuple[str, str]] = set()
    for row, one in zip(feedback, counted, strict=True):
        key = (row.ods_code, row.provider_record_id)
        presets.append(0 if key in seen else per_record[key] - one)
        seen.add(key)
    return presets, {key: n for key, n in per_record.items() if n}


async def admit_batch(conn: asyncpg.Connection, feedback: Sequence[FeedbackRow],
                      quarantined: Sequence[QuarantineRow],
                      outbox: Sequence[tuple[str, uuid.UUID, OutboxRow]],
                      receipts: Sequence[Receipt], redelivered: Collection[uuid.UUID] = (),
                      replays: Mapping[tuple[str, str], int] | None = None,
                      ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Write a batch's admissions in one statement: the accepted feedback (and the public's
    contact details), the quarantined submissions, the outbox rows, the receipts and the
    relay's wake-up. Returns the submission ids stored now and
    those quarantined now (the others were before: duplicates, replays). Being one
    statement, it is atomic without a transaction around it (issue 21: no BEGIN and COMMIT
    round trips).

    Each outbox row is written when its submission is stored now (``STORED``), quarantined
    now (``KEPT``), or ``ALWAYS`` (a reply). A receipt of a submission to store says
    ``accepted`` with its feedback id when stored now, and its own outcome (``duplicate``)
    otherwise.

    Duplicates (``duplicate_counts``): a copy of a record not stored counts as a duplicate
    of it unless the broker redelivered it (``redelivered``: submission ids), and so does a
    replay the provider sent again (``replays``: counts by record). A record stored now gets
    its other copies in the batch as its initial count, in the statement; a record stored
    before (or by another replica meanwhile) gets them from a second statement, one sorted
    UPDATE, only for a batch that holds such copies. Not in the first statement: an UPDATE
    joined there was planned once and kept, a scan of every piece of feedback on every batch
    when the table had been analysed small (``tests/integration/test_intake_plans.py``). A
    crash between the two statements would lose those counts (a count, never a
    submission). Rows go in one order per table, so that concurrent batches never
    deadlock."""
    feedback = sorted(feedback, key=lambda r: (r.ods_code, r.provider_record_id))
    presets, counts = duplicate_counts(feedback, redelivered, replays)
    contacts = [r for r in feedback if r.withheld.get("contact")]
    quarantined = sorted(quarantined, key=lambda r: r.submission_id)
    receipts = sorted(receipts, key=lambda r: r.submission_id)
    row = await conn.fetchrow(
        "WITH fb AS ("
        " INSERT INTO intake.feedback (feedback_id, submission_id, ods_code, provider_record_id,"
        "  kind, version, occurred_on, theme, content, redactions, feed_user, duplicates)"
        " SELECT f.feedback_id, f.submission_id, f.ods_code, f.provider_record_id, f.kind,"
        "  f.version, f.occurred_on, f.theme, f.content::jsonb, f.redactions::jsonb, f.feed_user,"
        "  f.duplicates"
        " FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[],"
        "  $7::date[], $8::text[], $9::text[], $10::text[], $11::text[], $44::int[])"
        "  WITH ORDINALITY AS f(feedback_id, submission_id, ods_code, provider_record_id, kind,"
        "  version, occurred_on, theme, content, redactions, feed_user, duplicates, n)"
        " ORDER BY f.n ON CONFLICT DO NOTHING RETURNING submission_id, feedback_id),"
        " pc AS ("
        " INSERT INTO intake.public_contacts (feedback_id, ods_code, reference, contact_by,"
        "  contact)"
        " SELECT c.feedback_id, c.ods_code, c.reference, c.contact_by, c.contact::jsonb"
        " FROM unnest($12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::text[],"
        "  $17::text[]) AS c(submission_id, feedback_id, ods_code, reference, contact_by,"
        "  contact) JOIN fb USING (submission_id) ON CONFLICT DO NOTHING),"
        " q AS ("
        " INSERT INTO intake.quarantine (submission_id, feed_user, routing_key, message_id,"
        "  content_type, body, body_size, reasons, reply_to, correlation_id, resubmission_of)"
        " SELECT q.submission_id, q.feed_user, q.routing_key, q.message_id, q.content_type,"
        "  q.body, q.body_size, q.reasons::jsonb, q.reply_to, q.correlation_id, q.resubmission_of"
        " FROM unnest($18::uuid[], $19::text[], $20::text[], $21::text[], $22::text[],"
        "  $23::bytea[], $24::int[], $25::text[], $26::text[], $27::text[], $28::uuid[])"
        "  WITH ORDINALITY AS q(submission_id, feed_user, routing_key, message_id,"
        "  content_type, body, body_size, reasons, reply_to, correlation_id, resubmission_of, n)"
        " ORDER BY q.n ON CONFLICT DO NOTHING RETURNING submission_id),"
        " ob AS ("
        " INSERT INTO intake.outbox (event_id, exchange, routing_key, body, mandatory,"
        "  correlation_id, priority)"
        " SELECT o.event_id, o.exchange, o.routing_key, o.body, o.mandatory, o.correlation_id,"
        "  o.priority"
        " FROM unnest($29::text[], $30::uuid[], $31::uuid[], $32::text[], $33::text[],"
        "  $34::bytea[], $35::bool[], $36::text[], $37::smallint[]) WITH ORDINALITY"
        "  AS o(gate, submission_id, event_id, exchange, routing_key, body, mandatory,"
        "  correlation_id, priority, n)"
        " WHERE o.gate = 'always'"
        "  OR (o.gate = 'stored' AND o.submission_id IN (SELECT submission_id FROM fb))"
        "  OR (o.gate = 'kept' AND o.submission_id IN (SELECT submission_id FROM q))"
        " ORDER BY o.n RETURNING 1),"
        " rc AS ("
        " INSERT INTO intake.receipts (submission_id, feed_user, outcome, feedback_id, ods_code,"
        "  provider_record_id)"
        " SELECT r.submission_id, r.feed_user,"
        "  CASE WHEN fb.submission_id IS NULL THEN r.outcome ELSE 'accepted' END,"
        "  fb.feedback_id, r.ods_code, r.provider_record_id"
        " FROM unnest($38::uuid[], $39::text[], $40::text[], $41::text[], $42::text[])"
        "  WITH ORDINALITY AS r(submission_id, feed_user, outcome, ods_code,"
        "  provider_record_id, n)"
        " LEFT JOIN fb USING (submission_id) ORDER BY r.n ON CONFLICT DO NOTHING)"
        " SELECT (SELECT array_agg(submission_id) FROM fb) AS stored,"
        "  (SELECT array_agg(submission_id) FROM q) AS kept,"
        "  (SELECT pg_notify($43, '') FROM (SELECT 1 FROM ob LIMIT 1) any_row) AS woken",
        [r.feedback_id for r in feedback], [r.submission_id for r in feedback],
        [r.ods_code for r in feedback], [r.provider_record_id for r in feedback],
        [r.kind for r in feedback], [r.version for r in feedback],
        [r.occurred_on for r in feedback], [r.theme for r in feedback],
        [json.dumps(r.content) for r in feedback], [json.dumps(r.redactions) for r in feedback],
        [r.feed_user for r in feedback],
        [r.submission_id for r in contacts], [r.feedback_id for r in contacts],
        [r.ods_code for r in contacts], [r.provider_record_id for r in contacts],
        [str(r.content.get("contact_by", "")) for r in contacts],
        [json.dumps(r.withheld["contact"]) for r in contacts],
        [r.submission_id for r in quarantined], [r.feed_user for r in quarantined],
        [r.routing_key for r in quarantined], [r.message_id for r in quarantined],
        [r.content_type for r in quarantined], [r.body for r in quarantined],
        [r.body_size for r in quarantined],
        [json.dumps([x.model_dump() for x in r.reasons]) for r in quarantined],
        [r.reply_to for r in quarantined], [r.correlation_id for r in quarantined],
        [r.resubmission_of for r in quarantined],
        [gate for gate, _, _ in outbox], [sid for _, sid, _ in outbox],
        [o.event_id for _, _, o in outbox], [o.exchange for _, _, o in outbox],
        [o.routing_key for _, _, o in outbox], [o.body for _, _, o in outbox],
        [o.mandatory for _, _, o in outbox], [o.correlation_id for _, _, o in outbox],
        [o.priority for _, _, o in outbox],
        [r.submission_id for r in receipts], [r.feed_user for r in receipts],
        [r.outcome for r in receipts], [r.ods_code for r in receipts],
        [r.provider_record_id for r in receipts],
        notify_channel(SCHEMA), presets)
    assert row is not None
    stored = set(row["stored"] or ())
    # The copies of records not stored now: stored before, or by another replica while
    # the statement ran.
    now = {(r.ods_code, r.provider_record_id) for r in feedback if r.submission_id in stored}
    await count_duplicates(conn, {key: n for key, n in counts.items() if key not in now})
    return stored, set(row["kept"] or ())


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
        "SELECT f.feed_user, f.description, f.created_at, f.revoked_at, f.public_door,"
        " f.api_key_sha256 IS NOT NULL AS api_key, f.api_key_created_at,"
        " coalesce(array_agg(fp.ods_code ORDER BY fp.ods_code)"
        "   FILTER (WHERE fp.ods_code IS NOT NULL), '{}') AS ods_codes"
        " FROM intake.feeds f LEFT JOIN intake.feed_providers fp USING (feed_user)"
        " GROUP BY f.feed_user ORDER BY f.feed_user")


async def is_public_door(conn: asyncpg.Connection, feed_user: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT public_door FROM intake.feeds WHERE feed_user = $1 AND revoked_at IS NULL",
        feed_user))


# -- the public's contact details ---------------------------------------------------------------
async def public_feedback(conn: asyncpg.Connection, reference: str,
                          actor: str) -> list[asyncpg.Record]:
    """The public feedback with this acknowledgement reference (one per provider it was
    about), or with this feedback id (what a concern's evidence names), with the person's
    contact details if intake still holds them. Each read of contact details is recorded
    (``contact_reads``) with who read them."""
    try:
        feedback_id: uuid.UUID | None = uuid.UUID(reference)
    except ValueError:
        feedback_id = None
    rows = await conn.fetch(
        "SELECT f.feedback_id, f.ods_code, f.provider_record_id AS reference, f.received_at,"
        " f.content, c.contact_by, c.contact FROM intake.feedback f"
        " LEFT JOIN intake.public_contacts c USING (feedback_id)"
        " WHERE f.kind = 'public_feedback' AND (f.provider_record_id = $1"
        " OR f.feedback_id = $2) ORDER BY f.received_at", reference, feedback_id)
    await conn.executemany(
        "INSERT INTO intake.contact_reads (feedback_id, reference, actor) VALUES ($1, $2, $3)",
        [(r["feedback_id"], r["reference"], actor) for r in rows if r["contact"] is not None])
    return rows


async def purge_public_contacts(conn: asyncpg.Connection, retention_days: int,
                                batch: int = 500) -> int:
    """Delete contact details received more than ``retention_days`` ago, up to ``batch`` of
    them; returns how many (replica-safe, like ``purge_quarantine``)."""
    return int(await conn.fetchval(
        "WITH due AS (SELECT feedback_id FROM intake.public_contacts"
        "  WHERE received_at < now() - make_interval(days => $1)"
        "  ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " , gone AS (DELETE FROM intake.public_contacts c USING due"
        "  WHERE c.feedback_id = due.feedback_id RETURNING 1)"
        " SELECT count(*) FROM gone", retention_days, batch))


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
    # A discarded body is deleted at once: nobody will correct it.
    return bool(await conn.fetchval(
        "UPDATE intake.quarantine SET status = $2, resubmitted_as = $3, resolved_at = now(),"
        " resolved_by = $4,"
        " body = CASE WHEN $2 = 'discarded' THEN NULL ELSE body END,"
        " body_deleted_at = CASE WHEN $2 = 'discarded' THEN now() ELSE body_deleted_at END"
        " WHERE submission_id = $1 AND status = 'open' RETURNING true",
        sid, status, resubmitted_as, by))


async def purge_quarantine(conn: asyncpg.Connection, retention_days: int,
                           batch: int = 500) -> int:
    """Delete the bodies of quarantined submissions received more than ``retention_days``
    ago, up to ``batch`` of them (the oldest first), open ones becoming ``expired``; returns
    how many. Safe with replicas:
    rows another purge holds are skipped (``SKIP LOCKED``). Call until it returns less than
    ``batch``."""
    return int(await conn.fetchval(
        "WITH due AS (SELECT submission_id FROM intake.quarantine"
        "  WHERE body IS NOT NULL AND received_at < now() - make_interval(days => $1)"
        "  ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " , purged AS (UPDATE intake.quarantine q SET body = NULL, body_deleted_at = now(),"
        "  status = CASE WHEN q.status = 'open' THEN 'expired' ELSE q.status END"
        "  FROM due WHERE q.submission_id = due.submission_id RETURNING 1)"
        " SELECT count(*) FROM purged", retention_days, batch))

