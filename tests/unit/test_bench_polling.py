"""The bench's wait for a table to fill (tools/bench.py): it counts rarely while far from
the target (each count scans the growing table, in the database the run measures) and
finely near it (the drain time stays exact)."""

from __future__ import annotations

import asyncio
from typing import Any

from tools.bench import next_poll, wait_for


def test_far_from_the_target_the_count_is_rare_and_near_it_fine() -> None:
    assert next_poll(300_000, 600.0) == 1.0  # minutes to go: once a second
    assert next_poll(600, 600.0) == 0.25  # a second to go: a quarter of it
    assert next_poll(10, 600.0) == 0.05  # about to finish: every 50 ms
    assert next_poll(1000, 0.0) == 0.05  # nothing done yet: no rate to go by


class FillingTable:
    """A connection whose count grows by ``rate`` a second, counting its counts."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.counts = 0
        self.started = asyncio.get_running_loop().time()

    async def fetchval(self, sql: str) -> int:
        self.counts += 1
        return int((asyncio.get_running_loop().time() - self.started) * self.rate)


async def test_a_long_wait_counts_a_few_times_a_second() -> None:
    conn: Any = FillingTable(rate=2000.0)
    progress: list[tuple[float, int]] = []
    elapsed = await wait_for(conn, "SELECT count(*) FROM t", 6000, 60, "filling", progress)
    # Every 50 ms, 3 s would take 60 counts (a slow machine only makes them fewer).
    assert conn.counts < 25
    assert elapsed >= 3.0
    # Every count is kept, for the rate over the run (rate_thirds).
    assert len(progress) == conn.counts
    assert progress[-1][1] >= 6000
    assert [t for t, _ in progress] == sorted(t for t, _ in progress)
