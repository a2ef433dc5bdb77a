"""The workspace's pages under a loaded read model: p50/p95 of the overview and of the busiest
provider's profile, rendered in-process (ASGI, no network) over the stack's database.

``make bench`` calls ``page_latency`` once an ICB's year has drained through the services (the
workspace consumed it like the others). ``python -m tools.workspace_pages`` measures on a
synthetic read model of its own instead (its size below), without the broker.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from shared import identity
from shared.db import create_pool
from shared.settings import Settings
from tools.bench import percentile

PASSWORD = "bench password for the workspace"


async def page_latency(database_url: str, samples: int = 100) -> dict[str, Any]:
    from services.workspace.app import build
    from services.workspace.config import WorkspaceSettings

    runtime = build(Settings(database_url=database_url, http_port=0),
                    workspace=WorkspaceSettings(insecure_cookies=True))
    runtime._pool = await create_pool(database_url, min_size=2, max_size=4)
    name = f"bench-{uuid.uuid4().hex[:6]}@icb.example.nhs.uk"
    try:
        async with runtime.pool.acquire() as conn:
            await identity.add_account(conn, identity.NewAccount(name, [identity.QUALITY_LEAD]),
                                       "bench")
            await identity.set_password(conn, name, PASSWORD)
            busiest = await conn.fetchval("SELECT ods_code FROM workspace.concerns GROUP BY 1"
                                          " ORDER BY count(*) DESC LIMIT 1")
            sizes = {t: await conn.fetchval(f"SELECT count(*) FROM workspace.{t}")
                     for t in ("concerns", "meetings", "actions", "timeline", "providers")}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.http.api),
                                     base_url="http://workspace.bench") as client:
            signed = await client.post("/sign-in", data={"email": name, "password": PASSWORD})
            assert signed.status_code == 303, signed.text
            out: dict[str, Any] = {"sizes": sizes, "provider": busiest}
            pages = (("overview", "/"), ("provider", f"/providers/{busiest}"),
                     ("reviews", "/reviews"))
            for label, path in pages:
                times = []
                for _ in range(samples):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                out[label] = {"p50": percentile(times, 50), "p95": percentile(times, 95)}
        return out
    finally:
        await runtime.pool.execute("UPDATE identity.accounts SET disabled_at = now()"
                                   " WHERE name = $1", name)
        await runtime.pool.close()


async def synthetic_year(conn: asyncpg.Connection, providers: int = 100,
                         concerns: int = 5000, seed: int = 7) -> None:
    """A read model the size of an ICB's year (assumed: 5,000 concerns over 100 providers,
    a meeting for each serious one, two actions each, eight timeline lines each)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ods = [f"B{i:02d}" for i in range(providers)]
    await conn.executemany(
        "INSERT INTO workspace.providers VALUES ($1, $2, 'acute', $3) ON CONFLICT DO NOTHING",
        [(o, f"Bench trust {o}", now) for o in ods])
    rows: list[tuple[Any, ...]] = []
    meetings: list[tuple[Any, ...]] = []
    actions: list[tuple[Any, ...]] = []
    lines: list[tuple[Any, ...]] = []
    for n in range(concerns):
        cid, o = uuid.uuid4(), rng.choice(ods)
        sev, rank = rng.choice([("low", 1), ("moderate", 2), ("high", 3), ("serious", 4)])
        raised = now - timedelta(minutes=rng.randrange(365 * 24 * 60))
        status = "open" if rng.random() < 0.2 else "closed"
        # One in fifty is a possible serious risk (the review queue), a tenth of them open.
        rule = "possible_serious_risk" if n % 50 == 0 else "rule"
        if rule != "rule":
            sev, rank = "high", 3
        rows.append((cid, o, rule, f"theme-{n}", sev, rank, "why", raised, status))
        if sev == "serious":
            start = raised + timedelta(days=2)
            meetings.append((uuid.uuid4(), cid, o, f"Meeting {n}", start,
                             start + timedelta(hours=1), "Teams", start, False, sev, [], [], 0))
        for k in range(2):
            actions.append((uuid.uuid4(), cid, o, f"action {k}", "owner",
                            (raised + timedelta(days=30)).date(),
                            "completed" if status == "closed" else "open", raised))
        lines.extend((cid, o, raised + timedelta(hours=h), "event", "") for h in range(8))
    await conn.executemany(
        "INSERT INTO workspace.concerns (concern_id, ods_code, rule, theme, severity,"
        " severity_rank, reason, raised_at, version_at, status) VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)", rows)
    await conn.executemany(
        "INSERT INTO workspace.meetings (meeting_id, concern_id, ods_code, title, starts_at,"
        " ends_at, location, deadline, breach, severity, agenda, attendees, sequence)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)", meetings)
    await conn.executemany(
        "INSERT INTO workspace.meeting_concerns (meeting_id, concern_id, joined_at)"
        " VALUES ($1, $2, $3)", [(m[0], m[1], m[4]) for m in meetings])
    await conn.executemany(
        "INSERT INTO workspace.actions (action_id, concern_id, ods_code, description, owner,"
        " due_on, status, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", actions)
    await conn.executemany(
        "INSERT INTO workspace.timeline (concern_id, ods_code, at, what, detail)"
        " VALUES ($1, $2, $3, $4, $5)", lines)
    await conn.execute("ANALYZE")


async def main(admin_dsn: str) -> None:
    from services.workspace.app import build
    from shared.db import migrate
    from tools.stacks import database_url

    name = f"carewatch_bench_ws_{uuid.uuid4().hex[:8]}"
    url = database_url(admin_dsn, name)
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await create_pool(url, min_size=1, max_size=1)
        async with conn.acquire() as c:
            await migrate(c, identity.SCHEMA, identity.MIGRATIONS, messaging=False)
            runtime = build(Settings(database_url=url))
            await migrate(c, runtime.schema, runtime.migrations)
            await synthetic_year(c)
        await conn.close()
        result = await page_latency(url)
        print(result)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else
                     "postgresql://postgres@127.0.0.1:5432/postgres"))
