"""Test isolation: each session gets a fresh database and a fresh RabbitMQ namespace.

Service URLs come from CAREWATCH_AMQP_URL / CAREWATCH_DATABASE_URL when set; otherwise
testcontainers starts RabbitMQ and PostgreSQL where a Docker engine answers; otherwise the
local services (127.0.0.1:5672 guest/guest, 127.0.0.1:5432 postgres) are used.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aio_pika
import asyncpg
import pytest

from services.catalogue import SERVICES, all_subscriptions, builder
from services.intake import store as intake_store
from shared.db import migrate
from shared.settings import Settings
from shared.topology import Topology

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class ServerUrls:
    amqp: str
    postgres_admin: str  # a DSN to a database we may CREATE DATABASE from


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def server_urls() -> Iterator[ServerUrls]:
    amqp = os.environ.get("CAREWATCH_AMQP_URL")
    pg = os.environ.get("CAREWATCH_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if (not amqp or not pg) and _docker_available():
            from testcontainers.postgres import PostgresContainer
            from testcontainers.rabbitmq import RabbitMqContainer

            if not amqp:
                rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13"))
                amqp = (f"amqp://guest:guest@{rabbit.get_container_host_ip()}:"
                        f"{rabbit.get_exposed_port(5672)}/%2F")
            if not pg:
                postgres = stack.enter_context(PostgresContainer("postgres:16"))
                pg = postgres.get_connection_url(driver=None)
        yield ServerUrls(amqp or LOCAL_AMQP, pg or LOCAL_POSTGRES)


def _with_database(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
async def settings(server_urls: ServerUrls) -> AsyncIterator[Settings]:
    """Settings of this test session: its own database and its own exchange/queue names."""
    tag = uuid.uuid4().hex[:10]
    db_name = f"carewatch_test_{tag}"
    admin = await asyncpg.connect(server_urls.postgres_admin)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    s = Settings(
        amqp_url=server_urls.amqp,
        database_url=_with_database(server_urls.postgres_admin, db_name),
        namespace=f"cwtest_{tag}",
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        delivery_limit=3,
        outbox_poll_interval=0.5,
        notification_backoff_base=0.05,
        notification_backoff_cap=0.2,
        graceful_timeout=5,
        http_port=0,
    )
    topology = Topology(s.namespace, s.delivery_limit)
    conn = await asyncpg.connect(s.database_url)
    for name in SERVICES:
        runtime = builder(name)(s)
        await migrate(conn, runtime.schema, runtime.migrations)
    rows = intake_store.read_providers_csv(intake_store.SAMPLE_PROVIDERS)
    await intake_store.upsert_providers(conn, rows)
    await intake_store.register_feed(conn, "guest", [r["ods_code"] for r in rows], "tests")
    await conn.close()
    connection = await aio_pika.connect(s.amqp_url)
    async with connection:
        await topology.declare(await connection.channel(), all_subscriptions(topology))
    yield s
    connection = await aio_pika.connect(s.amqp_url)
    async with connection:
        channel = await connection.channel()
        await topology.delete_all(channel, all_subscriptions(topology))
    admin = await asyncpg.connect(server_urls.postgres_admin)
    await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    from shared.db import create_pool

    pool = await create_pool(settings.database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def amqp(settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    yield connection
    await connection.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
