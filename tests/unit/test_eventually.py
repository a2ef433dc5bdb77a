"""``eventually`` waits while the system makes progress, and fails when it stalls."""

from __future__ import annotations

import itertools

import pytest

from tests.helpers import eventually


async def test_a_stalled_system_fails_after_the_timeout() -> None:
    async def never() -> None:
        return None

    async def still() -> object:
        return 7

    with pytest.raises(AssertionError, match="without progress"):
        await eventually(never, timeout=0.2, interval=0.01, progress=still)


async def test_progress_extends_the_wait_past_the_timeout() -> None:
    polls = itertools.count()
    ticks = itertools.count()

    async def slow() -> bool:
        return next(polls) >= 60  # about 0.6 s: three timeouts of 0.2 s

    async def moving() -> object:
        return next(ticks)

    assert await eventually(slow, timeout=0.2, interval=0.01, progress=moving) is True


async def test_progress_never_waits_past_the_limit() -> None:
    ticks = itertools.count()

    async def never() -> None:
        return None

    async def moving() -> object:
        return next(ticks)

    with pytest.raises(AssertionError):
        await eventually(never, timeout=0.05, interval=0.01, progress=moving, limit=0.3)
