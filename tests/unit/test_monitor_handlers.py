"""quality-monitor's event handlers (services/quality_monitor/app.py ``Monitor``:
``on_feedback_accepted``, ``on_feedback_batch``, ``on_concern_closed``) reached through a fake store and outbox:
an item's own risk, a cluster of items (a concern of its own, or a signal of its measure
family), a later item that ends a concern, a closure on the escalation side. The SPC,
funnel and complaint-handling checks have theirs in test_measure_verdicts.py and
test_complaint_handling_verdicts.py.

What stays with PostgreSQL (tests/integration/test_monitor*.py): the advisory locks between
replicas, the group commit of feedback, and the store's SQL, including how
``raise_or_update`` and ``raise_signal`` merge into an open concern (the fake only raises)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.quality_monitor import app as monitor_app
from services.quality_monitor.app import CLUSTER_RULE, MEASURE_RULE, Monitor
from services.quality_monitor.clusters import Item
from services.quality_monitor.config import ClusterRule, MonitorRules, load_rules
from services.quality_monitor.review import SYSTEM_ACTOR
from services.quality_monitor.rules import IMMEDIATE_RULE, POSSIBLE_RULE, VISIT_RULE, fingerprint
from shared.events import (
    ConcernClosed,
    ConcernRaised,
    ConcernResolved,
    FeedbackAccepted,
    FeedbackAcceptedBatch,
    ProviderRef,
    Severity,
)
from shared.groupcommit import Batch
from tests.unit.builders import feedback
from tests.unit.fakes import FakeClock, FakeOutbox

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DISCHARGE = "Admissions, discharges and transfers"


@dataclass
class FakeStore:
    """monitor's store over lists: the feedback kept, the concerns raised (by fingerprint)."""

    feedback: list[FeedbackAccepted] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    locks: list[tuple[str, ...]] = field(default_factory=list)
    concerns: dict[str, dict[str, Any]] = field(default_factory=dict)  # by fingerprint
    signals: list[dict[str, Any]] = field(default_factory=list)

    async def lock(self, conn: object, *keys: str) -> None:
        self.locks.append(keys)

    async def record_feedback(self, batch: Batch, fb: FeedbackAccepted) -> None:
        self.feedback.append(fb)

    async def record_provider(self, conn: object, provider: ProviderRef,
                              committed: dict[str, dict[str, Any]] | None = None) -> None:
        self.providers.append(provider.ods_code)

    async def theme_items(self, batch: Batch, ods_code: str, kinds: list[str], theme: str,
                          start: date, end: date, site_code: str | None = None,
                          per_site: bool = False) -> list[Item]:
        return [Item(f.feedback_id, f.kind, f.occurred_on, f.site_code) for f in self.feedback
                if f.provider.ods_code == ods_code and f.kind in kinds
                and (f.theme or "").lower() == theme.lower() and start <= f.occurred_on <= end
                and (not per_site or f.site_code == site_code)]

    async def raise_or_update(self, conn: object, **fields: Any) -> ConcernRaised:
        event = ConcernRaised(concern_id=uuid.uuid4(), raised_at=fields.pop("at"), **fields)
        self.concerns[event.fingerprint] = {
            "concern_id": event.concern_id, "status": "open", "event": event,
            "evidence": [e.model_dump(mode="json") for e in event.evidence]}
        return event

    async def raise_signal(self, conn: object, **fields: Any) -> ConcernRaised:
        self.signals.append(fields)
        return await self.raise_or_update(conn, **{
            k: v for k, v in fields.items() if k not in ("family", "signal", "signal_rule")},
            theme=fields["family"])

    async def open_concern(self, conn: object, fingerprint: str) -> dict[str, Any] | None:
        row = self.concerns.get(fingerprint)
        return row if row is not None and row["status"] == "open" else None

    async def resolve(self, conn: object, concern_id: uuid.UUID, resolution: str,
                      at: datetime) -> ConcernResolved | None:
        row = next((r for r in self.concerns.values() if r["concern_id"] == concern_id), None)
        if row is None or row["status"] != "open":
            return None
        row["status"] = "resolved"
        raised: ConcernRaised = row["event"]
        return ConcernResolved(**raised.model_dump(include={
            "concern_id", "fingerprint", "provider", "rule", "theme", "severity"}),
            resolution=resolution, resolved_at=at)


