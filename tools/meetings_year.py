"""A realistic year of remedial meetings: the demo generator's 400 days, with its serious and
high concerns, fed to the real escalation service (real RabbitMQ and PostgreSQL) as
quality-monitor would announce them, on a clock this tool drives.

The concerns come from ``tools.stream.StreamGenerator`` (the generator behind ``make demo``
and ``make bench``): every planted serious risk (a complaint rated catastrophic, or a
safeguarding concern) is a serious concern; GP alerts about discharge that reach
quality-monitor's cluster threshold (3 in 30 days, from its rules.yaml) make a high concern;
later items on an open concern's fingerprint are new evidence (``concern.updated``).

Two ways to live the year:
- ``paced``: each day's concerns arrive on their day (08:00 onwards), and the coalescing
  window passes before the next day;
- ``replay``: every concern arrives at once, as when ``make demo`` replays the year into a
  running system in minutes (what the issue saw: 34 meetings, 8 a day).

Waiting is on progress (escalation's inbox), never on a wall-clock budget: the run fails only
if nothing moves for ``stall_seconds``.

    .venv/bin/python -m tools.meetings_year --mode replay     # prints the distribution

It works against any version of escalation that has ``build(settings, clock=)``, its ticker
and its ``meetings``/``bookings`` tables, so the same command measures before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg

from shared.envelope import CONTENT_TYPE, Envelope
from shared.events import ConcernRaised, ConcernUpdated, Event, Evidence, ProviderRef, Severity
from shared.settings import Settings
from tools.stream import StreamGenerator, load_providers

LONDON = ZoneInfo("Europe/London")
DISCHARGE = "Admissions, discharges and transfers"
MEETING_EVENTS = ("meeting.scheduled.v1", "meeting.rescheduled.v1", "meeting.cancelled.v1")


@dataclass(frozen=True)
class Timed:
    at: datetime
    event: ConcernRaised


def _provider(row: dict[str, str]) -> ProviderRef:
    return ProviderRef(ods_code=row["ods_code"], name=row["name"],
                       provider_type=row["provider_type"],
                       quality_contact_email=row["quality_contact_email"])


def year_of_concerns(today: date, days: int = 400, seed: int = 7,
                     serious_every: int = 2_000, per_day: float = 10.0,
                     cluster_count: int = 3, cluster_days: int = 30) -> list[Timed]:
    """The demo year's serious and high concerns (raised and updated), in time order (the
    generator writes the days up to ``today``: intake refuses future dates)."""
    providers = {p["ods_code"]: _provider(p) for p in load_providers()}
    generator = StreamGenerator(load_providers(), seed=seed)
    open_concerns: dict[tuple[str, str, str], ConcernRaised] = {}
    alerts: dict[str, list[date]] = defaultdict(list)
    out: list[Timed] = []
    per_day_count: Counter[date] = Counter()

    def at(day: date) -> datetime:
        n = per_day_count[day]
        per_day_count[day] += 1
        return datetime.combine(day, datetime.min.time(), LONDON) + timedelta(
            hours=8, seconds=5 * n)

    def raise_or_update(key: tuple[str, str, str], severity: Severity, rule: str,
                        theme: str, kind: str, day: date, reason: str,
                        triggers: list[str]) -> None:
        evidence = Evidence(feedback_id=uuid.uuid4(), kind=kind, occurred_on=day)
        known = open_concerns.get(key)
        when = at(day)
        if known is None:
            concern = ConcernRaised(
                concern_id=uuid.uuid4(), fingerprint=":".join(key), provider=providers[key[0]],
                rule=rule, theme=theme, severity=severity, reason=reason,
                figures={"triggers": triggers}, evidence=[evidence], raised_at=when)
            open_concerns[key] = concern
            out.append(Timed(when, concern))
        else:
            fields = {k: getattr(known, k) for k in ConcernRaised.model_fields}
            # An update carries its new evidence only, with the concern's total.
            total = (known.evidence_count if isinstance(known, ConcernUpdated)
                     else len(known.evidence)) + 1
            concern = ConcernUpdated(**(fields | {"evidence": [evidence]}),
                                     evidence_count=total, previous_severity=known.severity)
            open_concerns[key] = concern
            out.append(Timed(when, concern))

    start = today - timedelta(days=days)
    for item in generator.days(start, days, per_provider_per_day=per_day,
                               serious_every=serious_every):
        body = item.body
        if not isinstance(body, dict) or item.expect != "accept":
            continue
        ods = body["ods_code"]
        if item.planted == "serious":
            if body["kind"] == "safeguarding_concern":
                day = date.fromisoformat(body["raised_on"])
                raise_or_update((ods, "immediate_serious_risk", "safeguarding: neglect"),
                                Severity.SERIOUS, "immediate_serious_risk",
                                "safeguarding: neglect", "safeguarding_concern", day,
                                "a safeguarding concern (neglect) about an adult",
                                ["safeguarding"])
            else:
                day = date.fromisoformat(body["received_on"])
                theme = body["subject_area"]
                raise_or_update((ods, "immediate_serious_risk", theme), Severity.SERIOUS,
                                "immediate_serious_risk", theme, "complaint", day,
                                "a complaint reporting serious harm, rated catastrophic",
                                ["harm_in_text", "risk_score"])
        elif body["kind"] == "gp_alert" and body["theme_area"] == DISCHARGE:
            day = date.fromisoformat(body["raised_on"])
            recent = [d for d in alerts[ods] if (day - d).days < cluster_days] + [day]
            alerts[ods] = recent
            key = (ods, "cluster", DISCHARGE)
            if len(recent) >= cluster_count or key in open_concerns:
                raise_or_update(key, Severity.HIGH, "cluster", DISCHARGE, "gp_alert", day,
                                f"{len(recent)} GP alerts about discharge in"
                                f" {cluster_days} days", [])
            if len(recent) == 1:
                open_concerns.pop(key, None)  # the cluster's window passed: a new one next
    return sorted(out, key=lambda t: t.at)


class MovableClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Year:
    """What happened: every meeting event escalation published, in order."""

    events: list[Envelope] = field(default_factory=list)
    bursts: int = 0
    marker: asyncio.Event | None = None


async def _publish(channel: aio_pika.abc.AbstractChannel, namespace: str, event: Event,
                   user_id: str | None) -> None:
    """Publish as quality-monitor does: escalation takes a concern event only from the broker
    user that owns its type (``user_id``, validated by the broker)."""
    envelope = event.envelope("carewatch/quality_monitor")
    exchange = await channel.get_exchange(f"{namespace}.events", ensure=False)
    await exchange.publish(
        aio_pika.Message(envelope.to_bytes(), message_id=str(envelope.id),
                         content_type=CONTENT_TYPE, user_id=user_id,
                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=event.routing_key(), mandatory=True)


async def _wait_handled(db: asyncpg.Pool, target: int, stall_seconds: float) -> None:
    """Until escalation's inbox holds ``target`` events; fails only when nothing moves."""
    last, since = -1, time.monotonic()
    while True:
        n = await db.fetchval("SELECT count(*) FROM escalation.inbox")
        if n >= target:
            return
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > stall_seconds:
            raise TimeoutError(f"escalation stalled at {n} of {target} events")
        await asyncio.sleep(0.05)


