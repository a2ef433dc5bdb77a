"""intake: the front door for provider feeds.

Consumes: provider submissions on ``{ns}.submissions`` (routing key ``submission.<kind>.v1``),
authenticated by the broker-validated ``user_id``; and the same over HTTP
(``POST /v1/submissions``, ``/v1/submissions/batch``), authenticated by the feed's API key.
Publishes: ``feedback.accepted.v1``, ``feedback.rejected.v1`` (through the outbox), and a
rejection back to the publisher's ``reply_to`` queue when it gave one.
Stores: schema ``intake`` (providers, feeds, feedback, quarantine, receipts).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from faststream.rabbit import Channel, RabbitMessage

from services.intake import config, http, store
from services.intake.admission import Admission, Admissions, Incoming
from services.intake.validation import MAX_BODY_BYTES
from shared import scheduler
from shared.clock import Clock, utc_now
from shared.groupcommit import Batcher
from shared.retry import Backoff
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.submissions import URGENT_KINDS
from shared.topology import Subscription, Topology

log = logging.getLogger(__name__)
NAME = "intake"


def subscriptions(topology: Topology) -> list[Subscription]:
    return list(topology.submission_lanes(URGENT_KINDS))


def admissions_for(runtime: ServiceRuntime) -> Admissions:
    """intake's one way in, bound to a runtime's pool and outbox (also used by the CLI)."""
    settings = runtime.settings
    return Admissions(lambda: runtime.pool, runtime.outbox, settings.namespace,
                      keep_body_bytes=MAX_BODY_BYTES,
                      urgent_limiter=config.urgent_limiter(settings))


def build(settings: Settings) -> ServiceRuntime:
    runtime = ServiceRuntime(NAME, store.SCHEMA, settings, Path(__file__).parent / "migrations")
    admissions = admissions_for(runtime)
    # intake's handler table: a provider feed's submissions, on two lanes. The kinds that
    # report risk have a queue, a consumer and batches of their own, so a serious complaint
    # is never admitted behind a bulk load of FFT responses. Messages handled at the same
    # time are admitted as one batch, in one transaction (shared/groupcommit.py's Batcher,
    # two batches at once); with a prefetch of several batches, the next one gathers while
    # one commits.
    lanes = config.lanes(settings)
    urgent, routine = runtime.topology.submission_lanes(URGENT_KINDS)
    for sub, prefetch in ((urgent, lanes.urgent_prefetch), (routine, lanes.routine_prefetch)):
        _consume(runtime, sub, Batcher(admissions.admit_many, lanes.batch_size, committers=2,
                                       name=f"intake-admission-{sub.lane or 'routine'}"),
                 Channel(prefetch_count=prefetch))

    # Its routes (http.py): the feeds' API, then the operator's; one ACCESS table for both.
    http.install(runtime.http.api, admissions, lambda: runtime.pool, runtime.metrics,
                 config.feed_limiter(settings))
    runtime.http.declare(http.ACCESS)
    http.add_operations_routes(runtime, admissions)

    quarantined = runtime.metrics.gauge(
        "carewatch_intake_quarantine_open", "Rejected submissions not yet resolved.", [])

    async def refresh_quarantine(conn: asyncpg.Connection) -> None:
        quarantined.labels(NAME).set(await conn.fetchval(
            "SELECT count(*) FROM intake.quarantine WHERE status = 'open'"))

    runtime.gauge_refreshers.append(refresh_quarantine)

    async def purge_quarantine() -> None:
        await purge_quarantine_loop(runtime)

    runtime.background(purge_quarantine)
    return runtime


PURGE_BATCH = 500
PURGE_JOB = "retention_purge"


def retention_purge(runtime: ServiceRuntime, clock: Clock = utc_now) -> scheduler.Scheduler:
    """Delete quarantined bodies, and the public's contact details, past their retention,
    every ``quarantine_purge_interval`` seconds, in batches: a recurring job of the shared
    scheduler (``intake.jobs``), run by one replica at a time (the rows are claimed with
    SKIP LOCKED too); a failed purge is tried again an interval later."""
    kept = config.retention(runtime.settings)
    interval = kept.interval
    every = timedelta(seconds=interval)
    purges = ((store.purge_quarantine, kept.quarantine_days, "quarantined bodies"),
              (store.purge_public_contacts, kept.public_contact_days, "public contact details"))

    async def purge_all(claim: asyncpg.Connection, row: asyncpg.Record,
                        now: datetime) -> scheduler.Again:
        deleted: dict[str, Any] = {}
        for purge, days, what in purges:
            async with runtime.pool.acquire() as conn:  # each batch commits on its own
                total = batch = await purge(conn, days, PURGE_BATCH)
                while batch == PURGE_BATCH:
                    batch = await purge(conn, days, PURGE_BATCH)
                    total += batch
            if total:
                log.info("%s older than %d days deleted: %d", what, days, total)
            deleted[what] = total
        return scheduler.Again(now + every, deleted)

    async def ensure(conn: asyncpg.Connection, now: datetime) -> None:
        await scheduler.ensure(conn, store.SCHEMA, PURGE_JOB, now, not_after=now + every)

    return scheduler.Scheduler(store.SCHEMA, lambda: runtime.pool, {PURGE_JOB: purge_all},
                               clock, interval=interval, retry=Backoff(first=interval,
                                                                       cap=interval),
                               before_run=ensure)


async def purge_quarantine_loop(runtime: ServiceRuntime) -> None:
    """The retention purge for the life of the process."""
    await retention_purge(runtime).run()


def incoming(message: RabbitMessage) -> Incoming:
    """A submission as the broker delivered it, authenticated by the broker-validated
    ``user_id``."""
    raw = message.raw_message
    return Incoming(
        body=message.body, feed_user=raw.user_id, message_id=raw.message_id or None,
        routing_key=raw.routing_key, content_type=raw.content_type or None,
        redelivered=bool(raw.redelivered), reply_to=raw.reply_to or None,
        correlation_id=raw.correlation_id or None)


def _consume(runtime: ServiceRuntime, sub: Subscription,
             admissions: Batcher[Incoming, Admission], channel: Channel) -> None:
    keys = ", ".join(f"`{k}`" for k in sub.routing_keys)

    async def admit(item: Incoming) -> str:
        return (await admissions.run(item)).outcome

    runtime.on_messages(
        sub, incoming, admit, channel=channel,
        context=lambda item: {"submission_id": item.submission_id,
                              "feed_user": item.feed_user, "message_id": item.message_id},
        title=f"intake:submission{'.' + sub.lane if sub.lane else ''}",
        description=(f"A provider feed's submission of a kind that reports risk ({keys}): "
                     if sub.lane else "A provider feed's submission of any other kind: ")
        + "one JSON object whose `kind` selects the schema. Authenticated by the AMQP"
          " `user_id` property.",
    )
