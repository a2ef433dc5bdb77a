"""Alertmanager-style grouping of lesser alerts (pure: no I/O, time passed in).

A group is one route's alerts for one set of ``group_by`` label values, for one recipient.
Its first alert opens it and starts the *group wait*; the first notification then carries
every alert that arrived meanwhile. Later changes (a new alert, an update, a resolution) are
sent no sooner than *group interval* after the previous notification; with no change, open
alerts are repeated after *repeat interval*. A resolved alert is sent once more, as resolved,
and then leaves the group; an empty group closes. A *digest* route flushes at the next
``digest_at`` (local time) instead, carries only what changed, and never repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from services.notification.routing import Timing


@dataclass(frozen=True)
class Alert:
    """One alert of a group as stored: its latest state, and what was last notified."""

    key: str
    status: Literal["firing", "resolved"]
    event_type: str
    payload: dict[str, Any]
    version: int
    notified_version: int
    first_seen_at: datetime

    @property
    def changed(self) -> bool:
        return self.version != self.notified_version

    @property
    def change(self) -> Literal["new", "updated", "resolved", "open"]:
        """How the notification shows it: new, updated, resolved, or still open."""
        if self.status == "resolved":
            return "resolved"
        if not self.changed:
            return "open"
        return "new" if self.notified_version == 0 else "updated"


@dataclass(frozen=True)
class FlushPlan:
    """What one flush of a group does."""

    send: tuple[Alert, ...]  # the alerts the notification carries (empty: nothing to send)
    reason: Literal["changes", "repeat", "none"]
    done: tuple[str, ...]  # resolved alerts now told: they leave the group
    next_flush_at: datetime | None  # None: wait for the next change
    close: bool  # no alerts left: the group closes


def next_digest(now: datetime, timing: Timing) -> datetime:
    """The next ``digest_at`` wall-clock time strictly after ``now`` in the route's zone."""
    local = now.astimezone(timing.tz)
    candidate = datetime.combine(local.date(), timing.digest_at, tzinfo=timing.tz)
    while candidate <= local:
        candidate = datetime.combine(candidate.date() + timedelta(days=1), timing.digest_at,
                                     tzinfo=timing.tz)
    return candidate


def flush_time_on_change(timing: Timing, digest: bool, now: datetime,
                         next_flush_at: datetime | None,
                         last_flushed_at: datetime | None) -> datetime:
    """When a group must flush after one of its alerts changed at ``now``."""
    if digest:
        candidate = next_digest(now, timing)
    elif last_flushed_at is None:
        candidate = now + timing.group_wait  # a new group: wait for the rest of the burst
    else:
        candidate = max(now, last_flushed_at + timing.group_interval)
    return candidate if next_flush_at is None else min(next_flush_at, candidate)


def plan_flush(alerts: list[Alert], timing: Timing, digest: bool, now: datetime,
               last_flushed_at: datetime | None) -> FlushPlan:
    """Decide what a due group sends now, and when it flushes next."""
    changed = [a for a in alerts if a.changed]
    firing = [a for a in alerts if a.status == "firing"]
    send: list[Alert]
    if changed:
        reason: Literal["changes", "repeat", "none"] = "changes"
        # A digest carries what changed; a group notification shows the whole group.
        send = changed if digest else [a for a in alerts if a.status == "firing" or a.changed]
    elif (firing and not digest and timing.repeat_interval is not None
          and last_flushed_at is not None and now >= last_flushed_at + timing.repeat_interval):
        reason, send = "repeat", firing
    else:
        reason, send = "none", []
    done = tuple(a.key for a in alerts if a.status == "resolved")
    close = not firing
    next_flush_at: datetime | None = None
    if not close and not digest and timing.repeat_interval is not None:
        since = now if send else (last_flushed_at or now)
        next_flush_at = since + timing.repeat_interval
    send.sort(key=lambda a: (a.status != "firing", a.first_seen_at, a.key))
    return FlushPlan(tuple(send), reason, done, next_flush_at, close)


def group_key(route: str, channel: str, recipient: str, group_by: tuple[str, ...],
              labels: dict[str, str]) -> str:
    """The identity of a group: route, recipient, and the values of its ``group_by`` labels."""
    values = ",".join(f"{name}={labels.get(name, '')}" for name in group_by)
    return f"{route}|{channel}|{recipient}|{values}"