def bursts(timed: list[Timed], mode: str) -> Iterator[tuple[datetime, list[Timed]]]:
    if mode == "replay":
        yield timed[-1].at, timed
        return
    by_day: dict[date, list[Timed]] = defaultdict(list)
    for t in timed:
        by_day[t.at.date()].append(t)
    for day in sorted(by_day):
        yield by_day[day][0].at, by_day[day]


async def live_year(settings: Settings, timed: list[Timed], *, mode: str = "paced",
                    build: Callable[..., Any] | None = None,
                    check: Callable[[asyncpg.Pool, datetime], Any] | None = None,
                    stall_seconds: float = 120.0,
                    progress: Callable[[str], None] = lambda _: None) -> Year:
    """Feed the concerns to a real escalation runtime on ``settings`` (migrated, topology
    declared), burst by burst; ``check(db, now)`` runs after each burst."""
    from services.escalation.app import build as escalation_build
    from shared.db import create_pool

    year = Year()
    # This tool publishes as quality-monitor: the user of its connection, which the settings
    # must name as quality-monitor's broker user (as every test stack's {"*": "guest"}).
    user_id = urlsplit(settings.amqp_url).username or None
    clock = MovableClock(timed[0].at)
    runtime = (build or escalation_build)(settings, clock=clock)
    await runtime.start()
    db = await create_pool(settings.database_url, min_size=1, max_size=3)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        tap = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in MEETING_EVENTS:
            await tap.bind(f"{settings.namespace}.events", key)

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                if message.message_id == "end-of-year":
                    if year.marker is not None:
                        year.marker.set()
                    return
                year.events.append(Envelope.from_bytes(message.body))
        await tap.consume(keep)
        base = await db.fetchval("SELECT count(*) FROM escalation.inbox")
        sent = 0
        for n, (at, burst) in enumerate(bursts(timed, mode), 1):
            clock.now = at
            for t in burst:
                await _publish(channel, settings.namespace, t.event, user_id)
            sent += len(burst)
            await _wait_handled(db, base + sent, stall_seconds)
            # The coalescing window passes: the burst's updates go out, once each.
            clock.now = max(clock.now, burst[-1].at) + timedelta(seconds=61)
            await runtime.ticker.run_due(clock.now)
            year.bursts += 1
            if check is not None:
                await check(db, clock.now)
            if n % 25 == 0:
                progress(f"{n} bursts, {sent} concern events")
        # The relay has published everything (the outbox is empty) ...
        last, since = -1, time.monotonic()
        while (left := await db.fetchval("SELECT count(*) FROM escalation.outbox")) > 0:
            if left != last:
                last, since = left, time.monotonic()
            elif time.monotonic() - since > stall_seconds:
                raise TimeoutError(f"escalation's outbox stalled with {left} events")
            await asyncio.sleep(0.1)
        # ... and the tap has everything before a marker put behind it in its queue.
        marker = asyncio.Event()
        year.marker = marker
        await channel.default_exchange.publish(
            aio_pika.Message(b"", message_id="end-of-year"), routing_key=tap.name)
        await asyncio.wait_for(marker.wait(), stall_seconds)
    finally:
        await connection.close()
        await db.close()
        await runtime.stop()
    return year


