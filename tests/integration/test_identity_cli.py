"""`carewatch users` and `carewatch tokens` against the real database: accounts with roles,
tokens that are hashed, scoped, expiring and revocable."""

from __future__ import annotations

import json

import asyncpg
import pytest

from shared import identity
from shared.settings import Settings
from tests.helpers import carewatch

pytestmark = pytest.mark.integration


async def test_users_and_tokens_from_the_command_line(settings: Settings, db: asyncpg.Pool) -> None:
    code, out = await carewatch(settings, "users", "add", "pat@rrk.test", "--role",
                                "provider_user")
    assert code != 0 and "ODS codes" in out, "a provider user needs its providers"
    code, out = await carewatch(settings, "users", "add", "pat@rrk.test", "--role",
                                "provider_user", "--ods", "rrk")
    assert code == 0, out
    code, out = await carewatch(settings, "users", "add", "lee@icb.test", "--role",
                                "quality_lead", "--role", "quality_team")
    assert code == 0, out
    code, out = await carewatch(settings, "tokens", "create", "lee@icb.test", "--role",
                                "quality_team", "--days", "1", "--label", "script")
    assert code == 0, out
    token = next(line for line in out.splitlines() if line.startswith("cw_"))
    # Only its hash is kept; it carries the scope asked for, not every role of the account.
    token_id, secret = identity.parse_token(token)  # type: ignore[misc]
    assert secret not in str(await db.fetchrow(
        "SELECT * FROM identity.tokens WHERE token_id = $1", token_id))
    who = await identity.identify(db, token)
    assert (who.account, who.roles) == ("lee@icb.test", frozenset({"quality_team"}))
    code, out = await carewatch(settings, "tokens", "create", "pat@rrk.test", "--role",
                                "quality_lead")
    assert code != 0 and "does not hold" in out
    code, out = await carewatch(settings, "users", "list", "--json")
    accounts = {a["name"]: a for a in json.loads(out)}
    assert accounts["pat@rrk.test"]["ods_codes"] == ["RRK"]
    assert accounts["lee@icb.test"]["live_tokens"] == 1
    code, out = await carewatch(settings, "tokens", "revoke", token_id)
    assert code == 0, out
    with pytest.raises(identity.AccessDenied):
        await identity.identify(db, token)
    # Expired and disabled are refused the same way.
    async with db.acquire() as conn:
        short = await identity.create_token(conn, "pat@rrk.test", scopes=None, days=1e-5,
                                            label="", created_by="test")
    await asyncpg_sleep(db, 1.5)
    with pytest.raises(identity.AccessDenied):
        await identity.identify(db, short)
    code, out = await carewatch(settings, "users", "disable", "pat@rrk.test")
    assert code == 0, out
    async with db.acquire() as conn:
        with pytest.raises(ValueError):
            await identity.create_token(conn, "pat@rrk.test", scopes=None, days=1, label="",
                                        created_by="test")


async def asyncpg_sleep(db: asyncpg.Pool, seconds: float) -> None:
    await db.execute("SELECT pg_sleep($1)", seconds)
