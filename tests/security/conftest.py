"""The security suite (`make test-security`): each test replays an attack of issue 14 against
the real broker, database and HTTP servers and reports, on one line,

    ATTACK <name>: tried N refused N leaked N

``tried`` attempts, ``refused`` of them stopped (a 401/403/404/409/422, a broker refusal, a
dead-letter, a refusal to start), ``leaked`` of them that got something through (a changed
state, data of another provider, a message in a queue it should not reach). Every attack
asserts leaked == 0. Use the ``attack`` fixture (or ``tests.security.attacks.Attack``).

Every test here is marked ``security``: `make test` leaves them to `make test-security`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.helpers import delete_broker_user
from tests.security.attacks import Attack
from tools.stacks import database_url, deprovision, provision

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.security)


@pytest.fixture
def attack() -> Iterator[Callable[[str], Attack]]:
    """``attack(name)``: a tally for one attack, reported and checked when the test ends."""
    made: list[Attack] = []

    def make(name: str) -> Attack:
        made.append(Attack(name))
        return made[-1]

    yield make
    for a in made:
        a.finish()


@contextlib.asynccontextmanager
async def isolated(base: Settings, tag: str) -> AsyncIterator[Settings]:
    """Settings of a stack of its own (database and broker namespace), provisioned like
    tools/stacks.provision (``guest`` is a feed of every provider), removed afterwards."""
    name = f"cwsec_{tag}_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={
        "database_url": database_url(base.database_url, name), "namespace": name})
    await provision(base.database_url, settings)
    try:
        yield settings
    finally:
        await deprovision(base.database_url, settings)


async def rabbitmqctl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


class BrokerUsers:
    """Broker users made for one test with rabbitmqctl (the local broker), deleted after."""

    def __init__(self) -> None:
        self.made: list[str] = []

    async def add(self, role: str, *, configure: str, write: str, read: str,
                  topic: dict[str, tuple[str, str]] | None = None) -> tuple[str, str]:
        """A new user (name, password) with these permissions on vhost / and, per exchange,
        topic permissions (write, read)."""
        name = f"cwsec-{role}-{uuid.uuid4().hex[:8]}"
        # hex: a URL-safe token can start with '-', which rabbitmqctl reads as an option
        password = secrets.token_hex(18)
        for args in (("add_user", name, password),
                     ("set_permissions", "-p", "/", name, configure, write, read),
                     *(("set_topic_permissions", "-p", "/", name, exchange, w, r)
                       for exchange, (w, r) in (topic or {}).items())):
            code, out = await rabbitmqctl(*args)
            if code:
                raise RuntimeError(f"rabbitmqctl {args[0]} failed: {out}")
            if args[0] == "add_user":
                self.made.append(name)
        return name, password

    async def delete_all(self) -> None:
        """Close each user's connections, wait until they are gone, then delete it (see
        tests.helpers.delete_broker_user: deleting a connected user has hung this broker)."""
        while self.made:
            await asyncio.to_thread(delete_broker_user, self.made[-1])
            self.made.pop()


@pytest.fixture
async def broker_users() -> AsyncIterator[BrokerUsers]:
    users = BrokerUsers()
    try:
        yield users
    finally:
        await users.delete_all()
