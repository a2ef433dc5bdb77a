"""Clusters of feedback on one provider and theme within a window (services/quality_monitor/clusters.py)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from services.quality_monitor.clusters import (
    Item,
    find_cluster,
    has_passed,
    is_current,
    window_ending,
)

D = date(2026, 10, 1)


def items(*offsets: int) -> list[Item]:
    return [Item(uuid.uuid4(), "gp_alert", D + timedelta(days=o)) for o in offsets]


def test_three_in_thirty_days_is_a_cluster_with_every_item_as_evidence() -> None:
    found = find_cluster(items(0, 10, 29), count=3, days=30, anchor=D + timedelta(days=29),
                         today=D + timedelta(days=30))
    assert found is not None
    assert (found.start, found.end, found.count) == (D, D + timedelta(days=29), 3)


def test_three_spread_over_thirty_one_days_is_not() -> None:
    assert find_cluster(items(0, 10, 30), count=3, days=30, anchor=D + timedelta(days=30),
                        today=D + timedelta(days=30)) is None


def test_an_item_arriving_late_completes_the_cluster_it_belongs_to() -> None:
    # The anchor (the late item) is the earliest of the three.
    found = find_cluster(items(0, 5, 20), count=3, days=30, anchor=D, today=D + timedelta(days=25))
    assert found is not None and found.count == 3 and found.end == D + timedelta(days=20)


def test_the_fullest_window_wins() -> None:
    data = items(0, 1, 2, 25, 26, 27, 28)
    found = find_cluster(data, count=3, days=30, anchor=D + timedelta(days=25),
                         today=D + timedelta(days=28))
    assert found is not None and found.count == 7


def test_a_cluster_long_past_is_not_raised() -> None:
    data = items(0, 1, 2)
    assert find_cluster(data, count=3, days=30, anchor=D, today=D + timedelta(days=31)) is not None
    assert find_cluster(data, count=3, days=30, anchor=D, today=D + timedelta(days=32)) is None
    assert is_current(D + timedelta(days=2), 30, D + timedelta(days=31))
    assert not is_current(D + timedelta(days=2), 30, D + timedelta(days=32))


def test_window_ending_counts_inclusive_days() -> None:
    w = window_ending(items(-1, 0, 29, 30), D + timedelta(days=29), 30)
    assert w.count == 2 and w.start == D


def test_a_cluster_passes_after_a_whole_window_below_the_threshold() -> None:
    data = items(0, 1, 2)
    last = D + timedelta(days=2)
    today = last + timedelta(days=29)
    assert not has_passed(last, window_ending(data, today, 30), 3)
    today = last + timedelta(days=30)
    assert has_passed(last, window_ending(data, today, 30), 3)
    # three new items keep it going
    more = [*data, *items(40, 41, 42)]
    assert not has_passed(last, window_ending(more, D + timedelta(days=45), 30), 3)
