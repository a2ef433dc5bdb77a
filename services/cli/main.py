"""carewatch: run, migrate, seed and inspect carewatch.

Every command reads the same CAREWATCH_* settings as the services.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from services.cli.common import Unreachable, connect_amqp, connect_db, run_async, with_db
from services.cli.lazy import Lazy, lazy_app

if TYPE_CHECKING:
    from shared.settings import Settings

# Each command's module is imported only when the command runs (carewatch --help and the
# list commands start in a fraction of a second). tests/unit/test_cli.py checks that
# this table names every command group of every service's cli.py.
LAZY = {
    "providers": Lazy("services.intake.cli:providers_app", "The provider registry."),
    "feeds": Lazy("services.intake.cli:feeds_app",
                  "Provider feeds: what each may submit, and their API keys."),
    "quarantine": Lazy("services.intake.cli:quarantine_app",
                       "Rejected submissions: inspect, correct and resubmit (operators"
                       " only: the bodies are raw and may hold personal data; they are"
                       " deleted after CAREWATCH_QUARANTINE_RETENTION_DAYS)."),
    "submit": Lazy("services.intake.cli:submit", "Submit a bulk file through intake."),
    "concerns": Lazy("services.quality_monitor.cli:concerns_app",
                     "Concerns raised by quality-monitor."),
    "improvements": Lazy("services.quality_monitor.cli:improvements_app",
                         "Special-cause improvement seen by quality-monitor."),
    "charts": Lazy("services.quality_monitor.cli:charts_app",
                   "SPC charts and funnel plots (PNG) from quality-monitor's data."),
    "rebases": Lazy("services.quality_monitor.cli:rebases_app",
                    "Rebases of SPC series: recorded by the quality team, or proposed by the"
                    " monitor after a sustained shift."),
    "measures": Lazy("services.quality_monitor.cli:measures_app",
                     "Measures as Making Data Count reads them."),
    "reports": Lazy("services.quality_monitor.reports.cli:reports_app",
                    "Reports: the monthly CQRM pack, the quarterly Quality & Performance"
                    " report, \"you said, we did\"; versions kept."),
    "meetings": Lazy("services.escalation.cli:meetings_app", "Remedial-action meetings."),
    "people": Lazy("services.escalation.cli:people_app",
                   "The commissioner's people on the meeting rota: hours, daily cap, buffer,"
                   " leave."),
    "actions": Lazy("services.escalation.cli:actions_app",
                    "Remedial actions: the action plans agreed with providers."),
    "escalation": Lazy("services.escalation.cli:escalation_app",
                       "Escalation: concerns, the audit trail, CQRM agendas, visits, the"
                       " schedule."),
    "notifications": Lazy("services.notification.cli:notifications_app",
                          "Notifications and deliveries."),
    "silences": Lazy("services.notification.cli:silences_app",
                     "Silences: time-bounded mutes by provider, rule or route."),
    "users": Lazy("services.cli.identity:users_app",
                  "Accounts: people and service accounts, with their roles."),
    "tokens": Lazy("services.cli.identity:tokens_app",
                   "API tokens: hashed, scoped, expiring, revocable."),
    "secrets": Lazy("services.cli.secrets:secrets_app",
                    "Credentials: generate them at first run, refuse weak ones."),
    "dlq": Lazy("services.cli.ops:dlq_app", "Dead-letter queues: what failed, why, and replay."),
    "outbox": Lazy("services.cli.ops:outbox_app", "Transactional outboxes."),
    "status": Lazy("services.cli.ops:status", "One screen: queues, dead letters, outboxes,"
                   " quarantine, concerns, meetings and deliveries."),
}

app = lazy_app(LAZY, help=__doc__, no_args_is_help=True, add_completion=False,
               rich_markup_mode=None, pretty_exceptions_enable=False)
topology_app = typer.Typer(help="RabbitMQ exchanges, queues and bindings.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(topology_app, name="topology")


# -- setting up ----------------------------------------------------------------------------
@app.command()
def migrate() -> None:
    """Create or update every service's PostgreSQL schema."""
    from services.catalogue import SERVICES, builder
    from shared import identity
    from shared.db import migrate as migrate_schema
    from shared.settings import get_settings

    settings = get_settings()

    async def work() -> None:
        await ensure_database(settings)
        conn = await connect_db(settings)
        try:
            applied = await migrate_schema(conn, identity.SCHEMA, identity.MIGRATIONS,
                                           messaging=False)
            typer.echo(f"{identity.SCHEMA}: {', '.join(applied) if applied else 'up to date'}")
            for name in SERVICES:
                runtime = builder(name)(settings)
                applied = await migrate_schema(conn, runtime.schema, runtime.migrations)
                typer.echo(f"{runtime.schema}: {', '.join(applied) if applied else 'up to date'}")
        finally:
            await conn.close()

    run_async(work())


