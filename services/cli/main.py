"""``carewatch``: run, migrate, seed and inspect carewatch.

Every command reads the same ``CAREWATCH_*`` settings as the services.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import typer

from services.catalogue import SERVICES, all_subscriptions, builder
from services.cli import ops
from services.cli.common import run_async, with_db
from services.escalation import cli as escalation_cli
from services.intake import cli as intake_cli
from services.intake import store as intake_store
from services.notification import cli as notification_cli
from services.quality_monitor import cli as monitor_cli
from shared.db import migrate as migrate_schema
from shared.http import DEFAULT_PORTS
from shared.logs import configure_logging
from shared.settings import Settings, get_settings
from shared.topology import Topology

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
topology_app = typer.Typer(help="RabbitMQ exchanges, queues and bindings.", no_args_is_help=True)
app.add_typer(topology_app, name="topology")
for _module in (intake_cli, monitor_cli, escalation_cli, notification_cli, ops):
    for _name, _group in _module.COMMAND_GROUPS.items():
        app.add_typer(_group, name=_name)
app.command("status")(ops.status)
for _name, _command in intake_cli.COMMANDS.items():
    app.command(_name)(_command)


# -- setting up ----------------------------------------------------------------------------
@app.command()
def migrate() -> None:
    """Create or update every service's PostgreSQL schema."""
    settings = get_settings()

    async def work() -> None:
        await ensure_database(settings.database_url)
        conn = await asyncpg.connect(settings.database_url)
        try:
            for name in SERVICES:
                runtime = builder(name)(settings)
                applied = await migrate_schema(conn, runtime.schema, runtime.migrations)
                typer.echo(f"{runtime.schema}: {', '.join(applied) if applied else 'up to date'}")
        finally:
            await conn.close()

    run_async(work())


async def ensure_database(dsn: str) -> None:
    """Create the configured database if the server does not have it yet."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        name = dsn.rsplit("/", 1)[1].split("?")[0]
        admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            typer.echo(f"created database {name}")
        finally:
            await admin.close()
    else:
        await conn.close()


@topology_app.command("declare")
def topology_declare() -> None:
    """Declare every exchange, queue, dead-letter queue and binding (idempotent)."""
    settings = get_settings()
    topology = Topology(settings.namespace, settings.delivery_limit)

    async def work() -> None:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            subs = all_subscriptions(topology)
            await topology.declare(await connection.channel(), subs)
        typer.echo(f"declared {len(subs)} queues (and their dead-letter queues) in"
                   f" namespace {settings.namespace!r}")

    run_async(work())


@app.command()
def seed(providers_file: Annotated[Path, typer.Option(help="Provider registry CSV.")] =
         intake_store.SAMPLE_PROVIDERS) -> None:
    """Load the provider registry and, if CAREWATCH_DEV_FEED_USER is set, register that
    RabbitMQ user as a development feed for every provider."""
    settings = get_settings()
    rows = intake_store.read_providers_csv(providers_file)

    async def work(conn: asyncpg.Connection) -> None:
        n = await intake_store.upsert_providers(conn, rows)
        typer.echo(f"providers: {n} loaded from {providers_file}")
        if settings.dev_feed_user:
            await intake_store.register_feed(
                conn, settings.dev_feed_user, [r["ods_code"] for r in rows],
                "development feed (CAREWATCH_DEV_FEED_USER)")
            typer.echo(f"feed {settings.dev_feed_user!r} may submit for all {n} providers")

    with_db(work, settings)


@app.command()
def docs() -> None:
    """Regenerate the AsyncAPI document of every service into docs/asyncapi/, and intake's
    OpenAPI document into docs/openapi/."""
    from services.cli.asyncapi import write_all
    from services.intake.openapi import write as write_openapi

    for path in write_all():
        typer.echo(f"wrote {path}")
    typer.echo(f"wrote {write_openapi()}")


@app.command()
def health(service: Annotated[str, typer.Option(help="Service to check.")]) -> None:
    """Exit 0 when the service's schema is migrated and each of its queues has a consumer."""
    settings = get_settings()
    runtime = builder(service)(settings)

    async def work() -> list[str]:
        problems: list[str] = []
        conn = await asyncpg.connect(settings.database_url, timeout=5)
        try:
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                       f"{runtime.schema}.outbox"):
                problems.append(f"schema {runtime.schema} is not migrated")
        finally:
            await conn.close()
        connection = await aio_pika.connect(settings.amqp_url, timeout=5)
        async with connection:
            channel = await connection.channel()
            for sub in runtime.subscriptions:
                queue = await channel.declare_queue(sub.queue, passive=True)
                if not queue.declaration_result.consumer_count:
                    problems.append(f"{sub.queue} has no consumer")
        return problems

    problems = run_async(work())
    for p in problems:
        typer.secho(p, fg="red", err=True)
    raise typer.Exit(1 if problems else 0)


