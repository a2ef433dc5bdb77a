"""Scale-out correctness: three replicas of every service, as processes, give the same outcome
as one; stopping replicas mid-stream (SIGTERM) loses nothing."""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from services.catalogue import SERVICES
from services.escalation.config import DEFAULT_POLICY
from shared.db import create_pool
from tests.conftest import ServerUrls, free_port
from tests.helpers import eventually, smtp_server
from tools.publisher import publish_items
from tools.stacks import Stack, stack
from tools.stream import Item, StreamGenerator, load_providers

pytestmark = pytest.mark.e2e


def realistic_stream() -> tuple[list[Item], int]:
    generator = StreamGenerator(load_providers(), seed=2026)
    items = generator.take(3_000, date(2026, 3, 1), serious_every=250)
    return items, generator.expected.accepted


async def outcome(s: Stack) -> dict[str, Any]:
    """What the run produced, independent of ids and timing."""
    pool = await create_pool(s.settings.database_url, min_size=1, max_size=1)
    conn = await pool.acquire()
    try:
        record_of = {r["feedback_id"]: (r["ods_code"], r["provider_record_id"]) for r in
                     await conn.fetch("SELECT feedback_id, ods_code, provider_record_id"
                                      " FROM intake.feedback")}
        concerns = {
            (r["fingerprint"], r["severity"], r["status"],
             frozenset(record_of[uuid.UUID(e["feedback_id"])] for e in r["evidence"]))
            for r in await conn.fetch("SELECT * FROM monitor.concerns")}
        # A meeting is known by the concerns on its agenda (a provider's concerns gather on
        # one meeting; which of them booked it depends on the order of handling).
        agenda = ("(SELECT string_agg(c.rule || '|' || c.ods_code || '|' || c.theme, ','"
                  " ORDER BY c.rule, c.ods_code, c.theme) FROM escalation.meeting_concerns mc"
                  " JOIN escalation.concerns c USING (concern_id)"
                  " WHERE mc.meeting_id = m.meeting_id)")
        meetings = sorted(r["fingerprint"] for r in await conn.fetch(
            f"SELECT {agenda} AS fingerprint FROM escalation.meetings m"))
        # Invitations and cancellations; how many updates a meeting gets depends on how its
        # changes fall into the coalescing windows, so updates are not compared.
        notified = sorted((r["fingerprint"], r["recipient"], r["status"]) for r in await conn.fetch(
            f"SELECT {agenda} AS fingerprint, n.recipient, n.status"
            " FROM notification.notifications n"
            " JOIN escalation.meetings m ON m.meeting_id = (n.payload->>'meeting_id')::uuid"
            " WHERE n.event_type <> 'meeting.rescheduled.v1'"))
        return {
            "accepted": sorted(record_of.values()),
            "quarantined": await conn.fetchval("SELECT count(*) FROM intake.quarantine"),
            "concerns": concerns,
            "meetings": meetings,
            "notified": notified,
        }
    finally:
        await pool.release(conn)
        await pool.close()


def booked_by_removed(subject: str) -> str:
    """A meeting e-mail's subject without the theme and severity of the concern that booked
    the meeting ("Invitation: Remedial action meeting: <provider> - <theme> (<severity>)")."""
    head, sep, _ = subject.partition(" - ")
    return head + (" - ..." if sep else "")


def short_coalescing(tmp_path: Path) -> str:
    """escalation's policy with a 2-second coalescing window (60 s in policy.yaml): the run
    compares invitations and cancellations, not how a meeting's changes fall into windows,
    and otherwise waits a minute for the last announcements."""
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy["meetings"]["coalesce_seconds"] = 2
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return str(path)


async def run(server_urls: ServerUrls, replicas: int, stop_some: bool,
              policy_file: str) -> dict[str, Any]:
    items, accepted = realistic_stream()
    port = free_port()
    controller, inbox = smtp_server(port)
    try:
        async with stack(smtp_port=port, amqp_url=server_urls.amqp,
                         admin_dsn=server_urls.postgres_admin) as s:
            for _ in range(replicas):
                s.start(*SERVICES, CAREWATCH_ESCALATION_POLICY_FILE=policy_file)
            await s.wait_consuming(replicas)
            publishing = asyncio.create_task(publish_items(
                items, url=s.settings.amqp_url, namespace=s.settings.namespace,
                run=uuid.uuid4().hex[:8], rate=400))
            if stop_some:
                await asyncio.sleep(3)
                # Graceful shutdown mid-stream: in-flight messages finish or go back.
                for name in SERVICES:
                    s.procs[name][0].send_signal(signal.SIGTERM)
            await publishing
            conn = await asyncpg.connect(s.settings.database_url)

            async def settled() -> bool:
                fed = await conn.fetchval("SELECT count(*) FROM monitor.feedback")
                pending = await conn.fetchval(
                    "SELECT count(*) FROM notification.notifications WHERE status = 'pending'")
                outbox = sum([await conn.fetchval(f"SELECT count(*) FROM {x}.outbox")
                              for x in ("intake", "monitor", "escalation", "notification")])
                announcing = await conn.fetchval(
                    "SELECT count(*) FROM escalation.schedule WHERE kind = 'meeting_announce'"
                    " AND done_at IS NULL")
                return fed == accepted and pending == 0 and outbox == 0 and announcing == 0

            await eventually(settled, timeout=180, interval=0.5, what="the stream to settle")
            await asyncio.sleep(2)  # anything late would show now
            await conn.close()
            if stop_some:
                for name in SERVICES:
                    assert s.procs[name][0].wait(timeout=30) == 0, f"{name} did not stop cleanly"
            result = await outcome(s)
            # Which meeting gets which slot, and which of a provider's concerns books it (and
            # so names it: "... meeting: <provider> - <theme> (<severity>)"), depend on the
            # order of handling: the time and the booking concern leave the subject (the
            # agendas themselves are compared as "meetings" and "notified").
            result["emails"] = sorted(
                (booked_by_removed(re.sub(r" - \w{3} \d{2} \w{3} \d{4} \d{2}:\d{2}$", "",
                                          str(m["Subject"]))),
                 str(m["To"])) for _, m in inbox.messages
                if not str(m["Subject"]).startswith("Updated invitation"))
            return result
    finally:
        controller.stop()


async def test_three_replicas_give_the_same_outcome_as_one(server_urls: ServerUrls,
                                                          tmp_path: Path) -> None:
    policy_file = short_coalescing(tmp_path)
    one = await run(server_urls, replicas=1, stop_some=False, policy_file=policy_file)
    three = await run(server_urls, replicas=3, stop_some=True, policy_file=policy_file)
    assert len(one["accepted"]) > 2_500
    assert one["meetings"], "the stream plants serious risks"
    for key in ("accepted", "quarantined", "concerns", "meetings", "notified", "emails"):
        if isinstance(one[key], list):
            extra = Counter(map(repr, three[key])) - Counter(map(repr, one[key]))
            missing = Counter(map(repr, one[key])) - Counter(map(repr, three[key]))
            assert not extra and not missing, (
                f"{key} differs between one and three replicas: with three, more"
                f" {sorted(extra.elements())[:10]}, fewer {sorted(missing.elements())[:10]}")
        assert three[key] == one[key], f"{key} differs between one and three replicas"
    assert len(set(one["meetings"])) == len(one["meetings"]), "each concern on one agenda"
    assert all(status == "sent" for _, _, status in one["notified"])
