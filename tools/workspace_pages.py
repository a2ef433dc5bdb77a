"""The workspace's pages under a loaded read model: p50/p95 of the overview and of the busiest
provider's profile, rendered in-process (ASGI, no network) over the stack's database.

``make bench`` calls ``page_latency`` once an ICB's year has drained through the services (the
workspace consumed it like the others), and ``measure``: the pages over a read model built by
the workspace's own handlers from the events of a year of its own (``events_year``, sizes
there), without the broker; ``python -m tools.workspace_pages`` runs ``measure`` alone.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from shared import identity
from shared.db import create_pool
from shared.settings import Settings
from tools.bench import percentile

PASSWORD = "bench password for the workspace"


async def page_latency(database_url: str, samples: int = 100) -> dict[str, Any]:
    from services.workspace.app import build
    from services.workspace.config import WorkspaceSettings

    runtime = build(Settings(database_url=database_url, http_port=0),
                    workspace=WorkspaceSettings(insecure_cookies=True))
    runtime._pool = await create_pool(database_url, min_size=2, max_size=4)
    name = f"bench-{uuid.uuid4().hex[:6]}@icb.example.nhs.uk"
    try:
        async with runtime.pool.acquire() as conn:
            await identity.add_account(conn, identity.NewAccount(name, [identity.QUALITY_LEAD]),
                                       "bench")
            await identity.set_password(conn, name, PASSWORD)
            busiest = await conn.fetchval("SELECT ods_code FROM workspace.concerns GROUP BY 1"
                                          " ORDER BY count(*) DESC LIMIT 1")
            # The meeting with the most replies (its attendees table the longest).
            meeting = await conn.fetchval(
                "SELECT m.meeting_id FROM workspace.meetings m LEFT JOIN"
                " workspace.meeting_replies r USING (meeting_id) GROUP BY 1"
                " ORDER BY count(r.attendee) DESC LIMIT 1")
            sizes = {t: await conn.fetchval(f"SELECT count(*) FROM workspace.{t}")
                     for t in ("concerns", "meetings", "actions", "timeline", "providers",
                               "meeting_replies")}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.http.api),
                                     base_url="http://workspace.bench") as client:
            signed = await client.post("/sign-in", data={"email": name, "password": PASSWORD})
            assert signed.status_code == 303, signed.text
            out: dict[str, Any] = {"sizes": sizes, "busiest": busiest}
            pages = [("overview", "/"), ("provider", f"/providers/{busiest}"),
                     ("reviews", "/reviews")]
            if meeting is not None:
                pages.append(("meeting", f"/meetings/{meeting}"))
            for label, path in pages:
                times = []
                for _ in range(samples):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                out[label] = {"p50": percentile(times, 50), "p95": percentile(times, 95)}
        return out
    finally:
        await runtime.pool.execute("UPDATE identity.accounts SET disabled_at = now()"
                                   " WHERE name = $1", name)
        await runtime.pool.close()


async def events_year(runtime: Any, providers: int = 100, concerns: int = 5000,
                      seed: int = 7, batch: int = 200) -> dict[str, int]:
    """A read model the size of an ICB's year, built as the workspace builds it: the events
    of such a year (assumed: 5,000 concerns over 100 providers, a fifth still open, a fifth of
    them updated; a meeting with six invitees for each serious one, most invitees replying;
    two actions each, due soon and some overdue; escalations, visits) handed to the
    workspace's own handlers, ``batch`` events a transaction. Returns the events by type."""
    from services.workspace.app import handlers
    from shared.events import (
        ActionDueSoon,
        ActionOverdue,
        Attendee,
        ConcernClosed,
        ConcernEscalated,
        ConcernRaised,
        ConcernResolved,
        ConcernUpdated,
        EscalationStep,
        Event,
        Evidence,
        MeetingReplied,
        MeetingScheduled,
        ProviderRef,
        RemedialAction,
        Severity,
        VisitScheduled,
    )

    rng = random.Random(seed)
    now = datetime.now(UTC)
    refs = [ProviderRef(ods_code=f"B{i:02d}", name=f"Bench trust B{i:02d}",
                        provider_type=rng.choice(["acute", "mental_health", "community"]),
                        quality_contact_email=f"quality.b{i:02d}@provider.example")
            for i in range(providers)]
    organizer = Attendee(role="organizer", name="The ICB", email="quality@icb.example.nhs.uk")
    invitees = [("commissioner quality lead", "Quality lead"), ("lay member", "Lay member"),
                ("healthwatch", "Healthwatch"), ("local authority", "Local authority"),
                ("care quality commission", "CQC")]
    severities = [Severity.LOW, Severity.MODERATE, Severity.HIGH, Severity.SERIOUS]
    events: list[tuple[datetime, Event]] = []
    for n in range(concerns):
        ref = rng.choice(refs)
        raised = now - timedelta(minutes=rng.randrange(365 * 24 * 60))
        # One in fifty is a possible serious risk (the review queue).
        rule = "possible_serious_risk" if n % 50 == 0 else rng.choice(
            ["immediate_serious_risk", "theme_cluster", "measure_signals"])
        severity = Severity.HIGH if rule == "possible_serious_risk" else rng.choice(severities)
        raised_event = ConcernRaised(
            concern_id=uuid.uuid4(), fingerprint=f"{ref.ods_code}:{rule}:{n}", provider=ref,
            rule=rule, theme=f"theme-{n}", severity=severity, reason="why it was raised",
            figures={"count": rng.randrange(1, 30)}, raised_at=raised,
            evidence=[Evidence(feedback_id=uuid.uuid4(), kind="complaint",
                               occurred_on=raised.date(), matched="[REDACTED] fell")
                      for _ in range(rng.randrange(1, 4))])
        events.append((raised, raised_event))
        if rng.random() < 0.2:
            later = raised + timedelta(days=rng.randrange(1, 20))
            more = Evidence(feedback_id=uuid.uuid4(), kind="complaint",
                            occurred_on=later.date(), matched="[REDACTED] fell again")
            events.append((later, ConcernUpdated(**raised_event.model_dump() | {
                "reason": "more evidence", "evidence": [more]},
                evidence_count=len(raised_event.evidence) + 1, previous_severity=severity)))
        if severity == Severity.SERIOUS:
            start = raised + timedelta(days=2)
            meeting = MeetingScheduled(
                meeting_id=uuid.uuid4(), concern_id=raised_event.concern_id, provider=ref,
                title=f"Remedial action meeting: {ref.name} - theme-{n}", starts_at=start,
                ends_at=start + timedelta(hours=1), timezone="Europe/London", location="Teams",
                deadline=start, breach=False, severity=severity, agenda=["The concern"],
                remedial_actions=[], organizer=organizer,
                attendees=[Attendee(role="provider quality lead", name=f"Quality lead, {ref.name}",
                                    email=ref.quality_contact_email),
                           *(Attendee(role=role, name=name,
                                      email=f"{role.replace(' ', '.')}@icb.example.nhs.uk")
                             for role, name in invitees)],
                concern_ids=[raised_event.concern_id])
            events.append((raised, meeting))
            for a in meeting.attendees:
                if rng.random() < 0.7:
                    events.append((raised + timedelta(hours=4), MeetingReplied(
                        meeting_id=meeting.meeting_id, attendee=a.email,
                        partstat=rng.choice(["accepted", "accepted", "declined", "tentative"]),
                        sequence=0, received_at=raised + timedelta(hours=4))))
            if rng.random() < 0.1:
                events.append((start, ConcernEscalated(
                    concern_id=raised_event.concern_id, provider=ref,
                    level="enhanced_surveillance", reason="no improvement",
                    history=[EscalationStep(level="enhanced_surveillance", at=start,
                                            reason="no improvement")])))
        for k in range(2):
            due = (raised + timedelta(days=30)).date()
            action = RemedialAction(action_id=uuid.uuid4(), description=f"action {k} of {n}",
                                    owner="Director of Nursing", due_on=due)
            events.append((raised + timedelta(days=23), ActionDueSoon(
                concern_id=raised_event.concern_id, provider=ref, action=action, days_left=7)))
            if rng.random() < 0.3:
                events.append((raised + timedelta(days=31), ActionOverdue(
                    concern_id=raised_event.concern_id, provider=ref,
                    action=action.model_copy(update={"status": "overdue"}), days_overdue=1)))
        if rng.random() < 0.8:  # most concerns end within the year
            ended = raised + timedelta(days=rng.randrange(30, 90))
            events.append((ended, ConcernClosed(
                concern_id=raised_event.concern_id, provider=ref, closed_by="lead@icb",
                reason="actions complete", closed_at=ended) if rng.random() < 0.5 else
                ConcernResolved(concern_id=raised_event.concern_id,
                                fingerprint=raised_event.fingerprint, provider=ref, rule=rule,
                                theme=raised_event.theme, severity=severity,
                                resolution="signal returned to common cause",
                                resolved_at=ended)))
    for ref in refs:
        for _ in range(2):
            events.append((now, VisitScheduled(
                visit_id=uuid.uuid4(), provider=ref, visit_kind="insight_visit",
                due_on=(now + timedelta(days=rng.randrange(-180, 180))).date(),
                reason="annual insight visit")))
    events.sort(key=lambda e: e[0])
    table = dict(handlers(runtime.read_model))
    counts: dict[str, int] = {}
    for first in range(0, len(events), batch):
        async with runtime.pool.acquire() as conn, conn.transaction():
            for _, event in events[first:first + batch]:
                await table[type(event)](conn, event, runtime.outbox(conn))
                counts[event.event_type] = counts.get(event.event_type, 0) + 1
    await runtime.pool.execute("ANALYZE")
    return counts


async def measure(admin_dsn: str, samples: int = 100) -> dict[str, Any]:
    """Build the events-shaped year in a database of its own, time the pages, drop it."""
    from services.workspace.app import build
    from shared.db import migrate
    from tools.stacks import database_url

    name = f"carewatch_bench_ws_{uuid.uuid4().hex[:8]}"
    url = database_url(admin_dsn, name)
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        runtime = build(Settings(database_url=url))
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, identity.SCHEMA, identity.MIGRATIONS, messaging=False)
            await migrate(conn, runtime.schema, runtime.migrations)
        finally:
            await conn.close()
        runtime._pool = await create_pool(url, min_size=1, max_size=2)
        started = time.perf_counter()
        try:
            events = await events_year(runtime)
        finally:
            await runtime.pool.close()
        built = time.perf_counter() - started
        result = await page_latency(url, samples)
        return {**result, "events": events, "built_seconds": built}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(admin_dsn: str) -> None:
    print(await measure(admin_dsn))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else
                     "postgresql://postgres@127.0.0.1:5432/postgres"))