# -- running -------------------------------------------------------------------------------
def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def ensure_infrastructure(settings: Settings) -> None:
    """RabbitMQ and PostgreSQL at the configured URLs; where neither answers and a Docker
    engine does, start them (and the mail catcher) with docker compose."""
    amqp = _host_port(settings.amqp_url, 5672)
    pg = _host_port(settings.database_url, 5432)
    missing = [f"{what} at {h}:{p}" for what, (h, p) in (("RabbitMQ", amqp), ("PostgreSQL", pg))
               if not _listening(h, p)]
    if not missing:
        return
    docker = subprocess.run(["docker", "info"], capture_output=True, check=False) \
        if shutil.which("docker") else None
    if docker is None or docker.returncode != 0:
        typer.secho(f"not reachable: {'; '.join(missing)}. Start them, or set"
                    " CAREWATCH_AMQP_URL / CAREWATCH_DATABASE_URL (see README).",
                    fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(f"not reachable: {'; '.join(missing)}; starting them with docker compose")
    subprocess.run(["docker", "compose", "up", "--detach", "--wait", "rabbitmq", "postgres",
                    "mailpit"], check=True)


@app.command()
def run(
    services: Annotated[list[str] | None, typer.Option(
        "--service", help="Run only these services (repeatable).")] = None,
    replicas: Annotated[int, typer.Option(help="Processes per service.")] = 1,
    setup: Annotated[bool, typer.Option(help="Migrate, declare and seed first.")] = True,
    mail_dir: Annotated[Path, typer.Option(help="Where the development mail catcher keeps"
                                           " messages when no SMTP server is listening.")]
    = Path("var/mail"),
) -> None:
    """Run the services as local processes in this terminal; Ctrl-C stops them all cleanly."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, "supervisor")
    names = services or list(SERVICES)
    for name in names:
        builder(name)  # fail fast on a typo
    ensure_infrastructure(settings)
    if setup:
        migrate()
        topology_declare()
        seed()
    catcher = None
    if "notification" in names and not _listening(settings.smtp_host, settings.smtp_port):
        from services.cli.mailcatcher import start

        catcher = start(settings.smtp_host, settings.smtp_port, mail_dir)
        typer.echo(f"no SMTP server on {settings.smtp_host}:{settings.smtp_port}: started the"
                   f" development mail catcher there; messages are kept in {mail_dir}/")
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for name in names:
        for replica in range(replicas):
            env = os.environ.copy()
            if replica and settings.http_port is None:
                # Replicas on one host need ports of their own: 8081, 8181, 8281, ...
                env["CAREWATCH_HTTP_PORT"] = str(DEFAULT_PORTS[name] + 100 * replica)
            procs.append((name, subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                                 env=env)))
    typer.echo(f"started {', '.join(f'{n}[{p.pid}]' for n, p in procs)}; Ctrl-C to stop")

    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, proc in procs:
            if proc.poll() is not None:
                typer.secho(f"{name} exited with {proc.returncode}; stopping the others",
                            fg="red", err=True)
                exit_code = 1
                stopping = True
        time.sleep(0.2)
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.graceful_timeout + 5
    for name, proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            typer.secho(f"{name} did not stop in time; killing it", fg="yellow", err=True)
            proc.kill()
    if catcher is not None:
        catcher.stop()
    typer.echo("stopped")
    raise typer.Exit(exit_code)


def main() -> None:
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
