"""Fault injection (``make test-faults``): nothing lost, nothing duplicated, whatever breaks.

While a realistic stream (with duplicates, bad records and planted serious risks) flows
through the four services running as processes, each service is killed with SIGKILL at a
random moment and restarted, RabbitMQ is restarted, PostgreSQL is restarted, and the SMTP
server refuses mail for a while. Then the database is compared with the stream.

CAREWATCH_FAULTS selects the faults (default: kill,rabbitmq,postgres,smtp); restarting the
broker or the database disturbs anything else using them, so leave those out on a shared
machine. CAREWATCH_FAULT_STREAM sets the stream's size (default 10,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from services.catalogue import SERVICES, all_subscriptions
from shared.settings import Settings
from shared.topology import Topology
from tests.helpers import Inbox, calendar_part, eventually, service_env, smtp_server
from tools.publisher import publish_items
from tools.stream import StreamGenerator, load_providers

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
FAULTS = set(os.environ.get("CAREWATCH_FAULTS", "kill,rabbitmq,postgres,smtp").split(","))
STREAM = int(os.environ.get("CAREWATCH_FAULT_STREAM", "10000"))
POISON = 5


class Services:
    """The four services as processes, restarted when they die (like a restart policy)."""

    def __init__(self, settings: Settings) -> None:
        # A send that failed several times (SMTP refusing, then the database restarting) may
        # wait up to the production cap (300 s) with nothing else to write, which is also the
        # settle wait's limit without progress: the likely cause of one run in five on
        # 2026-12-07 that never settled (not confirmed: its logs were overwritten). Retries
        # here come within 20 s; what is asserted (nothing lost, nothing sent twice) is the same.
        self.env = service_env(settings, CAREWATCH_LOG_FORMAT="json",
                               CAREWATCH_LOG_LEVEL="WARNING",
                               CAREWATCH_NOTIFICATION_BACKOFF_CAP="20")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        self.logs = ROOT / "var" / "faults"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._watch: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                            env=self.env, cwd=ROOT, stderr=log, stdout=log)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()
        self.kills[name] += 1

    async def watch(self) -> None:
        while True:
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    await asyncio.sleep(1.0)  # a restart policy's back-off
                    self.restarts[name] += 1
                    self.start(name)
            await asyncio.sleep(0.2)

    def __enter__(self) -> Services:
        for name in SERVICES:
            self.start(name)
        self._watch = asyncio.get_running_loop().create_task(self.watch())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watch:
            self._watch.cancel()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)


async def restart_rabbitmq() -> None:
    await asyncio.to_thread(run, "rabbitmqctl", "stop_app")
    await asyncio.sleep(2)
    await asyncio.to_thread(run, "rabbitmqctl", "start_app")
    await asyncio.to_thread(run, "rabbitmqctl", "await_startup")


async def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    await asyncio.to_thread(run, "pg_ctlcluster", "--skip-systemctl-redirect", version, "main",
                            "restart")


async def chaos(services: Services, inbox: Inbox, log: list[str]) -> None:
    rng = random.Random()
    order = list(SERVICES)
    rng.shuffle(order)
    for name in order:
        if "kill" in FAULTS:
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            services.kill(name)
            log.append(f"kill -9 {name}")
    if "smtp" in FAULTS:
        inbox.refuse = True
        log.append("SMTP refusing mail")
        await asyncio.sleep(rng.uniform(4.0, 8.0))
        inbox.refuse = False
        log.append("SMTP accepting mail again")
    if "rabbitmq" in FAULTS:
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        await restart_rabbitmq()
        log.append("RabbitMQ restarted")
    if "postgres" in FAULTS:
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        await restart_postgres()
        log.append("PostgreSQL restarted")


async def queue_depths(settings: Settings) -> dict[str, int]:
    topology = Topology(settings.namespace, settings.delivery_limit)
    connection = await aio_pika.connect(settings.amqp_url)
    depths = {}
    async with connection:
        channel = await connection.channel()
        for sub in all_subscriptions(topology):
            for name in (sub.queue, sub.dead_letter_queue):
                q = await channel.declare_queue(name, passive=True)
                depths[name] = q.declaration_result.message_count or 0
    return depths


@pytest.fixture
async def fresh_db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=3)
    yield pool
    await pool.close()


async def test_nothing_lost_nothing_duplicated_under_faults(
        settings: Settings, fresh_db: asyncpg.Pool) -> None:
    db = fresh_db
    generator = StreamGenerator(load_providers(), seed=random.randrange(1_000_000))
    items = generator.take(STREAM, date(2026, 6, 1), serious_every=400)
    expected = generator.expected
    run_id = uuid.uuid4().hex[:8]
    controller, inbox = smtp_server(settings.smtp_port)
    log: list[str] = []
    started = time.monotonic()
    with Services(settings) as services:
        await asyncio.sleep(3)
        publishing = asyncio.create_task(publish_items(
            items, url=settings.amqp_url, namespace=settings.namespace, run=run_id, rate=300))
        poison_ids = [str(uuid.uuid4()) for _ in range(POISON)]
        await chaos(services, inbox, log)
        await publishing
        # Poison events: never handleable, so each must end in a dead-letter queue.
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange(f"{settings.namespace}.events")
            for pid in poison_ids:
                await events.publish(aio_pika.Message(b"{broken", message_id=pid),
                                     routing_key="feedback.accepted.v1", mandatory=True)

        async def settled() -> bool:
            with contextlib.suppress(Exception):
                depths = await queue_depths(settings)
                live = sum(v for k, v in depths.items() if not k.endswith(".dlq"))
                outbox = sum([await db.fetchval(f"SELECT count(*) FROM {s}.outbox")
                              for s in ("intake", "monitor", "escalation", "notification")])
                pending = await db.fetchval("SELECT count(*) FROM notification.notifications"
                                            " WHERE status = 'pending'")
                fed = await db.fetchval("SELECT count(*) FROM monitor.feedback")
                return live == 0 and outbox == 0 and pending == 0 and fed >= expected.accepted
            return False

        await eventually(settled, timeout=300, interval=1.0, what="the pipeline to settle")
        await asyncio.sleep(2)
        assert await settled()
    controller.stop()
    elapsed = time.monotonic() - started

    accepted = await db.fetchval("SELECT count(*) FROM intake.feedback")
    quarantined = await db.fetchval("SELECT count(*) FROM intake.quarantine"
                                    " WHERE message_id LIKE $1", f"{run_id}-%")
    duplicates = await db.fetchval("SELECT coalesce(sum(duplicates), 0) FROM intake.feedback")
    monitored = await db.fetchval("SELECT count(*) FROM monitor.feedback")
    serious = await db.fetch(
        "SELECT ods_code, theme, count(*) AS n FROM monitor.concerns"
        " WHERE rule = 'immediate_serious_risk' GROUP BY ods_code, theme")
    meetings = await db.fetch("SELECT m.meeting_id, m.concern_id FROM escalation.meetings m")
    sent = await db.fetch("SELECT payload->>'meeting_id' AS meeting, recipient, status"
                          " FROM notification.notifications WHERE event_type ="
                          " 'meeting.scheduled.v1'")
    depths = await queue_depths(settings)
    dead = {k: v for k, v in depths.items() if k.endswith(".dlq") and v}

    # One invitation = one (meeting, SEQUENCE, METHOD) to one recipient; an update of the
    # meeting (new evidence: SEQUENCE + 1) is a new invitation, not a copy.
    mails: Counter[tuple[str, str, str, str]] = Counter()
    message_ids: dict[tuple[str, str, str, str], set[str]] = {}
    invitations = [(rcpts, msg) for rcpts, msg in inbox.messages
                   if any(p.get_content_type() == "text/calendar" for p in msg.walk())]
    for rcpts, msg in invitations:
        ics = calendar_part(msg).decode()
        lines = ics.splitlines()
        uid = next(line[12:48] for line in lines if line.startswith("UID:meeting-"))
        sequence = next((line[9:] for line in lines if line.startswith("SEQUENCE:")), "0")
        method = next(line[7:] for line in lines if line.startswith("METHOD:"))
        for r in rcpts:
            mails[(uid, sequence, method, r)] += 1
            message_ids.setdefault((uid, sequence, method, r), set()).add(str(msg["Message-ID"]))
    extra_copies = sum(n - 1 for n in mails.values())

    print(f"\nfaults: {'; '.join(log)}")
    print(f"killed {dict(services.kills)}, restarted {dict(services.restarts)}")
    print(f"stream {len(items)} in {elapsed:.0f}s: accepted {accepted}/{expected.accepted},"
          f" quarantined {quarantined}/{expected.rejected}, duplicates counted {duplicates}"
          f" ({expected.duplicates} sent), monitor {monitored}")
    print(f"serious concerns {len(serious)}/{len(expected.serious)}, meetings {len(meetings)},"
          f" invitations {len(invitations)} of {len(inbox.messages)} e-mails ({extra_copies}"
          f" extra copies, same Message-ID),"
          f" dead letters {dead}")

    assert accepted == expected.accepted, "every valid submission accepted exactly once"
    assert monitored == expected.accepted
    assert quarantined == expected.rejected, "every bad record quarantined exactly once"
    assert {(r["ods_code"], r["theme"]) for r in serious} == expected.serious
    assert all(r["n"] == 1 for r in serious), "one concern per fingerprint"
    # One remedial meeting per provider (issue 17): a provider's serious concerns gather on
    # one agenda, and every serious concern is on exactly one.
    agendas = await db.fetch(
        "SELECT c.ods_code, count(DISTINCT mc.meeting_id) AS meetings, count(*) AS rows"
        " FROM escalation.concerns c JOIN escalation.meeting_concerns mc USING (concern_id)"
        " WHERE c.rule = 'immediate_serious_risk' GROUP BY c.ods_code")
    assert {r["ods_code"] for r in agendas} == {ods for ods, _ in expected.serious}, \
        "every provider with a serious concern has its meeting"
    assert all(r["meetings"] == 1 for r in agendas), "one meeting per provider"
    assert sum(r["rows"] for r in agendas) == len(expected.serious), \
        "every serious concern on exactly one agenda"
    assert len({r["meeting"] for r in sent}) == len(meetings)
    assert all(r["status"] == "sent" for r in sent), "every notification delivered"
    invited = {(uid, r) for uid, _, method, r in mails if method == "REQUEST"}
    for (meeting, recipient) in {(r["meeting"], r["recipient"]) for r in sent}:
        assert (meeting, recipient) in invited, f"no invitation to {recipient} for {meeting}"
    assert all(len(ids) == 1 for ids in message_ids.values()), \
        "a second copy may only repeat the same Message-ID"
    poisoned = {sub.dead_letter_queue: POISON for sub in
                all_subscriptions(Topology(settings.namespace, settings.delivery_limit))
                if sub.routing_key == "feedback.accepted.v1"}  # the routine lane takes the bare key
    assert dead == poisoned, "the poison messages, and nothing else, are dead-lettered"
