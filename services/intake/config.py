"""intake's configuration: what it reads of the ``CAREWATCH_*`` settings (declared with the
others in shared/settings.py), in one place: the per-feed rate limits, the lanes' batches and
prefetch, and how long quarantined bodies and the public's contact details are kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.ratelimit import RateLimiter
from shared.settings import Settings


def urgent_limiter(settings: Settings, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
    """Each feed's limit on the urgent routing keys over AMQP (``CAREWATCH_URGENT_RATE_*``;
    over it, a submission is quarantined with the reason ``rate_limited``)."""
    return RateLimiter(settings.urgent_rate_per_second, settings.urgent_rate_burst, clock)


def feed_limiter(settings: Settings, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
    """Each feed's limit over HTTP (``CAREWATCH_FEED_RATE_*``; over it, 429 with
    Retry-After)."""
    return RateLimiter(settings.feed_rate_per_second, settings.feed_rate_burst, clock)


@dataclass(frozen=True)
class Lanes:
    """How the two lanes (urgent kinds, the rest) are consumed: ``batch_size`` messages
    admitted in one transaction, each lane's prefetch. The routine lane prefetches at least
    four batches, so that the next one gathers while one commits."""

    batch_size: int
    urgent_prefetch: int
    routine_prefetch: int


def lanes(settings: Settings) -> Lanes:
    batch_size = settings.commit_batch_size
    return Lanes(batch_size, settings.prefetch_count,
                 max(settings.prefetch_count, 4 * batch_size))


@dataclass(frozen=True)
class Retention:
    """How many days quarantined bodies and the public's contact details are kept, and how
    often (seconds) the purge deletes what is past it."""

    interval: float
    quarantine_days: int
    public_contact_days: int


def retention(settings: Settings) -> Retention:
    return Retention(settings.quarantine_purge_interval, settings.quarantine_retention_days,
                     settings.public_contact_retention_days)