@dataclass
class FakeReview:
    requested: list[uuid.UUID] = field(default_factory=list)

    async def request(self, conn: object, concern_id: uuid.UUID, at: datetime,
                      actor: str = SYSTEM_ACTOR) -> bool:
        self.requested.append(concern_id)
        return True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    store = FakeStore()
    monkeypatch.setattr(monitor_app, "store", store)
    return store


@pytest.fixture
def reviews(monkeypatch: pytest.MonkeyPatch) -> FakeReview:
    review = FakeReview()
    monkeypatch.setattr(monitor_app, "review", review)
    return review


async def accept(fb: FeedbackAccepted, rules: MonitorRules | None = None) -> FakeOutbox:
    outbox = FakeOutbox()
    monitor = Monitor(rules or load_rules(), clock=FakeClock(NOW))
    await monitor.on_feedback_accepted(Batch(object()), fb, outbox)  # type: ignore[arg-type]
    return outbox


def gp_alert(day: int, **content: Any) -> FeedbackAccepted:
    fb = feedback("gp_alert", theme=DISCHARGE, description="No discharge summary sent.",
                  **content)
    return fb.model_copy(update={"occurred_on": date(2026, 11, day)})


async def test_an_item_rated_an_extreme_risk_raises_a_serious_concern_at_once(
        fake: FakeStore, reviews: FakeReview) -> None:
    fb = feedback("complaint", description="Staff were rude at reception.",
                  risk={"consequence": 4, "likelihood": 4})
    outbox = await accept(fb)
    [raised] = outbox.events
    assert isinstance(raised, ConcernRaised)
    assert (raised.rule, raised.severity, raised.raised_at) == (IMMEDIATE_RULE,
                                                                 Severity.SERIOUS, NOW)
    assert raised.fingerprint == fingerprint("RJ1", IMMEDIATE_RULE, "Clinical treatment")
    assert [e.feedback_id for e in raised.evidence] == [fb.feedback_id]
    assert raised.figures["triggers"] == ["risk_score"]
    assert fake.feedback == [fb] and fake.providers == ["RJ1"]
    assert not reviews.requested  # a trigger is certain: no review


async def test_a_possible_harm_in_the_text_raises_a_concern_for_review(
        fake: FakeStore, reviews: FakeReview) -> None:
    outbox = await accept(feedback(
        "complaint", description="The patient may have fallen on the ward overnight."))
    [raised] = outbox.events
    assert (raised.rule, raised.severity) == (POSSIBLE_RULE, Severity.HIGH)
    assert reviews.requested == [raised.concern_id]


async def test_the_third_gp_alert_in_thirty_days_signals_the_gp_alerts_family(
        fake: FakeStore) -> None:
    alerts = [gp_alert(2), gp_alert(10), gp_alert(16)]
    assert not (await accept(alerts[0])).events
    assert not (await accept(alerts[1])).events
    outbox = await accept(alerts[2])
    [raised] = outbox.events
    assert raised.fingerprint == fingerprint("RJ1", MEASURE_RULE, "GP alerts")
    [signal] = fake.signals
    assert signal["signal"] == "cluster:gp_alerts_discharge" and signal["signal_rule"] == CLUSTER_RULE
    assert signal["severity"] == Severity.HIGH
    assert [e.feedback_id for e in signal["evidence"]] == [a.feedback_id for a in alerts]
    assert (signal["figures"]["count"], signal["figures"]["threshold"]) == (3, 3)
    assert fake.locks[-1] == ("cluster:RJ1:gp_alerts_discharge",)  # its cluster's lock


async def test_a_cluster_across_kinds_is_a_concern_of_its_own(fake: FakeStore) -> None:
    rules = MonitorRules(clusters=[ClusterRule(
        name="discharge_any", kinds=["complaint", "gp_alert"], theme=DISCHARGE, count=2,
        window_days=30, severity=Severity.MODERATE)])
    await accept(gp_alert(2), rules)
    complaint = feedback("complaint", theme=DISCHARGE, description="Sent home too early.")
    outbox = await accept(complaint, rules)
    [raised] = outbox.events
    assert raised.fingerprint == fingerprint("RJ1", CLUSTER_RULE, DISCHARGE)
    assert raised.severity == Severity.MODERATE and not fake.signals
    assert raised.reason.startswith(f"2 complaints or gp alerts about {DISCHARGE} at ")


