"""Silences: time-bounded mutes by provider, concern rule, route or event type (pure).

A silence never drops anything: a notification it mutes is recorded with the status
``suppressed`` and the silence's id, so the audit trail shows what was not sent and why.
Silences themselves are never deleted; expiring one records who expired it and when.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

# What a silence may match on (each a shell-style pattern); all given must match.
MATCHERS = ("provider", "rule", "route", "event", "severity", "theme")


@dataclass(frozen=True)
class Silence:
    silence_id: uuid.UUID
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    reason: str
    expired_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> Silence:
        return cls(silence_id=row["silence_id"], matchers=dict(row["matchers"]),
                   starts_at=row["starts_at"], ends_at=row["ends_at"],
                   created_by=row["created_by"], reason=row["reason"],
                   expired_at=row["expired_at"])

    def active(self, now: datetime) -> bool:
        return self.expired_at is None and self.starts_at <= now < self.ends_at

    def mutes(self, labels: dict[str, str]) -> bool:
        """Whether every matcher of this silence fits the labels."""
        return bool(self.matchers) and all(
            labels.get(key) is not None and fnmatchcase(labels[key], pattern)
            for key, pattern in self.matchers.items())


def validate_matchers(matchers: dict[str, str | None]) -> dict[str, str]:
    """The given matchers without empty ones; at least one is required."""
    given = {k: v for k, v in matchers.items() if v}
    unknown = set(given) - set(MATCHERS)
    if unknown:
        raise ValueError(f"unknown matchers {sorted(unknown)}; use {', '.join(MATCHERS)}")
    if not given:
        raise ValueError(f"a silence needs at least one matcher: {', '.join(MATCHERS)}")
    return given


def muting(silences: list[Silence], labels: dict[str, str], now: datetime) -> Silence | None:
    """The first active silence that mutes a notification with these labels."""
    return next((s for s in silences if s.active(now) and s.mutes(labels)), None)
