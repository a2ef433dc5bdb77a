"""Merging announcements of a concern (services/escalation/concerns.py): order-free, so that
``concern.raised`` and ``concern.updated`` may be handled in either order; and the extra
working-day arithmetic of services/escalation/calendar.py."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from services.escalation.calendar import working_days_before, working_days_between
from services.escalation.concerns import (
    KnownConcern,
    agenda,
    agenda_item,
    merge,
    with_evidence,
)
from shared.events import (
    ConcernRaised,
    ConcernUpdated,
    ConcernUpdatedV1,
    Evidence,
    ProviderRef,
    Severity,
)

PROVIDER = ProviderRef(ods_code="RAN", name="Royal National Orthopaedic Hospital NHS Trust",
                       provider_type="specialist", quality_contact_email="quality.ran@provider.example")
CONCERN_ID = uuid.uuid4()


def evidence(n: int) -> Evidence:
    return Evidence(feedback_id=uuid.UUID(int=n), kind="complaint", occurred_on=date(2026, 11, n))


def raised(severity: Severity, *ev: int, reason: str = "first") -> ConcernRaised:
    return ConcernRaised(concern_id=CONCERN_ID, fingerprint="fp", provider=PROVIDER,
                         rule="cluster", theme="falls", severity=severity, reason=reason,
                         evidence=[evidence(n) for n in ev],
                         raised_at=datetime(2026, 11, 20, tzinfo=UTC))


def updated(severity: Severity, previous: Severity, *ev: int, reason: str) -> ConcernUpdated:
    return ConcernUpdated(**raised(severity, *ev, reason=reason).model_dump(),
                          evidence_count=len(ev), previous_severity=previous)


def test_a_new_concern_is_all_change() -> None:
    concern, change = merge(None, raised(Severity.HIGH, 1))
    assert change.is_new and change.changed
    assert concern.severity == Severity.HIGH


def test_new_evidence_and_a_rise_in_severity() -> None:
    concern, change = merge(raised(Severity.HIGH, 1),
                            updated(Severity.SERIOUS, Severity.HIGH, 1, 2, reason="worse"))
    assert change.severity_rose and not change.is_new
    assert [e.feedback_id for e in change.new_evidence] == [uuid.UUID(int=2)]
    assert concern.severity == Severity.SERIOUS and concern.reason == "worse"
    assert change.describe() == "severity rose from high to serious; 1 new piece(s) of evidence"


def test_the_raise_arriving_after_the_update_changes_nothing() -> None:
    after_update, _ = merge(None, updated(Severity.SERIOUS, Severity.HIGH, 1, 2, reason="worse"))
    concern, change = merge(after_update, raised(Severity.HIGH, 1))
    assert not change.changed
    assert concern.severity == Severity.SERIOUS  # never falls
    assert concern.reason == "worse"
    assert len(concern.evidence) == 2


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_merging_is_order_free(order: tuple[int, ...]) -> None:
    events = [raised(Severity.MODERATE, 1),
              updated(Severity.HIGH, Severity.MODERATE, 1, 2, reason="second"),
              updated(Severity.SERIOUS, Severity.HIGH, 1, 2, 3, reason="third")]
    known = None
    for i in order:
        known, _ = merge(known, events[i])
    assert known is not None
    assert known.severity == Severity.SERIOUS
    assert {e.feedback_id for e in known.evidence} == {uuid.UUID(int=n) for n in (1, 2, 3)}


def test_updates_carrying_only_their_new_evidence_add_to_the_concern() -> None:
    # concern.updated.v2: each update carries the items it adds; the same update twice, or
    # out of order with the raise, keeps each item once.
    first = updated(Severity.HIGH, Severity.MODERATE, 2, reason="second")
    second = updated(Severity.HIGH, Severity.HIGH, 3, reason="third")
    known, _ = merge(None, raised(Severity.MODERATE, 1))
    for event in (first, second, second, first):
        known, _ = merge(known, event)
    assert [e.feedback_id for e in known.evidence] == [uuid.UUID(int=n) for n in (1, 2, 3)]
    known, change = merge(known, second)
    assert not change.changed and len(known.evidence) == 3


def test_a_version_1_update_with_the_whole_list_comes_to_the_same() -> None:
    v1 = ConcernUpdatedV1(**raised(Severity.HIGH, 1, 2, reason="v1").model_dump(),
                          previous_severity=Severity.MODERATE)
    assert v1.evidence_count == 2 and "evidence_count" not in v1.model_dump()
    known, _ = merge(None, raised(Severity.MODERATE, 1))
    known, change = merge(known, v1)
    assert [e.feedback_id for e in change.new_evidence] == [uuid.UUID(int=2)]
    assert len(known.evidence) == 2


def test_agenda_lists_every_piece_of_evidence_of_a_small_concern() -> None:
    items = agenda(raised(Severity.SERIOUS, 1, 2))
    assert items[0] == "The concern: first"
    assert sum(i.startswith("Evidence:") for i in items) == 2
    assert not any("more (total" in i for i in items)


def test_agenda_lists_the_latest_items_and_counts_the_rest() -> None:
    # What escalation holds of a concern with 500 items: the latest 10, and the count.
    latest = [evidence(n) for n in range(21, 31)]
    known = with_evidence(raised(Severity.SERIOUS, 1), latest, 500)
    items = agenda(known)
    assert len(items) == 2 + 10 + 1 + 1
    assert items[2].startswith(f"Evidence: complaint {uuid.UUID(int=21)}")
    assert items[-2] == "Evidence: and 490 more (total 500)"
    assert len(agenda(known, listed=3)) == 2 + 3 + 1 + 1
    assert agenda(known, listed=3)[2].startswith(f"Evidence: complaint {uuid.UUID(int=28)}")
    assert agenda_item(known).endswith("[500 piece(s) of evidence]")


def test_merging_what_the_store_added_keeps_the_rule() -> None:
    # The store took the union (escalation's concern_evidence) and says what was new.
    known = with_evidence(raised(Severity.HIGH, 1), [evidence(1)], 1)
    incoming = updated(Severity.MODERATE, Severity.HIGH, 1, 2, reason="later")
    concern, change = merge(known, incoming, [evidence(2)])
    assert concern.severity == Severity.HIGH  # never falls
    assert concern.reason == "later"  # it brought something new
    assert isinstance(concern, KnownConcern) and concern.evidence_count == 2
    assert [e.feedback_id for e in change.new_evidence] == [uuid.UUID(int=2)]
    concern, change = merge(concern, incoming, [])
    assert isinstance(concern, KnownConcern) and concern.evidence_count == 2
    assert not change.changed


@pytest.mark.parametrize("day, n, expected", [
    (date(2026, 11, 23), 1, date(2026, 11, 20)),  # Monday - 1 = Friday
    (date(2026, 12, 29), 1, date(2026, 12, 24)),  # after Christmas and Boxing Day substitute
    (date(2027, 3, 30), 1, date(2027, 3, 25)),    # after Easter 2027
    (date(2026, 11, 23), 0, date(2026, 11, 23)),
])
def test_working_days_before(day: date, n: int, expected: date) -> None:
    assert working_days_before(day, n) == expected


@pytest.mark.parametrize("start, end, expected", [
    (date(2026, 11, 20), date(2026, 11, 23), 1),   # Friday to Monday
    (date(2026, 12, 24), date(2026, 12, 29), 1),   # Christmas Eve to Tuesday 29
    (date(2026, 12, 23), date(2027, 1, 4), 5),     # 24, 29, 30, 31 Dec, 4 Jan (1 Jan off)
    (date(2026, 11, 23), date(2026, 11, 23), 0),
    (date(2026, 11, 23), date(2026, 11, 20), -1),
])
def test_working_days_between(start: date, end: date, expected: int) -> None:
    assert working_days_between(start, end) == expected
