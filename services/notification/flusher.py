"""The group timers: records each due group's notification (or its suppression).

Timers are rows in PostgreSQL (``alert_groups.next_flush_at``), so they survive restarts;
any replica may flush a due group, and ``FOR UPDATE SKIP LOCKED`` gives each to one. They are
checked by a recurring job of the shared scheduler (``group_flush`` in ``notification.jobs``). Time
comes from an injectable clock, so tests drive it instead of sleeping.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.notification import store
from services.notification.grouping import Alert, plan_flush
from services.notification.messages import group_subject, parse_event
from services.notification.routing import RoutingConfig, event_labels
from services.notification.silences import Silence, muting
from shared.clock import Clock
from shared.retry import Backoff
from shared.runtime import ServiceRuntime
from shared.scheduler import Again, Scheduler
from shared.scheduler import ensure as ensure_job

log = logging.getLogger(__name__)
FLUSH_JOB = "group_flush"
_FLUSH_NAMESPACE = uuid.UUID("6f1c2a58-5f37-4c1e-9d6a-8c0f3e1b2a47")


def flush_id(group_id: uuid.UUID, flush: int, part: str = "") -> uuid.UUID:
    """The source id of a group's n-th notification: recording it twice is a no-op."""
    return uuid.uuid5(_FLUSH_NAMESPACE, f"{group_id}:{flush}:{part}")


def _alert(row: asyncpg.Record) -> Alert:
    return Alert(key=row["alert_key"], status=row["status"], event_type=row["event_type"],
                 payload=row["payload"], version=row["version"],
                 notified_version=row["notified_version"], first_seen_at=row["first_seen_at"])


class GroupFlusher:
    def __init__(self, runtime: ServiceRuntime, routing: RoutingConfig, clock: Clock,
                 batch_size: int = 50) -> None:
        self.runtime = runtime
        self.routing = routing
        self.clock = clock
        self.batch_size = batch_size

    async def flush_due(self) -> int:
        """Flush every group whose timer has come (one batch); returns how many."""
        now = self.clock()
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            groups = await store.claim_due_groups(conn, now, self.batch_size)
            if not groups:
                return 0
            silences = [Silence.from_row(r) for r in await store.active_silences(conn, now)]
            for group in groups:
                await self.flush(conn, group, now, silences)
        return len(groups)

    async def flush(self, conn: asyncpg.Connection, group: asyncpg.Record, now: datetime,
                    silences: list[Silence]) -> None:
        route = self.routing.route_named(group["route"])
        # A group whose route was since removed from the configuration still tells its
        # recipients what they were promised, with the default timing.
        timing = self.routing.timing_of(route) if route else self.routing.defaults
        digest = group["delivery"] == "digest"
        alerts = [_alert(r) for r in await store.alerts_of(conn, group["group_id"])]
        plan = plan_flush(alerts, timing, digest, now, group["last_flushed_at"])
        if plan.send:
            by_silence: dict[uuid.UUID | None, list[Alert]] = {}
            for alert in plan.send:
                silence = None
                if route is None or route.silenceable:
                    labels = {**event_labels(parse_event(alert.event_type, alert.payload)),
                              "route": group["route"]}
                    silence = muting(silences, labels, now)
                by_silence.setdefault(silence.silence_id if silence else None, []).append(alert)
            for silence_id, told in by_silence.items():
                await self._record(conn, group, told, plan.reason, digest, silence_id)
        await store.finish_flush(conn, group["group_id"], now=now, sent=bool(plan.send),
                                 done=list(plan.done), next_flush_at=plan.next_flush_at,
                                 close=plan.close)

    async def _record(self, conn: asyncpg.Connection, group: asyncpg.Record,
                      alerts: list[Alert], reason: str, digest: bool,
                      silence_id: uuid.UUID | None) -> None:
        entries: list[dict[str, Any]] = [
            {"key": a.key, "status": a.status, "change": a.change, "event_type": a.event_type,
             "payload": a.payload} for a in alerts]
        labels = dict(group["labels"])
        notification_id = await store.record(
            conn, source_event_id=flush_id(group["group_id"], group["flushes"],
                                           str(silence_id or "")),
            event_type=alerts[0].event_type if len({a.event_type for a in alerts}) == 1
            else "mixed", channel=group["channel"], recipient=group["recipient"],
            subject=group_subject(labels, entries, digest),
            payload={"route": group["route"], "labels": labels, "reason": reason,
                     "digest": digest, "alerts": entries},
            kind="digest" if digest else "group", route=group["route"], silence_id=silence_id)
        log.info("group %s (%s) to %s: %d alerts %s%s", group["group_key"], reason,
                 group["recipient"], len(alerts), "suppressed by silence " if silence_id
                 else "recorded as ", silence_id or notification_id)

    def scheduler(self) -> Scheduler:
        """The group timers, checked every ``notification_group_poll_interval`` seconds by a
        recurring job of the shared scheduler (``notification.jobs``, like every service's
        time-driven work): one replica at a time runs it (the groups are claimed with SKIP
        LOCKED as well); a failed check is tried again after twice the interval, at most 30 s
        later."""
        interval = self.runtime.settings.notification_group_poll_interval

        async def flush_all_due(claim: asyncpg.Connection, row: asyncpg.Record,
                                now: datetime) -> Again:
            flushed = total = await self.flush_due()
            while flushed >= self.batch_size:
                flushed = await self.flush_due()
                total += flushed
            # Due again at once by the clock: the scheduler's tick (every ``interval`` seconds)
            # paces it, and a clock that tests hold still or move back cannot stall it.
            return Again(now, {"groups flushed": total}, quiet=not total)

        async def ensure(conn: asyncpg.Connection, now: datetime) -> None:
            await ensure_job(conn, store.SCHEMA, FLUSH_JOB, now, not_after=now)

        return Scheduler(store.SCHEMA, lambda: self.runtime.pool, {FLUSH_JOB: flush_all_due},
                         self.clock, interval=interval,
                         retry=Backoff(first=2 * max(interval, 0.5), cap=30.0),
                         before_run=ensure)

    async def run(self) -> None:
        """Check the timers every ``notification_group_poll_interval`` seconds."""
        await self.scheduler().run()
