"""`carewatch providers import` as an operator runs it, against a real PostgreSQL (no broker
needed): carewatch's CSV and the ODS files in their published layout, into a migrated
registry, with what was there kept where the file says nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.settings import Settings
from tests.helpers import carewatch
from tools.stacks import database_url

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture
async def registry_db(server_urls: object) -> AsyncIterator[tuple[Settings, asyncpg.Connection]]:
    admin_dsn = server_urls.postgres_admin  # type: ignore[attr-defined]
    name = f"carewatch_test_registry_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=database_url(admin_dsn, name),
                        namespace=f"cwtest_{uuid.uuid4().hex[:8]}",
                        quality_team_email="quality.team@icb.example.nhs.uk")
    code, out = await carewatch(settings, "migrate")
    assert code == 0, out
    conn = await asyncpg.connect(settings.database_url)
    try:
        yield settings, conn
    finally:
        await conn.close()
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_ods_files_fill_a_registry_of_every_provider_type(
        registry_db: tuple[Settings, asyncpg.Connection]) -> None:
    settings, conn = registry_db
    code, out = await carewatch(settings, "seed")
    assert code == 0, out
    types = {r["provider_type"] for r in await conn.fetch("SELECT provider_type FROM"
                                                          " intake.providers")}
    assert types >= {"acute", "gp_practice", "care_home", "community", "mental_health",
                     "voluntary"}

    code, out = await carewatch(settings, "providers", "import",
                                str(DATA / "ods" / "epraccur-sample.csv"), "--icb", "QKK",
                                "--pcn", str(DATA / "ods" / "pcn-core-partners-sample.csv"))
    assert code == 0, out
    assert "3 loaded" in out and "skipped 1: not in ICB QKK" in out
    practice = await conn.fetchrow("SELECT * FROM intake.providers WHERE ods_code = 'G84999'")
    assert (practice["icb_name"], practice["network_code"], practice["quality_contact_email"]) \
        == ("NHS South East London ICB", "U99902", "quality.g84999@provider.example")
    # Not seeded before: the quality team is its contact until one is set.
    code, out = await carewatch(settings, "providers", "import",
                                str(DATA / "ods" / "epraccur-sample.csv"), "--icb", "QMJ")
    assert code == 0, out
    camden = await conn.fetchrow("SELECT * FROM intake.providers WHERE ods_code = 'F83999'")
    assert (camden["name"], camden["provider_type"], camden["icb_name"],
            camden["quality_contact_email"]) == (
        "Example Camden GP Practice", "gp_practice", "NHS North Central London ICB",
        "quality.team@icb.example.nhs.uk")

    # etr: a known trust keeps its type and contact; the closed one is not loaded.
    await conn.execute("UPDATE intake.providers SET provider_type = 'mental_health'"
                       " WHERE ods_code = 'RJ2'")
    code, out = await carewatch(settings, "providers", "import",
                                str(DATA / "ods" / "etr-sample.csv"))
    assert code == 0, out
    rj2 = await conn.fetchrow("SELECT * FROM intake.providers WHERE ods_code = 'RJ2'")
    assert (rj2["provider_type"], rj2["quality_contact_email"]) == (
        "mental_health", "quality.rj2@provider.example")
    assert not await conn.fetchval("SELECT true FROM intake.providers WHERE ods_code = 'RAP'")

    code, out = await carewatch(settings, "providers", "import",
                                str(DATA / "ods" / "etr-sample.csv"), "--type", "hospital")
    assert code == 2 and "provider type 'hospital' is not one of" in out
