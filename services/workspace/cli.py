"""The workspace's part of the command line: what ``carewatch run`` gives the workspace on a
development machine: its service account and a short-lived token (an operator sets
``CAREWATCH_WORKSPACE_TOKEN`` in production), and the API key of the public's door feed for the
public feedback page (in production: `carewatch feeds create public-door --public --api-key`,
then ``CAREWATCH_WORKSPACE_PUBLIC_FEED_KEY``)."""

from __future__ import annotations

import asyncpg

from shared import identity

SERVICE_ACCOUNT = "workspace"


async def run_token(conn: asyncpg.Connection, created_by: str) -> str:
    """A token of the workspace's service account (created if missing), for one day."""
    return await identity.service_token(
        conn, SERVICE_ACCOUNT, [identity.OPERATOR], display_name="carewatch workspace",
        label="carewatch run", created_by=created_by)


PUBLIC_FEED = "public-door"


async def public_feed_key(conn: asyncpg.Connection) -> str:
    """A new API key of the public's door feed (registered if missing; the key replaces the
    previous one, of which intake kept only the hash)."""
    from services.intake import store as intake_store
    from services.intake.credentials import api_key_hash, new_api_key

    key = new_api_key()
    async with conn.transaction():
        await intake_store.register_feed(conn, PUBLIC_FEED, [], "the public feedback page"
                                         " (workspace)", public_door=True)
        await intake_store.set_api_key(conn, PUBLIC_FEED, api_key_hash(key))
    return key
