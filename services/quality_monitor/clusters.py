"""Clusters: N pieces of feedback on one provider about one theme within a window of days.

Pure functions over plain items. Dates are the feedback's own dates (``occurred_on``), so a
replay of last year's feedback finds the clusters that live monitoring would have found; a
cluster is raised only while it is current, and resolves once a whole window has passed
since its last item with fewer than N items in the window that ends today.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class Item:
    feedback_id: uuid.UUID
    kind: str
    occurred_on: date
    site_code: str | None = None


@dataclass(frozen=True)
class Window:
    start: date
    end: date
    items: tuple[Item, ...]

    @property
    def count(self) -> int:
        return len(self.items)


def window_ending(items: Sequence[Item], end: date, days: int) -> Window:
    """The items dated within the ``days`` days that end on ``end`` (inclusive)."""
    start = end - timedelta(days=days - 1)
    inside = sorted((i for i in items if start <= i.occurred_on <= end),
                    key=lambda i: (i.occurred_on, str(i.feedback_id)))
    return Window(start, end, tuple(inside))


def is_current(end: date, days: int, today: date) -> bool:
    """A window is current while a whole window has not yet passed since its end."""
    return end > today - timedelta(days=days)


def find_cluster(items: Sequence[Item], *, count: int, days: int, anchor: date,
                 today: date) -> Window | None:
    """The fullest current window of ``days`` days that contains ``anchor`` and holds at least
    ``count`` items (ties: the latest); None when there is none.

    Every window that contains the anchor is considered, so an item that arrives late, or
    out of order, still completes the cluster it belongs to.
    """
    ends = sorted({i.occurred_on for i in items
                   if anchor <= i.occurred_on < anchor + timedelta(days=days)} | {anchor})
    best: Window | None = None
    for end in ends:
        w = window_ending(items, end, days)
        if w.count >= count and is_current(end, days, today) and (
                best is None or w.count >= best.count):
            best = w
    return best


def has_passed(last_item_on: date, current: Window, count: int) -> bool:
    """A cluster is over when a whole window has passed since its last item and the window
    that ends today holds fewer than ``count`` items."""
    days = (current.end - current.start).days + 1
    return current.end >= last_item_on + timedelta(days=days) and current.count < count
