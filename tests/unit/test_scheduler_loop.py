"""The one polling loop of time-driven work (shared.scheduler.every): the interval after a
run, the policy's backoff after failures, back to the interval once a run succeeds."""

from __future__ import annotations

import asyncio

import pytest

from shared.retry import Backoff
from shared.scheduler import every


class Stop(BaseException):
    """Ends the loop from the fake sleep (not an Exception: the loop does not catch it)."""


async def test_failures_back_off_and_a_success_returns_to_the_interval() -> None:
    outcomes = iter([True, False, False, False, True, False, True])
    runs: list[bool] = []
    slept: list[float] = []

    async def work() -> None:
        ok = next(outcomes)
        runs.append(ok)
        if not ok:
            raise ConnectionError("the database is restarting")

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 7:
            raise Stop

    with pytest.raises(Stop):
        await every(15.0, work, retry=Backoff(first=1.0, cap=3.0), name="test", sleep=sleep)
    assert runs == [True, False, False, False, True, False, True]
    assert slept == [15.0, 1.0, 2.0, 3.0, 15.0, 1.0, 15.0]


async def test_cancellation_stops_the_loop() -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    loop = asyncio.ensure_future(every(1.0, work, retry=Backoff(1.0, 1.0), name="test"))
    await started.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
