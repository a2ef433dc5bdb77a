"""Retries: the one backoff policy, and transient failures retried where they happen.

`Backoff` is the only formula for a retry delay in `shared/` and `services/`: the n-th retry
waits ``first * factor ** (n - 1)`` seconds, at most ``cap``, with optional jitter. Each
caller names its own figures (a scheduled job: 30 s doubling to an hour; a background loop:
half a second doubling to ten seconds).

Transient failures (the database restarting, a dropped connection, a serialisation
conflict) are retried where they happen, with backoff, instead of burning a message's
deliveries: the delivery limit is for messages that can never be handled."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the n-th retry (n = 1 for the first retry).

    ``first * factor ** (n - 1)`` seconds, at most ``cap``. ``jitter`` adds up to that many
    seconds at random (still at most ``cap``); ``full_jitter`` waits a random time between
    zero and the delay instead (the AWS architecture blog's "full jitter"), which spreads
    many clients retrying the same thing."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0
    full_jitter: bool = False

    def __post_init__(self) -> None:
        if self.first < 0 or self.cap < 0 or self.factor < 1 or self.jitter < 0:
            raise ValueError(f"not a backoff policy: {self!r}")

    def ceiling(self, attempt: int) -> float:
        """The delay before the ``attempt``-th retry without jitter."""
        n = max(1, attempt)
        try:
            delay = self.first * self.factor ** (n - 1)
        except OverflowError:
            return self.cap
        return min(self.cap, delay)

    def seconds(self, attempt: int,
                uniform: Callable[[float, float], float] = random.uniform) -> float:
        """The delay before the ``attempt``-th retry, jitter included."""
        delay = self.ceiling(attempt)
        if self.full_jitter:
            return uniform(0.0, delay)
        if self.jitter:
            return min(self.cap, delay + uniform(0.0, self.jitter))
        return delay

    def after(self, attempt: int) -> timedelta:
        """`seconds` as a timedelta (for a due time: ``now + policy.after(n)``)."""
        return timedelta(seconds=self.seconds(attempt))


# Transient failures: short first waits (a deadlock or serialisation failure clears at
# once), a restart of the broker or database takes the longer ones.
TRANSIENT_BACKOFF = Backoff(first=0.05, cap=5.0, jitter=0.1)

_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.exceptions.TransactionRollbackError,  # serialisation failure, deadlock
    asyncpg.InterfaceError,  # the connection went away under us
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("transient failure (attempt %d), retrying: %r", state.attempt_number, exc)


async def retry_transient(work: Callable[[], Awaitable[T]], *, for_seconds: float = 120.0) -> T:
    """Run ``work`` (a whole transaction: safe to run again), retrying transient failures
    with jittered exponential backoff for up to ``for_seconds``; other errors raise at once."""
    try:
        return await work()  # the usual case, without building a retrier per message
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("transient failure, retrying: %r", exc)
    async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=lambda state: TRANSIENT_BACKOFF.seconds(state.attempt_number),
            stop=stop_after_delay(for_seconds),
            before_sleep=_log_retry,
            reraise=True):
        with attempt:
            return await work()
    raise AssertionError("unreachable")  # pragma: no cover
