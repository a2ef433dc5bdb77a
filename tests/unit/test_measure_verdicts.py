"""The verdicts on the measures (services/quality_monitor/measure_verdicts.py): SPC on one
series and the funnel of one setting and month, over plain data; and the monitor's
handlers for them, reached through a fake store and outbox (load -> decide -> store ->
publish, without a database or broker)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.quality_monitor import app as monitor_app
from services.quality_monitor.app import Monitor
from services.quality_monitor.config import FunnelRules, MonitorRules
from services.quality_monitor.measure_verdicts import (
    FUNNEL_RULE,
    FUNNEL_SIGNAL,
    SPC_RULE,
    ClearSignal,
    FunnelFigures,
    RaiseSignal,
    family_of,
    funnel_verdicts,
    month_funnel,
    series_verdict,
)
from services.quality_monitor.series import ALL_SETTINGS, METRICS
from shared.events import Evidence, ProviderRef
from shared.groupcommit import Batch
from tests.unit.builders import provider
from tests.unit.fakes import FakeOutbox

RULES = MonitorRules()
NEGATIVE = METRICS["fft_negative"]
PERIODS = [f"2025-{m:02d}" for m in range(1, 13)] + [f"2026-{m:02d}" for m in range(1, 13)]
STEADY = [10.0, 11, 9, 10, 12, 10, 9, 11, 10, 10, 11, 9, 10, 11, 10, 9, 10, 11, 10, 12, 9, 10,
          11]


def evidence_per_month(n: int) -> list[list[Evidence]]:
    return [[Evidence(feedback_id=uuid.uuid4(), kind="fft_monthly",
                      occurred_on=date(int(p[:4]), int(p[5:]), 1), matched=p)]
            for p in PERIODS[:n]]


def judge(values: list[float], rebased: list[str] | None = None,
          evidence: list[list[Evidence]] | None = None) -> Any:
    return series_verdict(RULES.spc, NEGATIVE, "inpatient", "Trust A", PERIODS[:len(values)],
                          values, evidence or evidence_per_month(len(values)), rebased or [])


# -- SPC -----------------------------------------------------------------------------------------
def test_special_cause_of_concern_raises_the_signal_with_the_flagged_months_evidence() -> None:
    evidence = evidence_per_month(24)
    verdict = judge([*STEADY, 30], evidence=evidence)
    assert verdict.rebase is None and verdict.improvement is None
    signal = verdict.signal
    assert isinstance(signal, RaiseSignal)
    assert (signal.family, signal.signal, signal.rule) == (
        "FFT: inpatient", "spc:fft_negative", SPC_RULE)
    assert signal.severity == RULES.spc.metric("fft_negative").severity  # type: ignore[union-attr]
    assert signal.evidence == evidence[-1], "the evidence of the month flagged, no other"
    assert signal.figures["signals"] == [
        {"test": "beyond_limits", "direction": "up", "periods": ["2026-12"]}]
    assert signal.figures["value"] == 30 and signal.figures["points"] == 24
    assert signal.reason.startswith(
        "FFT % negative (inpatient) at Trust A: special cause variation of concern in 2026-12")


def test_common_cause_clears_the_signal() -> None:
    verdict = judge([*STEADY, 10])
    assert verdict.improvement is None and verdict.rebase is None
    assert verdict.signal == ClearSignal(
        "FFT: inpatient", "spc:fft_negative",
        "signal returned to common cause: no special cause of concern in the latest 24 months"
        " of FFT % negative: inpatient (to 2026-12)")


def test_special_cause_in_the_other_direction_is_an_improvement_not_a_concern() -> None:
    verdict = judge([*STEADY, 1])
    assert verdict.improvement is not None
    assert verdict.improvement.period == "2026-12" and verdict.improvement.value == 1
    assert verdict.improvement.signals == [
        {"test": "beyond_limits", "direction": "down", "periods": ["2026-12"]}]
    assert "signals" not in verdict.improvement.figures
    assert not isinstance(verdict.signal, RaiseSignal)


def test_a_sustained_shift_proposes_a_rebase_from_its_first_month() -> None:
    verdict = judge([*STEADY[:12], *[14.0, 15] * 6])
    assert verdict.rebase is not None
    assert verdict.rebase.period == "2026-01"
    assert verdict.rebase.reason == (
        "sustained shift: 12 months in a row above the mean from 2026-01 to 2026-12")
    assert isinstance(verdict.signal, RaiseSignal)


def test_an_accepted_rebase_starts_a_new_group() -> None:
    values = [*STEADY[:12], *[14.0, 15] * 6]
    verdict = judge(values, rebased=["2026-01"])
    assert verdict.rebase is None, "already rebased there"
    assert isinstance(verdict.signal, ClearSignal), "the shift is the new group's level"


def test_too_few_points_give_no_verdict() -> None:
    assert judge(STEADY[:5]) is None


def test_counted_measures_belong_to_their_own_family() -> None:
    assert family_of("complaints", ALL_SETTINGS) == "complaints"
    assert family_of("gp_alerts", ALL_SETTINGS) == "GP alerts"
    assert family_of("fft_positive", "maternity") == "FFT: maternity"


# -- funnel --------------------------------------------------------------------------------------
CFG = FunnelRules()
PEERS = [FunnelFigures(f"P{i}", 10, 100, (uuid.uuid4(),)) for i in range(6)]
HIGH = FunnelFigures("HIGH", 40, 100, (uuid.uuid4(), uuid.uuid4()), "responses")
TINY = FunnelFigures("TINY", 4, 4)


def test_a_funnel_needs_enough_providers_with_enough_responses() -> None:
    assert month_funnel(PEERS[:4], CFG) is None
    assert month_funnel([*PEERS[:4], TINY], CFG) is None, "1-4 responses are suppressed"
    f = month_funnel([*PEERS, HIGH, TINY], CFG)
    assert f is not None
    assert sorted(p.key for p in f.points) == sorted([*(p.ods_code for p in PEERS), "HIGH"])


def test_an_outlier_in_the_month_judged_raises_and_peers_long_within_clear() -> None:
    figures = [*PEERS, HIGH]
    f = month_funnel(figures, CFG)
    assert f is not None
    names = {r.ods_code: f"Trust {r.ods_code}" for r in figures}
    history = {r.ods_code: [("2026-10", "within"), ("2026-09", "within")] for r in PEERS}
    history["P0"] = [("2026-10", "within"), ("2026-09", "above_99.8")]  # one month within
    history["HIGH"] = [("2026-10", "above_99.8")]
    verdicts = dict(funnel_verdicts(f, figures, "inpatient", "2026-10", names, history, CFG))
    assert "P0" not in verdicts, "within for one month only: the signal stays"
    raised = verdicts.pop("HIGH")
    assert isinstance(raised, RaiseSignal)
    assert (raised.family, raised.signal, raised.rule, raised.severity) == (
        "FFT: inpatient", FUNNEL_SIGNAL, FUNNEL_RULE, CFG.severity)
    assert [e.feedback_id for e in raised.evidence] == list(HIGH.feedback_ids)
    assert {e.kind for e in raised.evidence} == {"fft_response"}
    assert raised.figures["band"] == "above_99.8" and raised.figures["responses"] == 100
    assert raised.reason.startswith("FFT % negative (inpatient) at Trust HIGH in 2026-10 is 40.0%")
    assert set(verdicts) == {"P1", "P2", "P3", "P4", "P5"}
    assert all(isinstance(v, ClearSignal) and v.signal == FUNNEL_SIGNAL for v in verdicts.values())


def test_no_verdict_for_a_provider_unknown_or_judged_on_a_later_month() -> None:
    figures = [*PEERS, HIGH]
    f = month_funnel(figures, CFG)
    assert f is not None
    later = {"HIGH": [("2026-11", "within"), ("2026-10", "above_99.8")]}
    assert funnel_verdicts(f, figures, "inpatient", "2026-10", {"HIGH": "Trust"}, later,
                           CFG) == []
    assert funnel_verdicts(f, figures, "inpatient", "2026-10", {}, {}, CFG) == []


# -- the handlers, through a fake store and outbox ------------------------------------------------
class FakeStore:
    """The queries the SPC and funnel checks use, recording what they were asked to store."""

    def __init__(self, combined: list[dict[str, Any]] | None = None) -> None:
        self.combined = combined or []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.histories: dict[str, list[tuple[str, str]]] = {}

    async def rebase_periods(self, conn: object, ods_code: str, metric: str,
                             setting: str) -> list[str]:
        return []

    async def propose_rebase(self, conn: object, **fields: Any) -> bool:
        self.calls.append(("propose_rebase", fields))
        return True

    async def record_improvement(self, conn: object, **fields: Any) -> bool:
        self.calls.append(("record_improvement", fields))
        return True

    async def raise_signal(self, conn: object, **fields: Any) -> str:
        self.calls.append(("raise_signal", fields))
        return f"raised {fields['signal']} on {fields['provider'].ods_code}"

    async def clear_signal(self, conn: object, fingerprint: str, signal: str, why: str,
                           at: datetime) -> str:
        self.calls.append(("clear_signal", {"fingerprint": fingerprint, "signal": signal}))
        return f"cleared {signal} ({fingerprint})"

    async def fft_period_combined(self, batch: Batch, setting: str, period: str,
                                  closed: bool) -> list[dict[str, Any]]:
        return self.combined

    async def save_funnel(self, conn: object, setting: str, period: str, f: Any) -> None:
        self.calls.append(("save_funnel", {"period": period, "providers": len(f.points)}))
        for p in f.points:
            band = p.band.value
            self.histories.setdefault(p.key, []).insert(0, (period, band))

    async def provider_ref(self, conn: object, ods_code: str) -> ProviderRef | None:
        return provider(ods_code, f"Trust {ods_code}")

    async def funnel_history(self, conn: object, ods_code: str,
                             setting: str) -> list[tuple[str, str]]:
        return self.histories.get(ods_code, [])


NOW = datetime(2027, 1, 20, 9, 0, tzinfo=UTC)


async def judge_with_fakes(monkeypatch: pytest.MonkeyPatch,
                           values: list[float]) -> tuple[FakeStore, FakeOutbox]:
    """Monitor.judge_series on ``values`` (fft_negative, inpatient, provider RJ1)."""
    fake, outbox = FakeStore(), FakeOutbox()
    monkeypatch.setattr(monitor_app, "store", fake)
    monitor = Monitor(RULES, clock=lambda: NOW)
    await monitor.judge_series(None, outbox, provider("RJ1", "Trust A"), NEGATIVE,  # type: ignore[arg-type]
                               "inpatient", PERIODS, values, evidence_per_month(24))
    return fake, outbox


async def test_judge_series_stores_the_rebase_and_raises_the_signal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, outbox = await judge_with_fakes(monkeypatch, [*STEADY[:12], *[14.0, 15] * 6])
    assert [name for name, _ in fake.calls] == ["propose_rebase", "raise_signal"]
    assert fake.calls[0][1]["period"] == "2026-01" and fake.calls[0][1]["at"] == NOW
    raised = fake.calls[1][1]
    assert raised["signal"] == "spc:fft_negative" and raised["signal_rule"] == SPC_RULE
    assert raised["family"] == "FFT: inpatient" and raised["at"] == NOW
    assert outbox.events == ["raised spc:fft_negative on RJ1"]


async def test_judge_series_notes_an_improvement_and_clears_the_signal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, outbox = await judge_with_fakes(monkeypatch, [*STEADY, 1])
    assert [name for name, _ in fake.calls] == ["record_improvement", "clear_signal"]
    assert fake.calls[0][1]["period"] == "2026-12" and fake.calls[0][1]["value"] == 1
    assert len(outbox.events) == 1 and outbox.events[0].startswith("cleared spc:fft_negative")


async def test_check_funnel_saves_the_funnel_then_raises_the_outlier(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"ods_code": r.ods_code, "negative": r.negative, "responses": r.responses,
             "feedback_ids": list(r.feedback_ids) or None, "source": r.source}
            for r in [*PEERS, HIGH, TINY]]
    fake = FakeStore(sorted(rows, key=lambda r: r["ods_code"]))
    monkeypatch.setattr(monitor_app, "store", fake)
    monitor = Monitor(RULES, clock=lambda: NOW)
    outbox = FakeOutbox()
    await monitor.check_funnel(Batch(None), "inpatient", "2026-12", outbox)  # type: ignore[arg-type]
    assert [name for name, _ in fake.calls] == ["save_funnel", "raise_signal"]
    assert fake.calls[0][1] == {"period": "2026-12", "providers": 7}
    raised = fake.calls[1][1]
    assert raised["signal"] == FUNNEL_SIGNAL and raised["signal_rule"] == FUNNEL_RULE
    assert raised["provider"].ods_code == "HIGH"
    assert outbox.events == [f"raised {FUNNEL_SIGNAL} on HIGH"]

    # Too few providers with enough responses: no funnel, nothing stored.
    fake.combined = fake.combined[:3]
    fake.calls.clear()
    await monitor.check_funnel(Batch(None), "inpatient", "2027-01", outbox)  # type: ignore[arg-type]
    assert fake.calls == []
