"""End to end, as a provider feed would see it: intake runs as its own process
(``python -m services.intake``); every checked-in example is sent as it is, once with the
independent AMQP client in examples/ and once over HTTP with an API key the operator created
with the CLI. Each runs on a stack of its own, so the same records are new to each."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.intake.validation import submission_id
from shared.settings import Settings
from tests.conftest import free_port
from tests.helpers import bearer, carewatch, eventually, service_env, token_for
from tests.integration.test_intake_support import (
    EXAMPLES,
    VALID_EXAMPLES,
    body_bytes,
    example_message,
    isolated_intake,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


class Running:
    def __init__(self, settings: Settings, port: int, pool: asyncpg.Pool) -> None:
        self.settings, self.port, self.pool = settings, port, pool


async def _ready(port: int, token: str) -> bool:
    try:
        async with httpx.AsyncClient(headers=bearer(token)) as client:
            return (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[Running]:
    async with isolated_intake(settings, "e2e") as s:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "services.intake"], cwd=ROOT,
                                env=service_env(s, CAREWATCH_HTTP_PORT=str(port)))
        pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            token = await token_for(pool, "operator@tests", "operator")
            await eventually(lambda: _ready(port, token), timeout=60, interval=0.3,
                             what="intake process ready")
            yield Running(s, port, pool)
        finally:
            await pool.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def publish_examples(settings: Settings, *paths: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "publish.py"), *map(str, paths),
        "--url", settings.amqp_url, "--exchange-prefix", settings.namespace,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


async def outcome(pool: asyncpg.Pool, name: str) -> str:
    message = example_message(name)
    sid = submission_id(message["properties"]["user_id"], message["properties"]["message_id"],
                        body_bytes(message["body"]))
    return str(await eventually(lambda: pool.fetchval(
        "SELECT outcome FROM intake.receipts WHERE submission_id = $1", sid),
        what=f"outcome of {name}"))


async def test_every_example_published_with_the_independent_client_is_accepted(
        running: Running) -> None:
    await publish_examples(running.settings, *sorted(EXAMPLES.glob("*.json")))  # one call
    outcomes = {name: await outcome(running.pool, name) for name in VALID_EXAMPLES}
    assert outcomes == dict.fromkeys(VALID_EXAMPLES, "accepted")
    assert await outcome(running.pool, "invalid-complaint") == "rejected"
    kinds = {r["kind"] for r in await running.pool.fetch(
        "SELECT DISTINCT kind FROM intake.feedback")}
    assert kinds >= {example_message(n)["body"]["kind"] for n in VALID_EXAMPLES}


async def test_every_example_posted_over_http_is_accepted(running: Running) -> None:
    ods = sorted({example_message(n)["body"]["ods_code"] for n in VALID_EXAMPLES})
    code, out = await carewatch(running.settings, "feeds", "create", "e2e-http-feed",
                                *[a for c in ods for a in ("--ods", c)], "--api-key")
    assert code == 0, out
    [key] = [line for line in out.splitlines() if line.startswith("cwk_")]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
        for name in VALID_EXAMPLES:
            response = await client.post(
                "/v1/submissions", content=body_bytes(example_message(name)["body"]),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            assert response.status_code == 202, (name, response.text)
        response = await client.post(
            "/v1/submissions", content=body_bytes(example_message("invalid-complaint")["body"]),
            headers={"X-API-Key": key, "Content-Type": "application/json"})
        assert response.status_code == 422
        assert len(response.json()["reasons"]) == 5
        # The API's own document is behind an identity too (every route but liveness).
        assert (await client.get("/openapi.json")).status_code == 401
        operator = await token_for(running.pool, "e2e-operator@icb.example", "operator")
        spec = (await client.get("/openapi.json", headers=bearer(operator))).json()
    assert spec == json.loads((ROOT / "docs" / "openapi" / "intake.json").read_text())
