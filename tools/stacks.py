"""An isolated carewatch stack for benchmarks and tests: its own database and namespace on
the configured broker and database server, the services as separate processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import asyncpg

from services.catalogue import SERVICES, all_subscriptions, builder
from services.intake import store as intake_store
from shared import identity
from shared.db import create_pool, migrate
from shared.settings import Settings
from shared.topology import Topology

ROOT = Path(__file__).resolve().parents[1]
ADMIN_DSN = os.environ.get("CAREWATCH_BENCH_ADMIN_DSN",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("CAREWATCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass
class Stack:
    settings: Settings
    db_name: str
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    # Processes of the bench's own that the CPU meter shows by name (the SMTP server).
    others: dict[str, int] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREWATCH_")}
        env.update({"CAREWATCH_AMQP_URL": s.amqp_url, "CAREWATCH_DATABASE_URL": s.database_url,
                    "CAREWATCH_NAMESPACE": s.namespace, "CAREWATCH_SMTP_HOST": s.smtp_host,
                    "CAREWATCH_BROKER_USERS": json.dumps(s.broker_users),
                    # A stack on the local guest broker and trusting database.
                    "CAREWATCH_DEV_MODE": "1",
                    "CAREWATCH_SMTP_PORT": str(s.smtp_port), "CAREWATCH_HTTP_PORT": "0",
                    "CAREWATCH_INBOUND_SMTP_PORT": "0",
                    "CAREWATCH_LOG_LEVEL": "WARNING", "CAREWATCH_LOG_FORMAT": "json",
                    "PYTHONPATH": str(ROOT), **extra})
        return env

    def start(self, *services: str, **extra: str) -> None:
        logs = ROOT / "var" / "stacks"
        logs.mkdir(parents=True, exist_ok=True)
        for name in services:
            log = open(logs / f"{self.settings.namespace}-{name}.log", "ab")
            proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                    env=self.env(**extra), cwd=ROOT, stderr=log, stdout=log)
            self.procs.setdefault(name, []).append(proc)

    async def wait_consuming(self, replicas: int = 1, stall: float = 60.0) -> None:
        """Until every queue of the started services has ``replicas`` consumers.

        Waits on progress, not on a budget sized for an idle machine: a service still starting
        (importing, migrating) uses CPU, and a queue that gains a consumer is progress. It
        fails at once when a service exits, and after ``stall`` seconds without either."""
        import asyncio
        import time

        subs = [sub for name in self.procs for sub in builder(name)(self.settings).subscriptions]
        last: tuple[float, list[int]] | None = None
        moved = time.monotonic()
        while True:
            exited = [(name, p.returncode) for name, procs in self.procs.items() for p in procs
                      if p.poll() is not None]
            if exited:
                raise RuntimeError(f"services exited while starting: {exited} (logs in"
                                   f" var/stacks/{self.settings.namespace}-*.log)")
            connection = await aio_pika.connect(self.settings.amqp_url)
            async with connection:
                channel = await connection.channel()
                counts = [(await channel.declare_queue(sub.queue, passive=True))
                          .declaration_result.consumer_count or 0 for sub in subs]
            if all(c >= replicas for c in counts):
                return
            cpu = sum(p.own + p.reaped for p in read_processes(
                [p.pid for procs in self.procs.values() for p in procs]).values())
            if last is None or counts != last[1] or cpu > last[0] + 0.05:
                last, moved = (cpu, counts), time.monotonic()
            elif time.monotonic() - moved > stall:
                missing = [sub.queue for sub, c in zip(subs, counts, strict=True)
                           if c < replicas]
                raise TimeoutError(f"services not consuming, and no progress for {stall:.0f}s:"
                                   f" {missing}")
            await asyncio.sleep(0.3)

    def stop(self) -> None:
        for procs in self.procs.values():
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        for procs in self.procs.values():
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.procs.clear()

    def cpu(self) -> CpuMeter:
        """A CPU meter over this stack's services, the broker, the database and this process."""
        groups = {name: [p.pid for p in procs] for name, procs in self.procs.items()}
        groups.update({name: [pid] for name, pid in self.others.items()})
        return CpuMeter(groups)

    def rss_mib(self) -> dict[str, float]:
        out = {}
        for name, procs in self.procs.items():
            for p in procs:
                status = Path(f"/proc/{p.pid}/status")
                if status.exists():
                    for line in status.read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            out[name] = int(line.split()[1]) / 1024
        return out


