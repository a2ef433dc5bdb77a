"""No default secrets (issue 14, item 3): the old shipped credentials and the broker's guest
are refused by every service process, `carewatch run` and compose's first step outside
development mode; the first run writes random credentials readable by their owner only; the
development feed is registered for the providers it names only."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg

from shared.credentials import SECRET_VARIABLE, password_problem, read_env
from shared.settings import Settings
from tests.helpers import service_env
from tests.security.attacks import Attack
from tests.security.conftest import isolated

ROOT = Path(__file__).resolve().parents[2]

# What earlier versions shipped (name = password), guest, and no password at all.
WEAK = [
    ("amqp://guest:guest@127.0.0.1:5672/", "postgresql://postgres@127.0.0.1:5432/carewatch"),
    ("amqp://carewatch-intake:carewatch-intake@127.0.0.1:5672/",
     "postgresql://carewatch_intake:carewatch_intake@127.0.0.1:5432/carewatch"),
    ("amqp://carewatch-admin:carewatch-admin@127.0.0.1:5672/",
     "postgresql://carewatch_admin:carewatch_admin@127.0.0.1:5432/carewatch"),
    ("amqp://127.0.0.1:5672/", "postgresql://carewatch_intake:postgres-dev-only@127.0.0.1/cw"),
]


async def run(*args: str, env: dict[str, str], cwd: Path = ROOT,
              timeout: float = 60) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, "still running: it started"
    return proc.returncode, out.decode()


def weak_env(settings: Settings, amqp: str, database: str) -> dict[str, str]:
    env = service_env(settings, CAREWATCH_AMQP_URL=amqp, CAREWATCH_DATABASE_URL=database,
                      PYTHONPATH=str(ROOT))
    env.pop("CAREWATCH_DEV_MODE")  # what an operator gets by default
    return env


async def test_weak_credentials_are_refused_outside_development_mode(
        settings: Settings, attack: Callable[[str], Attack], tmp_path: Path) -> None:
    a = attack("weak default credentials")
    for amqp, database in WEAK:
        env = weak_env(settings, amqp, database)
        for args in (["-m", "services.intake"], ["-m", "services.escalation"],
                     ["-m", "services.cli.main", "secrets", "check"]):
            code, out = await run(*args, env=env)
            a.record(refused=code not in (0, None) and "weak credentials" in out,
                     leaked=code in (0, None), what=f"{args} {amqp}: {code} {out[-300:]}")
    # `carewatch run`, first run in an empty directory: refuses, after writing .env.
    amqp, database = WEAK[0]
    code, out = await run("-m", "services.cli.main", "run", "--no-setup",
                          env=weak_env(settings, amqp, database), cwd=tmp_path)
    a.record(refused=code not in (0, None) and "weak credentials" in out,
             leaked=code in (0, None), what=f"carewatch run: {code} {out[-300:]}")
    # Development mode is the explicit exception: the check passes, with a warning.
    env = weak_env(settings, amqp, database) | {"CAREWATCH_DEV_MODE": "1"}
    code, out = await run("-m", "services.cli.main", "secrets", "check", env=env)
    assert code == 0 and "development mode" in out, out
    a.finish()


async def test_the_first_run_writes_random_credentials_for_its_owner_only(
        settings: Settings, attack: Callable[[str], Attack], tmp_path: Path) -> None:
    a = attack("first-run credentials readable or guessable")
    env = service_env(settings, PYTHONPATH=str(ROOT))
    code, out = await run("-m", "services.cli.main", "secrets", "init", env=env, cwd=tmp_path)
    assert code == 0, out
    written = tmp_path / ".env"
    mode = stat.S_IMODE(written.stat().st_mode)
    a.record(refused=mode == 0o600, leaked=bool(mode & 0o077), what=f"mode {oct(mode)}")
    values = {n: v for n, v in read_env(written).items() if SECRET_VARIABLE.match(n)}
    for name, value in values.items():
        a.record(refused=password_problem(name, value) is None,
                 leaked=password_problem(name, value) is not None, what=name)
    definitions = (tmp_path / "var" / "deploy" / "definitions.json").read_text()
    a.record(refused=True, leaked=any(v in definitions for v in values.values()),
             what="a password in clear in the broker definitions")
    # A second run keeps the first run's values.
    code, _ = await run("-m", "services.cli.main", "secrets", "init", env=env, cwd=tmp_path)
    assert code == 0 and read_env(written) == read_env(written) and os.path.exists(written)
    a.finish()


async def test_the_development_feed_is_registered_for_the_providers_it_names_only(
        settings: Settings, attack: Callable[[str], Attack]) -> None:
    a = attack("development feed for every provider")
    async with isolated(settings, "feed") as s:
        env = service_env(s, CAREWATCH_DEV_FEED_USER="feed-dev", PYTHONPATH=str(ROOT))
        code, out = await run("-m", "services.cli.main", "seed", env=env)
        a.record(refused=code != 0 and "CAREWATCH_DEV_FEED_ODS" in out, leaked=code == 0,
                 what=f"no providers named: {code} {out[-300:]}")
        code, out = await run("-m", "services.cli.main", "seed",
                              env=env | {"CAREWATCH_DEV_FEED_ODS": "RJ1,RAL"})
        assert code == 0, out
        conn = await asyncpg.connect(s.database_url)
        try:
            granted = sorted(r["ods_code"] for r in await conn.fetch(
                "SELECT ods_code FROM intake.feed_providers WHERE feed_user = 'feed-dev'"))
        finally:
            await conn.close()
        a.record(refused=granted == ["RAL", "RJ1"], leaked=len(granted) > 2,
                 what=f"feed-dev may submit for {granted}")
    a.finish()
