"""A concern's evidence travels as deltas (``concern.updated.v2``): against the real
PostgreSQL, an update's payload is the same size however much evidence the concern already
holds, quality-monitor's row keeps every item once, and the workspace's read model adds each
update's items (the same event twice, or events out of order, keep each item once).

A database of its own (quality-monitor's and the workspace's migrations), no broker: the
path through RabbitMQ is in tests/integration/test_monitor.py and test_escalation.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from services.quality_monitor import store
from services.workspace import app as workspace_app
from services.workspace import store as workspace_store
from shared.events import ConcernRaised, ConcernUpdated, Evidence, ProviderRef, Severity
from tests.conftest import ServerUrls
from tests.helpers import scratch_pool

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
PROVIDER = ProviderRef(ods_code="RPG", name="Oxleas NHS Foundation Trust",
                       provider_type="mental_health", quality_contact_email="q@oxleas.example")


@pytest.fixture(scope="module")
async def pool(server_urls: ServerUrls) -> AsyncIterator[asyncpg.Pool]:
    from services.quality_monitor import app

    async with scratch_pool(server_urls.postgres_admin, "evidence", [
            (store.SCHEMA, app.Path(app.__file__).parent / "migrations", True),
            (workspace_store.SCHEMA,
             workspace_app.Path(workspace_app.__file__).parent / "migrations", True)]) as pool:
        yield pool


def item(n: int) -> Evidence:
    return Evidence(feedback_id=uuid.UUID(int=n), kind="complaint",
                    occurred_on=date(2026, 1, 1) + timedelta(days=n % 300), matched="fell")


async def announce(pool: asyncpg.Pool, fingerprint: str, severity: Severity,
                   *evidence: Evidence) -> ConcernRaised | ConcernUpdated | None:
    async with pool.acquire() as conn, conn.transaction():
        return await store.raise_or_update(
            conn, fingerprint=fingerprint, provider=PROVIDER, rule="cluster", theme="falls",
            severity=severity, reason="falls on the ward", figures={"count": len(evidence)},
            evidence=list(evidence), at=AT)


def payload_size(event: ConcernRaised) -> int:
    return len(json.dumps(event.envelope("carewatch/quality_monitor").model_dump(mode="json")))


async def test_an_update_carries_its_new_evidence_only(pool: asyncpg.Pool) -> None:
    fingerprint = f"fp-{uuid.uuid4()}"
    raised = await announce(pool, fingerprint, Severity.MODERATE, item(1))
    assert isinstance(raised, ConcernRaised) and not isinstance(raised, ConcernUpdated)
    sizes: dict[int, int] = {}
    for n in range(2, 401):
        update = await announce(pool, fingerprint, Severity.MODERATE, item(n))
        assert isinstance(update, ConcernUpdated)
        assert [e.feedback_id for e in update.evidence] == [item(n).feedback_id]
        assert update.evidence_count == n
        sizes[n] = payload_size(update)
    # The 400th update is no larger than the 100th (the count has as many digits), though
    # the concern holds four times the evidence: an item alone is ~100 bytes of JSON.
    assert sizes[400] == sizes[100]
    assert max(sizes.values()) - min(sizes.values()) <= 2  # "2" to "400": two digits more
    assert len(item(1).model_dump_json()) > 50

    # Known evidence again: nothing new, no update. Known and new together: the new only,
    # once each, in the order given.
    assert await announce(pool, fingerprint, Severity.MODERATE, item(7), item(300)) is None
    update = await announce(pool, fingerprint, Severity.HIGH, item(5), item(402), item(401),
                            item(402))
    assert isinstance(update, ConcernUpdated)
    assert [e.feedback_id for e in update.evidence] == [item(402).feedback_id,
                                                        item(401).feedback_id]
    assert update.evidence_count == 402
    assert (update.severity, update.previous_severity) == (Severity.HIGH, Severity.MODERATE)

    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT evidence FROM monitor.concerns WHERE fingerprint = $1", fingerprint)
    assert [e["feedback_id"] for e in stored] == [
        str(item(n).feedback_id) for n in (*range(1, 401), 402, 401)]


async def test_the_workspace_adds_each_updates_evidence_once(pool: asyncpg.Pool) -> None:
    fingerprint = f"fp-{uuid.uuid4()}"
    raised = await announce(pool, fingerprint, Severity.MODERATE, item(1), item(2))
    first = await announce(pool, fingerprint, Severity.MODERATE, item(3))
    second = await announce(pool, fingerprint, Severity.HIGH, item(4), item(5))
    assert isinstance(raised, ConcernRaised)
    assert isinstance(first, ConcernUpdated) and isinstance(second, ConcernUpdated)

    # Out of order (an update before the raise) and repeated: each item once.
    for event in (second, raised, first, second, raised):
        async with pool.acquire() as conn, conn.transaction():
            await workspace_store.concern(conn, event)
    async with pool.acquire() as conn:
        ids = [e["feedback_id"] for e in await conn.fetchval(
            "SELECT evidence FROM workspace.concerns WHERE concern_id = $1", raised.concern_id)]
    assert sorted(ids) == sorted(str(item(n).feedback_id) for n in range(1, 6))
    assert len(ids) == 5
