"""Complaint handling's verdicts (services/quality_monitor/handling.py ``handling_verdicts``)
and the monitor's handler for them, reached through a fake store and outbox (load -> decide
-> store -> publish, without a database or broker)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.quality_monitor import app as monitor_app
from services.quality_monitor.app import HANDLING_RULE, Monitor
from services.quality_monitor.config import ComplaintHandlingRules, MonitorRules
from services.quality_monitor.handling import (
    Complaint,
    OverThreshold,
    WithinThreshold,
    handling_verdicts,
    handling_window,
)
from services.quality_monitor.rules import fingerprint
from shared.events import ConcernRaised, ConcernResolved, Severity
from shared.groupcommit import Batch
from tests.unit.builders import provider
from tests.unit.fakes import FakeOutbox

MONTHS = ["2026-08", "2026-09", "2026-10"]
AS_OF = date(2026, 11, 20)
RULES = ComplaintHandlingRules()  # 3 working days, 6 months, at least 5 due, 20%


def complaint(received: date, ack: date | None = None, resp: date | None = None) -> Complaint:
    return Complaint(uuid.uuid4(), received, ack, resp)


def acknowledged(late: int, on_time: int) -> list[Complaint]:
    """Complaints received in September: ``late`` acknowledged after 3 working days."""
    return ([complaint(date(2026, 9, 1), ack=date(2026, 9, 10)) for _ in range(late)]
            + [complaint(date(2026, 9, 1), ack=date(2026, 9, 2)) for _ in range(on_time)])


def verdicts(complaints: list[Complaint],
             cfg: ComplaintHandlingRules = RULES) -> list[OverThreshold | WithinThreshold]:
    window = handling_window(complaints, MONTHS, AS_OF, acknowledge_within=3, respond_within=6)
    return handling_verdicts(window, MONTHS, "Guy's", cfg)


def test_late_acknowledgements_over_the_threshold_are_a_concern_with_their_evidence() -> None:
    late = acknowledged(late=2, on_time=3)
    ack, responses = verdicts(late)
    assert isinstance(ack, OverThreshold)
    assert ack.theme == "late acknowledgements" and ack.severity is Severity.LOW
    assert ack.reason == ("Complaint handling at Guy's: 2 of 5 complaints (40%) acknowledged"
                          " later than 3 working days in 2026-08 to 2026-10; the threshold"
                          " is 20%")
    assert ack.figures["late"] == 2 and ack.figures["due"] == 5
    assert ack.figures["share"] == 0.4 and ack.figures["months"] == MONTHS
    assert ack.figures["monthly"][1] == ["2026-09", 5, 2, 0, 0]
    assert [e.feedback_id for e in ack.evidence] == sorted(
        (c.feedback_id for c in late[:2]), key=str)
    assert {e.matched for e in ack.evidence} == {"late acknowledgement"}
    # Responses are not yet due for September's complaints: nothing to judge, so it resolves.
    assert responses == WithinThreshold(
        "overdue responses", "signal returned to common cause: overdue responses no complaints"
        " due in 2026-08 to 2026-10, below the threshold of 20%")


def test_exactly_the_threshold_is_a_concern_and_just_below_is_not() -> None:
    at = verdicts(acknowledged(late=1, on_time=4))[0]   # 20%
    below = verdicts(acknowledged(late=1, on_time=5))[0]  # 17%
    assert isinstance(at, OverThreshold)
    assert below == WithinThreshold(
        "late acknowledgements", "signal returned to common cause: late acknowledgements 17%"
        " in 2026-08 to 2026-10, below the threshold of 20%")


def test_too_few_complaints_due_is_no_concern_whatever_the_share() -> None:
    [ack, _] = verdicts(acknowledged(late=4, on_time=0))
    assert isinstance(ack, WithinThreshold)
    [ack, _] = verdicts(acknowledged(late=4, on_time=0), RULES.model_copy(
        update={"min_complaints": 4}))
    assert isinstance(ack, OverThreshold)


def test_overdue_responses_use_their_own_threshold_and_severity() -> None:
    # Received in March-April: responses due in September-October, none answered.
    unanswered = [complaint(date(2026, 3, 10), ack=date(2026, 3, 11)) for _ in range(5)]
    [ack, responses] = verdicts(unanswered)
    assert isinstance(ack, WithinThreshold)
    assert isinstance(responses, OverThreshold)
    assert responses.severity is Severity.MODERATE
    assert "5 of 5 complaints (100%) answered later than 6 months" in responses.reason


# -- the handler, through a fake store and outbox ----------------------------------------------
class FakeStore:
    """The four queries the complaint-handling check uses, over a dict of concerns."""

    def __init__(self, complaints: list[Complaint]) -> None:
        self.held = complaints
        self.concerns: dict[str, dict[str, Any]] = {}

    async def complaints(self, conn: object, ods_code: str, since: date) -> list[Complaint]:
        return [c for c in self.held if c.received_on >= since]

    async def open_concern(self, conn: object, fp: str) -> dict[str, Any] | None:
        row = self.concerns.get(fp)
        return row if row is not None and row["status"] == "open" else None

    async def raise_or_update(self, conn: object, **fields: Any) -> ConcernRaised:
        event = ConcernRaised(concern_id=uuid.uuid4(), raised_at=fields.pop("at"), **fields)
        self.concerns[event.fingerprint] = {"concern_id": event.concern_id, "status": "open",
                                            "event": event}
        return event

    async def resolve(self, conn: object, concern_id: uuid.UUID, resolution: str,
                      at: datetime) -> ConcernResolved | None:
        row = next(r for r in self.concerns.values() if r["concern_id"] == concern_id)
        row["status"] = "resolved"
        raised: ConcernRaised = row["event"]
        return ConcernResolved(**raised.model_dump(include={
            "concern_id", "fingerprint", "provider", "rule", "theme", "severity"}),
            resolution=resolution, resolved_at=at)


async def test_the_handler_raises_then_resolves_a_handling_concern(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore(acknowledged(late=2, on_time=3))
    monkeypatch.setattr(monitor_app, "store", fake)
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    monitor = Monitor(MonitorRules(), clock=lambda: now)
    outbox = FakeOutbox()

    await monitor.check_complaint_handling(Batch(None), outbox, provider(), "2026-10")  # type: ignore[arg-type]
    [raised] = outbox.events
    assert isinstance(raised, ConcernRaised)
    assert raised.rule == HANDLING_RULE and raised.theme == "late acknowledgements"
    assert raised.fingerprint == fingerprint("RJ1", HANDLING_RULE, "late acknowledgements")
    assert raised.raised_at == now and len(raised.evidence) == 2

    # Later acknowledgements all on time: the share falls below 20% and the concern resolves.
    fake.held += acknowledged(late=0, on_time=10)
    await monitor.check_complaint_handling(Batch(None), outbox, provider(), "2026-10")  # type: ignore[arg-type]
    resolved = outbox.events[1:]
    assert [type(e) for e in resolved] == [ConcernResolved]
    assert isinstance(resolved[0], ConcernResolved)
    assert resolved[0].concern_id == raised.concern_id
    assert "late acknowledgements 13% in 2026-08 to 2026-10" in resolved[0].resolution