@dataclass(frozen=True)
class ProcessCpu:
    """One process at one reading: its parent, its own CPU seconds (user + system) and those
    of the children it has reaped (``cutime`` + ``cstime``)."""

    ppid: int
    own: float
    reaped: float


# A reading of a group of processes. A process is known by its pid and its start time (in
# clock ticks since boot): pids are reused, and a new process under an old pid is new.
Reading = dict[tuple[int, int], ProcessCpu]


def _process_cpu(pid: int) -> tuple[tuple[int, int], ProcessCpu] | None:
    """One process's line of /proc/<pid>/stat (None once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")": state is fields[0] (stat field 3); ppid 1; utime, stime, cutime, cstime
    # 11 to 14; starttime 19.
    tick = os.sysconf("SC_CLK_TCK")
    return (pid, int(fields[19])), ProcessCpu(
        ppid=int(fields[1]), own=(int(fields[11]) + int(fields[12])) / tick,
        reaped=(int(fields[13]) + int(fields[14])) / tick)


def read_processes(pids: list[int]) -> Reading:
    """A reading of the processes ``pids`` (those gone meanwhile are left out)."""
    return dict(p for p in map(_process_cpu, pids) if p is not None)


def cpu_used(start: Reading, end: Reading) -> float:
    """CPU seconds a group of processes used between two readings of it.

    - A process in both readings: what its own CPU and its reaped children's grew by.
    - A process that started since: all of its CPU (it all falls in the window).
    - A process that has exited since: what it used before ``start`` is never subtracted.
      When its parent is in the group (PostgreSQL's backends and the postmaster), the
      parent has reaped it and its whole life's CPU is in the parent's growth: its CPU at
      ``start`` is taken off that, which leaves what it used in the window. A process whose
      parent is outside the group (or that started and exited in the window) counts through
      its parent only.
    """
    used = 0.0
    for key, now in end.items():
        before = start.get(key)
        used += now.own + now.reaped - (before.own + before.reaped if before else 0.0)
    by_pid = {key[0]: key for key in start}
    for key, before in start.items():
        if key in end:
            continue
        parent = by_pid.get(before.ppid)
        if parent is not None and parent in end:
            used -= before.own + before.reaped
    return max(0.0, used)


def _pids_of_user(user: str) -> list[int]:
    """Every process of a system user (the broker's or the database's), if it exists here."""
    import pwd

    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
    return pids


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used between ``start`` and ``read``, per service process group, by the
    local broker (user rabbitmq), the local database (user postgres; its backends are
    listed at each reading), this process (the load generator) and everything else on the
    machine. On a shared machine this says where the cores went, and so what limits a
    figure."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups = groups
        self._start: dict[str, Reading] = {}
        self._machine = 0.0
        self._t0 = 0.0

    def _now(self) -> tuple[dict[str, Reading], float]:
        readings = {name: read_processes(pids) for name, pids in self._groups.items()}
        readings["rabbitmq"] = read_processes(_pids_of_user("rabbitmq"))
        readings["postgresql"] = read_processes(_pids_of_user("postgres"))
        # This process and the children it reaps (as os.times() counts them).
        readings["load generator"] = read_processes([os.getpid()])
        return readings, _machine_busy_seconds()

    def start(self) -> CpuMeter:
        import time

        (self._start, self._machine), self._t0 = self._now(), time.perf_counter()
        return self

    def read(self) -> tuple[float, dict[str, float]]:
        """(wall seconds, CPU seconds per name) since ``start``."""
        import time

        now, machine = self._now()
        used = {name: cpu_used(self._start.get(name, {}), reading)
                for name, reading in now.items()}
        used["everything else"] = max(0.0, machine - self._machine - sum(used.values()))
        return time.perf_counter() - self._t0, used


@contextlib.asynccontextmanager
async def scratch_database(name: str, max_size: int = 2, admin_dsn: str = ADMIN_DSN,
                           json_columns: bool = False) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own for one benchmark figure (or one test), dropped afterwards;
    ``json_columns``: JSON in and out as Python objects, as the services' pools do."""
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = database_url(admin_dsn, name)
    pool = (await create_pool(url, min_size=1, max_size=max_size) if json_columns else
            await asyncpg.create_pool(url, min_size=1, max_size=max_size))
    try:
        yield pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def database_url(admin_dsn: str, name: str) -> str:
    """``admin_dsn`` pointing at database ``name`` (query string kept)."""
    base, _, query = admin_dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def provision(admin_dsn: str, settings: Settings, feed_user: str = "guest") -> None:
    """Create the settings' database, migrate every schema, load the provider registry with
    ``feed_user`` as a feed for every provider, and declare the namespace's topology."""
    name = settings.database_url.partition("?")[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn, identity.SCHEMA, identity.MIGRATIONS, messaging=False)
        for service in SERVICES:
            runtime = builder(service)(settings)
            await migrate(conn, runtime.schema, runtime.migrations)
        rows = intake_store.read_providers_csv(intake_store.SAMPLE_PROVIDERS)
        await intake_store.upsert_providers(conn, rows)
        await intake_store.register_feed(conn, feed_user, intake_store.ods_codes(rows),
                                         "isolated stack")
    finally:
        await conn.close()
    topology = Topology(settings.namespace, settings.delivery_limit)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        await topology.declare(await connection.channel(), all_subscriptions(topology))


async def deprovision(admin_dsn: str, settings: Settings) -> None:
    """Remove the namespace's exchanges and queues and drop the settings' database."""
    topology = Topology(settings.namespace, settings.delivery_limit)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        await topology.delete_all(await connection.channel(), all_subscriptions(topology))
    name = settings.database_url.partition("?")[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def stack(smtp_port: int | None = None, amqp_url: str = AMQP,
                admin_dsn: str = ADMIN_DSN) -> AsyncIterator[Stack]:
    """A fresh database and namespace, migrated, seeded and declared; removed afterwards.

    Without ``smtp_port``, an SMTP server of its own accepts (and drops) the stack's mail:
    with no server, notification would retry every delivery and its retries would be
    counted as the run's work. Its CPU is shown as the "smtp server"."""
    sink = None
    if smtp_port is None:
        sink = MailSink()
        smtp_port = sink.port
    try:
        async with _stack(smtp_port, amqp_url, admin_dsn) as s:
            if sink is not None:
                s.others["smtp server"] = sink.pid
            yield s
    finally:
        if sink is not None:
            sink.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MailSink:
    """A real SMTP server (aiosmtpd's, in a process of its own, so its CPU is its own in the
    figures) on a free port, accepting every message and dropping it."""

    def __init__(self, start_within: float = 30.0) -> None:
        import socket
        import time

        self.port = free_port()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
             "-l", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self._proc.pid
        deadline = time.monotonic() + start_within
        while True:  # until it answers (or has exited)
            with socket.socket() as conn:
                if conn.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the bench's SMTP server did not start on {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


@contextlib.asynccontextmanager
async def _stack(smtp_port: int, amqp_url: str, admin_dsn: str) -> AsyncIterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    db_name = f"carewatch_bench_{tag}"
    settings = Settings(amqp_url=amqp_url, database_url=database_url(admin_dsn, db_name),
                        namespace=f"cwbench_{tag}", smtp_port=smtp_port, http_port=0,
                        # Every process of the stack connects as the one user of amqp_url.
                        broker_users={"*": urlsplit(amqp_url).username or "guest"})
    await provision(admin_dsn, settings)
    s = Stack(settings, db_name)
    try:
        yield s
    finally:
        s.stop()
        await deprovision(admin_dsn, settings)
