"""The one polling loop of background work (shared.scheduler.every): the interval after a
run, the policy's backoff after failures, back to the interval once a run succeeds; and the
NOTIFY-woken drain that runs on it (shared.wakeup.drain_on_notify)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from shared import wakeup
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


class _Listener:
    """A listening connection: the channels it listens on."""

    def __init__(self) -> None:
        self.listening: list[tuple[str, Callable[..., None]]] = []

    def is_closed(self) -> bool:
        return False

    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None:
        self.listening.append((channel, callback))

    async def remove_listener(self, channel: str, callback: Callable[..., None]) -> None:
        self.listening.remove((channel, callback))


class _Pool:
    def __init__(self) -> None:
        self.acquired: list[_Listener] = []
        self.released: list[_Listener] = []

    async def acquire(self) -> _Listener:
        self.acquired.append(_Listener())
        return self.acquired[-1]

    async def release(self, listener: _Listener) -> None:
        self.released.append(listener)


async def test_the_notify_drain_runs_on_the_same_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """shared.wakeup.drain_on_notify on `every`: a full batch drains again at once, a NOTIFY
    wakes the wait, a failure gives its listener back and retries on a new one, cancellation
    gives the last one back."""
    monkeypatch.setattr(wakeup, "DRAIN_RETRY", Backoff(first=0.001, cap=0.001))
    pool = _Pool()
    drained = [asyncio.Event() for _ in range(5)]
    calls = 0

    async def drain() -> int:
        nonlocal calls
        calls += 1
        drained[calls].set()
        if calls == 1:
            return 5  # a full batch: again at once, no wait of poll_interval
        if calls == 3:
            raise ConnectionError("the database is restarting")
        if calls == 4:
            await asyncio.Event().wait()
        return 2

    loop = asyncio.ensure_future(wakeup.drain_on_notify(
        pool, "carewatch_test", drain, batch_size=5, poll_interval=3600.0, name="test drain"))
    await asyncio.wait_for(drained[2].wait(), 10)
    assert [len(listener.listening) for listener in pool.acquired] == [1]
    channel, notify = pool.acquired[0].listening[0]
    assert channel == "carewatch_test"
    notify()  # waiting for up to an hour: woken now
    await asyncio.wait_for(drained[4].wait(), 10)
    assert len(pool.acquired) == 2 and pool.released == [pool.acquired[0]]
    assert pool.acquired[0].listening == [] and len(pool.acquired[1].listening) == 1
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert pool.released == pool.acquired and pool.acquired[1].listening == []
