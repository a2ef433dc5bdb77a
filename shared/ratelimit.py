"""Rate limits: a token bucket for each sender (intake: each feed; the workspace's public
feedback page: each client). Pure: the clock is passed in.

In intake, a feed may send ``rate`` submissions a second on average, and up to ``burst`` at once.
Over HTTP a feed over its limit is answered 429 with ``Retry-After`` (nothing is stored: the
feed still holds the submission and sends it again). Over AMQP, on the urgent routing keys,
a submission over the limit is quarantined with the reason ``rate_limited`` (kept, announced
as ``feedback.rejected``, and resubmitted by an operator or sent again by the feed): one feed
cannot fill the lane that serious complaints take. Limits are per intake process (each
replica keeps its own buckets).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """``take(feed, n)``: whether ``feed`` may send ``n`` more submissions now."""

    rate: float
    burst: int
    clock: Callable[[], float]
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def _bucket(self, feed: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(feed)
        if bucket is None:
            bucket = self._buckets[feed] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if len(self._buckets) > 10_000:  # forget full buckets (feeds gone quiet)
            for key in [k for k, b in self._buckets.items() if b.tokens >= self.burst][:5_000]:
                del self._buckets[key]
        return bucket

    def take(self, feed: str, n: int = 1) -> bool:
        """Spend ``n`` tokens of ``feed``'s bucket if it holds them all."""
        bucket = self._bucket(feed)
        if bucket.tokens >= n:
            bucket.tokens -= n
            return True
        return False

    def retry_after(self, feed: str, n: int = 1) -> int:
        """Whole seconds until ``feed`` may send ``n`` submissions (at least 1)."""
        bucket = self._bucket(feed)
        wanted = min(n, self.burst) - bucket.tokens
        return max(1, math.ceil(wanted / self.rate)) if self.rate > 0 else 3600