async def distribution(db: asyncpg.Pool, since: datetime | None = None,
                       until: datetime | None = None) -> dict[str, Any]:
    """Meetings per day, per person per day, breaches (of meetings starting in the period)."""
    meetings = await db.fetch(
        "SELECT meeting_id, ods_code, starts_at, breach, status FROM escalation.meetings"
        " WHERE status <> 'cancelled' AND ($1::timestamptz IS NULL OR starts_at >= $1)"
        " AND ($2::timestamptz IS NULL OR starts_at < $2)", since, until)
    per_day = Counter(m["starts_at"].astimezone(LONDON).date() for m in meetings)
    bookings = await db.fetch(
        "SELECT b.attendee, lower(b.during) AS s FROM escalation.bookings b"
        " WHERE b.attendee LIKE 'person:%' AND b.meeting_id = ANY($1::uuid[])",
        [m["meeting_id"] for m in meetings])
    per_person_day = Counter((b["attendee"], b["s"].astimezone(LONDON).date()) for b in bookings)
    return {
        "meetings": len(meetings),
        "providers": len({m["ods_code"] for m in meetings}),
        "breaches": sum(1 for m in meetings if m["breach"]),
        "days_with_meetings": len(per_day),
        "meetings_per_day": dict(sorted(Counter(per_day.values()).items())),
        "max_meetings_in_a_day": max(per_day.values(), default=0),
        "max_per_person_per_day": max(per_person_day.values(), default=0),
        "people": len({b["attendee"] for b in bookings}),
    }


async def main(args: argparse.Namespace) -> None:
    from shared.db import create_pool
    from tools.stacks import deprovision, provision

    base = Settings()
    tag = uuid.uuid4().hex[:8]
    admin = base.database_url.rsplit("/", 1)[0] + "/postgres"
    settings = base.model_copy(update={
        "database_url": base.database_url.rsplit("/", 1)[0] + f"/carewatch_year_{tag}",
        "namespace": f"cwyear_{tag}", "http_port": 0}
        # every process of this stack is the connection's broker user (see live_year)
        | ({"broker_users": {"*": urlsplit(base.amqp_url).username or "guest"}}
           if "broker_users" in Settings.model_fields else {}))
    timed = year_of_concerns(date.fromisoformat(args.today) if args.today else date.today(),
                             days=args.days, seed=args.seed)
    kinds = Counter(f"{t.event.severity} {t.event.event_type}" for t in timed)
    print(f"{len(timed)} concern events from the demo generator's {args.days} days: {dict(kinds)}")
    await provision(admin, settings)  # migrated, every service's queues declared
    try:
        if args.rota:
            await add_to_rota(settings, args.rota)
        year = await live_year(settings, timed, mode=args.mode, progress=print)
        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            report = await distribution(pool)
        finally:
            await pool.close()
        report["meeting_events"] = dict(Counter(e.type for e in year.events))
        print(json.dumps(report, indent=2, default=str))
    finally:
        await deprovision(admin, settings)


async def add_to_rota(settings: Settings, n: int) -> None:
    """``n`` more quality leads and ``n`` more lay members on the rota, beside the settings'
    two (their defaults: office hours, 3 meetings a day, 30 minutes between)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.executemany(
            "INSERT INTO escalation.people (email, name, role) VALUES ($1, $2, $3)",
            [(f"{who}.{i}@icb.example.nhs.uk", f"{title} {i}", role)
             for i in range(1, n + 1)
             for who, title, role in (("lead", "Quality lead", "quality lead"),
                                      ("lay", "Lay member", "lay member"))])
    finally:
        await conn.close()


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["paced", "replay"], default="paced")
    p.add_argument("--days", type=int, default=400)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--today", help="YYYY-MM-DD (default: today)")
    p.add_argument("--rota", type=int, default=0,
                   help="add this many quality leads and lay members to the rota (escalation"
                        " with a rota only)")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