async def ensure_database(settings: Settings) -> None:
    """Create the configured database if the server does not have it yet."""
    import asyncpg

    dsn = settings.database_url
    try:
        conn = await connect_db(settings)
    except Unreachable as exc:
        if not isinstance(exc.__cause__, asyncpg.InvalidCatalogNameError):
            raise
        name = dsn.rsplit("/", 1)[1].split("?")[0]
        admin = await connect_db(settings, dsn.rsplit("/", 1)[0] + "/postgres")
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
    from services.catalogue import all_subscriptions
    from shared.settings import get_settings
    from shared.topology import Topology

    settings = get_settings()
    topology = Topology(settings.namespace, settings.delivery_limit)

    async def work() -> None:
        connection = await connect_amqp(settings)
        async with connection:
            subs = all_subscriptions(topology)
            await topology.declare(await connection.channel(), subs)
        typer.echo(f"declared {len(subs)} queues (and their dead-letter queues) in"
                   f" namespace {settings.namespace!r}")

    run_async(work())


@app.command()
def seed(providers_file: Annotated[list[Path] | None, typer.Option(
        help="Provider registry CSV (repeatable; default: the samples, data/providers.csv and"
        " data/providers-gp-care-community.csv).")] = None) -> None:
    """Load the provider registry and, if CAREWATCH_DEV_FEED_USER is set, register that
    RabbitMQ user as a development feed for every provider."""
    import asyncpg

    from services.intake import store as intake_store
    from shared.settings import get_settings

    settings = get_settings()
    files = providers_file or [intake_store.SAMPLE_PROVIDERS, intake_store.SAMPLE_OTHER_PROVIDERS]
    rows = [row for path in files for row in intake_store.read_providers_csv(path)]

    async def work(conn: asyncpg.Connection) -> None:
        n = await intake_store.upsert_providers(conn, rows)
        typer.echo(f"providers: {n} loaded from {', '.join(map(str, files))}")
        if settings.dev_feed_user:
            known = {r["ods_code"] for r in rows}
            named = sorted({c.strip().upper() for c in settings.dev_feed_ods.split(",")
                            if c.strip()})
            unknown = [c for c in named if c not in known]
            if unknown or not named:
                raise typer.BadParameter(
                    f"CAREWATCH_DEV_FEED_ODS must name the development feed's providers"
                    f" (registered ODS codes, comma-separated); unknown: {unknown or '(none)'}")
            await intake_store.register_feed(
                conn, settings.dev_feed_user, named,
                "development feed (CAREWATCH_DEV_FEED_USER, CAREWATCH_DEV_FEED_ODS)")
            typer.echo(f"feed {settings.dev_feed_user!r} may submit for {', '.join(named)}")

    with_db(work, settings)


@app.command()
def docs() -> None:
    """Regenerate the AsyncAPI document of every service into docs/asyncapi/, and the
    OpenAPI documents of intake's and escalation's HTTP APIs into docs/openapi/."""
    from services.cli import asyncapi, openapi

    for path in [*asyncapi.write_all(), *openapi.write_all()]:
        typer.echo(f"wrote {path}")


@app.command()
def health(service: Annotated[str, typer.Option(help="Service to check.")]) -> None:
    """Exit 0 when the service's schema is migrated and each of its queues has a consumer."""
    from services.catalogue import builder
    from shared.settings import get_settings

    settings = get_settings()
    runtime = builder(service)(settings)

    async def work() -> list[str]:
        problems: list[str] = []
        conn = await connect_db(settings, timeout=5)
        try:
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                       f"{runtime.schema}.outbox"):
                problems.append(f"schema {runtime.schema} is not migrated")
        finally:
            await conn.close()
        connection = await connect_amqp(settings, timeout=5)
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


