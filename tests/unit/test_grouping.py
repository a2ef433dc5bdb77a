"""Alertmanager-style grouping (services/notification/grouping.py): timers and flush plans."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from services.notification.grouping import (
    Alert,
    flush_time_on_change,
    group_key,
    next_digest,
    plan_flush,
)
from services.notification.routing import Timing

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
REPEAT = timedelta(hours=4)  # TIMING.repeat_interval, named so its type is not optional
TIMING = Timing(group_wait=timedelta(seconds=30), group_interval=timedelta(minutes=5),
                repeat_interval=REPEAT)
S = timedelta(seconds=1)


def alert(key: str, status: str = "firing", version: int = 1, notified: int = 0,
          seen: datetime = T0) -> Alert:
    return Alert(key=key, status=status, event_type="concern.raised.v1",  # type: ignore[arg-type]
                 payload={}, version=version, notified_version=notified, first_seen_at=seen)


def keys(alerts: Any) -> list[str]:
    return [a.key for a in alerts]


# -- timers ----------------------------------------------------------------------------------
def test_a_new_group_waits_group_wait_and_later_alerts_do_not_push_it_back() -> None:
    first = flush_time_on_change(TIMING, False, T0, None, None)
    assert first == T0 + 30 * S
    assert flush_time_on_change(TIMING, False, T0 + 20 * S, first, None) == first


def test_changes_after_a_notification_wait_for_the_group_interval() -> None:
    sent_at = T0
    # A change one minute after the last notification goes out 5 minutes after it...
    assert flush_time_on_change(TIMING, False, T0 + 60 * S, sent_at + REPEAT,
                                sent_at) == sent_at + timedelta(minutes=5)
    # ...and a change long after it goes out at once.
    later = T0 + timedelta(hours=1)
    assert flush_time_on_change(TIMING, False, later, sent_at + REPEAT,
                                sent_at) == later


def test_digest_flushes_at_the_next_digest_time_london() -> None:
    timing = TIMING.model_copy(update={"digest_at": time(8, 0)})
    # 10:00 UTC on 22 Nov (GMT): the next 08:00 London is tomorrow, 08:00 UTC.
    assert flush_time_on_change(timing, True, T0, None, None) == datetime(
        2026, 11, 23, 8, 0, tzinfo=UTC)
    # In summer 08:00 London is 07:00 UTC; 06:30 UTC is before it, the same day.
    summer = datetime(2026, 7, 1, 6, 30, tzinfo=UTC)
    assert next_digest(summer, timing) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    # Exactly at the digest time: the next day's.
    at = datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert next_digest(at, timing) == datetime(2026, 7, 2, 7, 0, tzinfo=UTC)
    # Across the clocks going back (25 Oct 2026): 08:00 GMT is 08:00 UTC.
    assert next_digest(datetime(2026, 10, 24, 9, tzinfo=UTC), timing) == datetime(
        2026, 10, 25, 8, 0, tzinfo=UTC)


# -- flush plans -----------------------------------------------------------------------------
def test_first_flush_sends_every_alert_of_the_burst_once() -> None:
    burst = [alert(f"c{i}", seen=T0 + i * S) for i in range(20)]
    plan = plan_flush(burst, TIMING, False, T0 + 30 * S, None)
    assert plan.reason == "changes"
    assert keys(plan.send) == [f"c{i}" for i in range(20)]
    assert {a.change for a in plan.send} == {"new"}
    assert plan.next_flush_at == T0 + 30 * S + REPEAT
    assert not plan.close and plan.done == ()


def test_an_update_sends_the_whole_group_with_what_changed() -> None:
    group = [alert("a", version=1, notified=1), alert("b", version=2, notified=1),
             alert("c", version=1, notified=0)]
    plan = plan_flush(group, TIMING, False, T0, T0 - timedelta(minutes=5))
    assert plan.reason == "changes"
    assert [(a.key, a.change) for a in plan.send] == [("a", "open"), ("b", "updated"),
                                                      ("c", "new")]


def test_resolution_is_sent_once_then_the_alert_leaves_and_an_empty_group_closes() -> None:
    group = [alert("a", version=1, notified=1), alert("b", "resolved", version=2, notified=1)]
    plan = plan_flush(group, TIMING, False, T0, T0 - timedelta(minutes=10))
    assert [(a.key, a.change) for a in plan.send] == [("a", "open"), ("b", "resolved")]
    assert plan.done == ("b",) and not plan.close
    last = plan_flush([alert("a", "resolved", version=2, notified=1)], TIMING, False, T0,
                      T0 - timedelta(minutes=10))
    assert [a.change for a in last.send] == ["resolved"]
    assert last.close and last.next_flush_at is None


def test_unchanged_open_alerts_repeat_after_the_repeat_interval_only() -> None:
    group = [alert("a", version=1, notified=1)]
    last = T0 - REPEAT
    early = plan_flush(group, TIMING, False, T0 - S, last)
    assert early.send == () and early.reason == "none"
    assert early.next_flush_at == last + REPEAT
    due = plan_flush(group, TIMING, False, T0, last)
    assert due.reason == "repeat" and keys(due.send) == ["a"]
    assert due.next_flush_at == T0 + REPEAT
    no_repeat = TIMING.model_copy(update={"repeat_interval": None})
    assert plan_flush(group, no_repeat, False, T0, last).send == ()
    assert plan_flush(group, no_repeat, False, T0, last).next_flush_at is None


def test_digest_carries_only_changes_and_never_repeats() -> None:
    group = [alert("a", version=1, notified=1), alert("b", version=1, notified=0)]
    plan = plan_flush(group, TIMING, True, T0, T0 - timedelta(days=1))
    assert keys(plan.send) == ["b"]
    assert plan.next_flush_at is None
    assert plan_flush([alert("a", version=1, notified=1)], TIMING, True, T0,
                      T0 - timedelta(days=2)).send == ()


def test_group_key_names_route_recipient_and_grouped_labels() -> None:
    labels = {"provider": "RX1", "theme": "Falls", "severity": "low"}
    assert group_key("moderate", "email", "a@b", ("provider",), labels) == \
        "moderate|email|a@b|provider=RX1"
    assert group_key("d", "webhook", "team", (), labels) == "d|webhook|team|"