async def test_a_later_visit_rated_good_resolves_the_visit_concern(fake: FakeStore) -> None:
    def visit(day: int, rating: str) -> FeedbackAccepted:
        return feedback("insight_visit", theme="Ward 7", rating=rating,
                        visit_type="insight_visit", service="Ward 7").model_copy(
            update={"occurred_on": date(2026, 11, day)})
    [raised] = (await accept(visit(10, "inadequate"))).events
    assert (raised.rule, raised.severity) == (VISIT_RULE, Severity.HIGH)
    assert not (await accept(visit(9, "good"))).events  # earlier than the concern's evidence
    # A second visit rated inadequate on the 14th updated the concern: one between ends nothing.
    fake.concerns[raised.fingerprint]["evidence"].append({"occurred_on": "2026-11-14"})
    assert not (await accept(visit(12, "good"))).events
    outbox = await accept(visit(16, "good"))
    [resolved] = outbox.events
    assert isinstance(resolved, ConcernResolved) and resolved.concern_id == raised.concern_id
    assert resolved.resolution == "resolved: a later visit on 2026-11-16 rated good"


async def test_a_closure_on_the_escalation_side_resolves_the_concern_once(
        fake: FakeStore) -> None:
    [raised] = (await accept(feedback("complaint", description="Rude.",
                                      risk={"consequence": 5, "likelihood": 3}))).events
    closed = ConcernClosed(concern_id=raised.concern_id, provider=raised.provider,
                           closed_by="user:lead", reason="all actions complete",
                           closed_at=NOW + timedelta(days=30))
    monitor = Monitor(load_rules(), clock=FakeClock(NOW))
    outbox = FakeOutbox()
    await monitor.on_concern_closed(Batch(object()), closed, outbox)  # type: ignore[arg-type]
    await monitor.on_concern_closed(Batch(object()), closed, outbox)  # type: ignore[arg-type]
    [resolved] = outbox.events
    assert resolved.resolution == "closed by escalation (user:lead): all actions complete"
    assert resolved.resolved_at == closed.closed_at



# -- a bulk message's items, in one event ---------------------------------------------------------
async def test_a_batch_event_handles_each_item_as_alone_reading_a_repeated_text_once(
        fake: FakeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    harm = "My father fell on the ward at night and suffered a fractured hip; he died a week later."
    items = [feedback("fft_response", theme="fft: inpatient", answer="very_good",
                      comment="Lovely staff.") for _ in range(3)]
    items.append(feedback("fft_response", theme="fft: inpatient", answer="very_poor",
                          comment=harm, ods_code="RJZ"))
    items.append(feedback("fft_response", theme="fft: inpatient", answer="good"))
    read: list[str] = []
    real_read = monitor_app.read_harm

    async def counting(text: str) -> Any:
        read.append(text)
        return await real_read(text)

    monkeypatch.setattr(monitor_app, "read_harm", counting)
    outbox = FakeOutbox()
    monitor = Monitor(load_rules(), clock=FakeClock(NOW))
    await monitor.on_feedback_batch(Batch(object()),  # type: ignore[arg-type]
                                    FeedbackAcceptedBatch(kind="fft_response", items=items),
                                    outbox)  # type: ignore[arg-type]
    assert fake.feedback == items  # every item recorded, in order
    assert sorted(read) == sorted(["Lovely staff.", harm, ""])  # each distinct text once
    # The harm in one comment raises its concern, as the item alone would.
    [raised] = outbox.of(ConcernRaised)
    assert (raised.rule, raised.severity) == (IMMEDIATE_RULE, Severity.SERIOUS)
    assert raised.provider.ods_code == "RJZ"
    assert [e.feedback_id for e in raised.evidence] == [items[3].feedback_id]
    alone = await accept(items[3])
    assert [(e.rule, e.severity, e.theme) for e in alone.of(ConcernRaised)] == \
        [(raised.rule, raised.severity, raised.theme)]


def test_a_batch_event_carries_one_routine_kind() -> None:
    with pytest.raises(ValueError, match="every item"):
        FeedbackAcceptedBatch(kind="fft_response", items=[
            feedback("fft_response"), feedback("compliment")])
    with pytest.raises(ValueError, match="batch carries"):
        FeedbackAcceptedBatch(kind="complaint", items=[feedback("complaint")])
    batch = FeedbackAcceptedBatch(kind="fft_response", items=[feedback("fft_response")])
    assert batch.routing_key() == "feedback.accepted_batch.v1.fft_response"
    assert not batch.urgent
