"""Transient failures (the database restarting, a dropped connection, a serialisation
conflict) are retried where they happen, with backoff, instead of burning a message's
deliveries: the delivery limit is for messages that can never be handled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

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
            # Short first waits: a deadlock or serialisation failure clears at once; a restart
            # of the broker or database takes the longer waits.
            wait=wait_exponential_jitter(multiplier=0.05, jitter=0.1, max=5.0),
            stop=stop_after_delay(for_seconds),
            before_sleep=_log_retry,
            reraise=True):
        with attempt:
            return await work()
    raise AssertionError("unreachable")  # pragma: no cover