def occupant(host: str, port: int, wanted: str) -> str:
    """Who holds the HTTP port a service needs: a carewatch service (its /health says which)
    or another program."""
    import json
    from urllib.request import urlopen

    url = f"http://{host}:{port}"
    try:
        with urlopen(f"{url}/health", timeout=2) as response:
            service = json.loads(response.read()).get("service")
    except (OSError, ValueError, AttributeError):
        service = None
    if service:
        return f"{service} at {url} (its /health answers)"
    return f"port {port}, which {wanted} needs, is taken by another program ({url})"


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def ensure_infrastructure(settings: Settings) -> None:
    """RabbitMQ and PostgreSQL at the configured URLs; where neither answers and a Docker
    engine does, start them (and the mail catcher) with docker compose."""
    import shutil

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
    from services.catalogue import SERVICES, builder
    from services.cli import secrets as secrets_cli
    from services.cli.secrets import ENV_EXAMPLE, ENV_FILE
    from shared import identity
    from shared.http import DEFAULT_PORTS
    from shared.logs import configure_logging
    from shared.runtime import refuse_weak_credentials
    from shared.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, "supervisor")
    if not ENV_FILE.exists():
        secrets_cli.init_secrets(ENV_EXAMPLE, ENV_FILE)
    refuse_weak_credentials(settings, "carewatch run")
    names = services or list(SERVICES)
    for name in names:
        builder(name)  # fail fast on a typo
    # Each process's HTTP port (CAREWATCH_HTTP_PORT=0: any free one, nothing to check).
    ports = {(name, replica): DEFAULT_PORTS[name] + 100 * replica
             if settings.http_port is None else settings.http_port
             for name in names for replica in range(replicas)}
    if busy := [occupant(settings.http_host, port, name) for (name, _), port in ports.items()
                if port and _listening(settings.http_host, port)]:
        typer.secho("carewatch is already running here:", fg="red", err=True)
        for line in busy:
            typer.echo(f"  {line}", err=True)
        typer.echo("Stop it first (Ctrl-C in the terminal running it); `carewatch status` shows"
                   " what it is doing.", err=True)
        raise typer.Exit(1)
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
    workspace_env: dict[str, str] = {}
    if "workspace" in names and not os.environ.get("CAREWATCH_WORKSPACE_TOKEN"):
        from services.workspace.cli import run_token

        # Its service account's token, so that its commands reach escalation.
        workspace_env["CAREWATCH_WORKSPACE_TOKEN"] = with_db(
            lambda conn: run_token(conn, identity.local_operator()), settings)
    monitor_env: dict[str, str] = {}
    if "quality_monitor" in names and not os.environ.get("CAREWATCH_REPORTS_TOKEN"):
        from services.quality_monitor.reports.config import SERVICE_ACCOUNT as MONITOR

        # Its service account's token, so that its reports read escalation's API.
        monitor_env["CAREWATCH_REPORTS_TOKEN"] = with_db(lambda conn: identity.service_token(
            conn, MONITOR, [identity.QUALITY_TEAM], display_name="carewatch quality-monitor",
            label="carewatch run", created_by=identity.local_operator()), settings)
    if "workspace" in names and not os.environ.get("CAREWATCH_WORKSPACE_PUBLIC_FEED_KEY"):
        from services.workspace.cli import public_feed_key

        # The public feedback page posts to intake as the public's door feed.
        workspace_env["CAREWATCH_WORKSPACE_PUBLIC_FEED_KEY"] = with_db(public_feed_key,
                                                                       settings)
    if "workspace" in names and not os.environ.get("CAREWATCH_WORKSPACE_FORM_SECRET"):
        import secrets

        # One secret for every replica: a form served by one is accepted by the others.
        workspace_env["CAREWATCH_WORKSPACE_FORM_SECRET"] = secrets.token_urlsafe(32)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for name in names:
        for replica in range(replicas):
            env = {**os.environ, **(workspace_env if name == "workspace" else {}),
                   **(monitor_env if name == "quality_monitor" else {})}
            if replica and settings.http_port is None:
                # Replicas on one host need ports of their own: 8081, 8181, 8281, ...
                env["CAREWATCH_HTTP_PORT"] = str(ports[name, replica])
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
    import logging

    logging.getLogger("asyncio").setLevel(logging.WARNING)
    # A connection failure is said once, by the command, naming the setting to check.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    app()


if __name__ == "__main__":
    main()
