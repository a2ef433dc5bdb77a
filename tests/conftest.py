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

from shared.settings import Settings
from tests.helpers import watch_progress
from tools.stacks import database_url, deprovision, provision

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
                rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13.7"))
                amqp = (f"amqp://guest:guest@{rabbit.get_container_host_ip()}:"
                        f"{rabbit.get_exposed_port(5672)}/%2F")
            if not pg:
                postgres = stack.enter_context(PostgresContainer("postgres:16.4"))
                pg = postgres.get_connection_url(driver=None)
        yield ServerUrls(amqp or LOCAL_AMQP, pg or LOCAL_POSTGRES)


@pytest.fixture(scope="session")
async def settings(server_urls: ServerUrls) -> AsyncIterator[Settings]:
    """Settings of this test session: its own database and its own exchange/queue names."""
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        amqp_url=server_urls.amqp,
        database_url=database_url(server_urls.postgres_admin, f"carewatch_test_{tag}"),
        namespace=f"cwtest_{tag}",
        # Every process of the tests is the broker's guest: the sender check expects it.
        broker_users={"*": "guest"},
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        inbound_smtp_port=0,
        delivery_limit=3,
        outbox_poll_interval=0.5,
        notification_backoff_base=0.05,
        notification_backoff_cap=0.2,
        graceful_timeout=5,
        http_port=0,
    )
    await provision(server_urls.postgres_admin, s)
    yield s
    await deprovision(server_urls.postgres_admin, s)


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    from shared.db import create_pool

    pool = await create_pool(settings.database_url, min_size=1, max_size=5)

    async def writes() -> object:
        # Rows written in this session's database: the pipeline's progress, whatever the stage.
        return await pool.fetchval(
            "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
            " WHERE datname = current_database()")

    watch_progress(writes)
    yield pool
    watch_progress(None)
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
