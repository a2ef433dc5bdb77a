"""quality-monitor's trend rules and concern lifecycle over the real broker and database.

A year of feedback for seven providers (tests/integration/test_monitor_year.py) is published to
intake as provider feeds would, intake and quality-monitor run in this process, and the
monitor's clock is driven by the test (no waiting for real time).

ODS codes used here and nowhere else in the tests: RKE RP6 RAN R1H RQX RF4 RWK (the year),
RAS (the burst with three replicas), RAX (the SPC lifecycle, setting outpatient).
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.catalogue import builder
from services.quality_monitor.app import Monitor, build_monitor
from services.quality_monitor.config import load_rules
from services.quality_monitor.lifecycle import LONDON, month_close_at
from services.quality_monitor.series import month_of
from shared.envelope import CONTENT_TYPE, Envelope
from shared.events import ConcernClosed, ProviderRef
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import eventually, publish_submission
from tests.integration import test_monitor_year as year

pytestmark = pytest.mark.integration


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Stack:
    intake: ServiceRuntime
    runtime: ServiceRuntime
    monitor: Monitor
    clock: FakeClock
    events: list[Envelope]
    today: date

    def concern_events(self, ods_codes: set[str], kind: str | None = None) -> list[Envelope]:
        return [e for e in self.events if e.data["provider"]["ods_code"] in ods_codes
                and (kind is None or e.type == kind)]


async def capture_concern_events(amqp: aio_pika.abc.AbstractConnection, settings: Settings,
                                 into: list[Envelope]) -> aio_pika.abc.AbstractChannel:
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(f"{settings.namespace}.events", routing_key="concern.#")

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            into.append(Envelope.from_bytes(message.body))

    await queue.consume(keep)
    return channel


async def purge_downstream(amqp: aio_pika.abc.AbstractConnection, settings: Settings) -> None:
    """Leave no concerns of ours queued for escalation and notification (they do not run
    here): a later module's pipeline would otherwise book meetings and send mail for them."""
    channel = await amqp.channel()
    for service in ("escalation", "notification"):
        for event_type in ("concern.raised.v1", "concern.updated.v2", "concern.updated.v1",
                           "concern.resolved.v1"):
            try:
                queue = await channel.declare_queue(
                    f"{settings.namespace}.{service}.{event_type}", passive=True)
                await queue.purge()
            except aio_pika.exceptions.ChannelClosed:
                channel = await amqp.channel()
    await channel.close()


async def purge_monitor_inputs(amqp: aio_pika.abc.AbstractConnection,
                               settings: Settings) -> None:
    """Start from empty queues: what earlier modules of the session published while no
    quality-monitor ran (thousands of accepted items from intake's bursts) is not this
    scenario's, and handling it first made one concern's evidence grow for minutes."""
    channel = await amqp.channel()
    for name in ("feedback.accepted.v1", "feedback.accepted.v1.urgent", "concern.closed.v1"):
        try:
            queue = await channel.declare_queue(
                f"{settings.namespace}.quality_monitor.{name}", passive=True)
            await queue.purge()
        except aio_pika.exceptions.ChannelClosed:  # not declared yet: nothing waits
            channel = await amqp.channel()
    await channel.close()


@pytest.fixture(scope="module")
async def stack(settings: Settings, amqp: aio_pika.abc.AbstractConnection,
                db: asyncpg.Pool) -> AsyncIterator[Stack]:
    # The scenario runs on a virtual day, the 22nd of last month: where the day falls in its
    # month decides how far the month close lies ahead, and so which clusters have passed
    # by then. Its data is dated from that day; the monitor's clock starts there too.
    today = (datetime.now(LONDON).date().replace(day=1) - timedelta(days=1)).replace(day=22)
    clock = FakeClock(datetime.combine(today, time(12), LONDON))
    rules = load_rules().model_copy(update={"schedule": load_rules().schedule.model_copy(
        update={"poll_seconds": 3600})})  # the test drives the schedule
    intake = builder("intake")(settings)
    runtime, monitor = build_monitor(settings, clock, rules)
    events: list[Envelope] = []
    channel = await capture_concern_events(amqp, settings, events)
    await purge_monitor_inputs(amqp, settings)
    # The schedule is the test's: a monitor of an earlier module, on the real clock, may have
    # closed last month already and set the next close weeks past the virtual day.
    await db.execute("DO $$ BEGIN IF to_regclass('monitor.schedule') IS NOT NULL THEN"
                     " DELETE FROM monitor.schedule; END IF; END $$")
    await intake.start()
    await runtime.start()
    yield Stack(intake, runtime, monitor, clock, events, today)
    await runtime.stop()
    await intake.stop()
    await channel.close()
    await purge_downstream(amqp, settings)


async def publish_all(amqp: aio_pika.abc.AbstractConnection, settings: Settings,
                      bodies: list[dict[str, Any]]) -> None:
    for start in range(0, len(bodies), 50):
        await asyncio.gather(*(publish_submission(amqp, settings.namespace, b)
                               for b in bodies[start:start + 50]))


async def monitor_has(db: asyncpg.Pool, ods_codes: list[str], n: int) -> bool:
    return await db.fetchval("SELECT count(*) FROM monitor.feedback WHERE ods_code = ANY($1)",
                             ods_codes) >= n


def open_concerns_query() -> str:
    return ("SELECT * FROM monitor.concerns WHERE ods_code = ANY($1) AND status = 'open'"
            " ORDER BY ods_code, rule, theme")


# -- the year through the real broker ----------------------------------------------------------

@pytest.fixture(scope="module")
async def replayed(stack: Stack, settings: Settings, db: asyncpg.Pool,
                   amqp: aio_pika.abc.AbstractConnection) -> list[dict[str, Any]]:
    bodies = list(year.year_of_feedback(stack.today, uuid.uuid4().hex[:8]))
    await publish_all(amqp, settings, bodies)
    await eventually(lambda: monitor_has(db, list(year.ODS.values()), len(bodies)),
                     timeout=180, what=f"all {len(bodies)} items in monitor.feedback")
    # The month closes: complaints and GP alerts per month and complaint handling are counted.
    current = month_of(stack.today)
    stack.clock.now = month_close_at(current, 3) + timedelta(minutes=1)
    await stack.monitor.run_due_jobs(stack.runtime.pool)
    return bodies


async def test_a_year_raises_exactly_the_expected_concerns_once_each(
        stack: Stack, replayed: list[dict[str, Any]], db: asyncpg.Pool) -> None:
    ods = {v: k for k, v in year.ODS.items()}
    expected = {(year.ODS[r], rule, theme, sev) for r, rule, theme, sev in year.EXPECTED}

    async def all_raised() -> bool:
        raised = {(e.data["provider"]["ods_code"], e.data["rule"], e.data["theme"])
                  for e in stack.concern_events(set(ods), "concern.raised.v1")}
        return raised >= {x[:3] for x in expected}

    try:
        await eventually(all_raised, timeout=30, what="every expected concern.raised event")
    except AssertionError as exc:  # say which, and what the monitor holds
        seen = {(e.data["provider"]["ods_code"], e.data["rule"], e.data["theme"])
                for e in stack.concern_events(set(ods), "concern.raised.v1")}
        held = [tuple(r[k] for k in ("ods_code", "rule", "theme", "severity")) for r in
                await db.fetch(open_concerns_query(), list(ods))]
        raise AssertionError(f"{exc}: missing {sorted({x[:3] for x in expected} - seen)};"
                             f" open in monitor.concerns: {held}") from None
    rows = await db.fetch(open_concerns_query(), list(ods))
    assert {(r["ods_code"], r["rule"], r["theme"], r["severity"]) for r in rows} == expected
    await asyncio.sleep(1)  # anything more would have been published by now
    raised = [(e.data["provider"]["ods_code"], e.data["rule"], e.data["theme"])
              for e in stack.concern_events(set(ods), "concern.raised.v1")]
    assert sorted(raised) == sorted((o, rule, t) for o, rule, t, _ in expected), \
        "each concern raised exactly once"
    assert stack.concern_events(set(ods), "concern.resolved.v1") == []

    by_key = {(ods[r["ods_code"]], r["rule"]): r for r in rows}
    a = by_key[("A", "measure_signals")]
    assert set(a["figures"]["signals"]) == {"spc:fft_negative", "funnel:fft_negative"}
    spike = a["figures"]["signals"]["spc:fft_negative"]
    assert spike["rule"] == "spc_special_cause" and spike["active"]
    assert spike["figures"]["signals"] == [{"test": "beyond_limits", "direction": "up",
                                           "periods": [month_of(stack.today)]}]
    assert spike["figures"]["points"] == year.MONTHS
    assert [e["kind"] for e in a["evidence"]] == ["fft_monthly"]  # one return, both signals
    outlier = a["figures"]["signals"]["funnel:fft_negative"]["figures"]
    assert outlier["providers"] >= 7 and outlier["band"] == "above_99.8"
    assert outlier["proportion"] > outlier["upper_998"]
    complaints = by_key[("B", "measure_signals")]["figures"]["signals"]["spc:complaints"]
    assert complaints["figures"]["value"] == 16 and complaints["figures"]["metric"] == "complaints"
    assert len(by_key[("B", "measure_signals")]["evidence"]) == 16
    discharge = by_key[("C", "measure_signals")]
    signal = discharge["figures"]["signals"]["cluster:gp_alerts_discharge"]["figures"]
    assert signal["count"] == 3 and signal["window_days"] == 30
    assert len(discharge["evidence"]) == 3
    comms = by_key[("D", "measure_signals")]
    assert comms["figures"]["signals"]["cluster:complaints_communication"]["figures"][
        "count"] == 5 and len(comms["evidence"]) == 5
    late = by_key[("F", "complaint_handling")]
    assert late["figures"]["late"] == len(late["evidence"]) > 0
    assert late["figures"]["share"] >= 0.2
    improvements = await db.fetch(
        "SELECT * FROM monitor.improvements WHERE ods_code = $1", year.ODS["E"])
    assert (month_of(stack.today), "fft_negative") in {(r["period"], r["metric"])
                                                      for r in improvements}


async def test_a_concern_closed_by_escalation_is_resolved_and_announced(
        stack: Stack, replayed: list[dict[str, Any]], db: asyncpg.Pool,
        settings: Settings, amqp: aio_pika.abc.AbstractConnection) -> None:
    g = year.ODS["G"]
    row = await eventually(lambda: db.fetchrow(
        "SELECT * FROM monitor.concerns WHERE ods_code = $1 AND rule = 'immediate_serious_risk'"
        " AND status = 'open'", g))
    closed = ConcernClosed(concern_id=row["concern_id"],
                           provider=ProviderRef.model_validate(row["provider"]),
                           closed_by="quality.lead@icb.example.nhs.uk",
                           reason="Actions complete and assured at CQRM",
                           closed_at=datetime.now(UTC))
    envelope = closed.envelope("carewatch/escalation")
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{settings.namespace}.events")
    for _ in range(2):  # delivered twice: handled once
        await exchange.publish(aio_pika.Message(envelope.to_bytes(), message_id=str(envelope.id), user_id="guest",
                                                content_type=CONTENT_TYPE),
                               routing_key=closed.event_type, mandatory=True)
    await channel.close()
    resolved = await eventually(lambda: db.fetchrow(
        "SELECT * FROM monitor.concerns WHERE concern_id = $1 AND status = 'resolved'",
        row["concern_id"]), what="concern resolved")
    assert "closed by escalation" in resolved["resolution"]
    await eventually(lambda: _resolved_events(stack, row["concern_id"]), what="concern.resolved")
    await asyncio.sleep(0.5)
    assert len(await _resolved_events(stack, row["concern_id"])) == 1


async def _resolved_events(stack: Stack, concern_id: uuid.UUID) -> list[Envelope]:
    return [e for e in stack.events if e.type == "concern.resolved.v1"
            and e.data["concern_id"] == str(concern_id)]


async def test_a_cluster_resolves_when_its_window_passes(
        stack: Stack, replayed: list[dict[str, Any]], db: asyncpg.Pool) -> None:
    c = year.ODS["C"]
    row = await db.fetchrow("SELECT * FROM monitor.concerns WHERE ods_code = $1 AND"
                            " rule = 'measure_signals' AND theme = 'GP alerts'"
                            " AND status = 'open'", c)
    last = max(date.fromisoformat(e["occurred_on"]) for e in row["evidence"])
    # 29 days after the last alert the window has not passed ...
    stack.clock.now = datetime.combine(last + timedelta(days=29), datetime.min.time(),
                                       LONDON) + timedelta(hours=7)
    await stack.monitor.run_due_jobs(stack.runtime.pool)
    assert await db.fetchval("SELECT status FROM monitor.concerns WHERE concern_id = $1",
                             row["concern_id"]) == "open"
    # ... 30 days after it, it has, with no discharge alert since: resolved at the daily review.
    stack.clock.now += timedelta(days=1)
    assert "daily_review" in await stack.monitor.run_due_jobs(stack.runtime.pool)
    resolved = await db.fetchrow("SELECT * FROM monitor.concerns WHERE concern_id = $1",
                                 row["concern_id"])
    assert resolved["status"] == "resolved"
    assert resolved["resolution"].startswith("window passed: 0 Admissions")
    await eventually(lambda: _resolved_events(stack, row["concern_id"]), what="concern.resolved")
    # The D cluster (60-day window) is still open.
    assert await db.fetchval("SELECT count(*) FROM monitor.concerns WHERE ods_code = $1 AND"
                             " rule = 'measure_signals' AND status = 'open'", year.ODS["D"]) == 1


# -- an SPC concern raised and resolved as the months arrive ------------------------------------

async def test_an_spc_concern_resolves_after_three_common_cause_months(
        stack: Stack, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    ods, run = "RAX", uuid.uuid4().hex[:8]
    ms = [year.shift_month(month_of(stack.today), k - 14) for k in range(15)]
    negatives = [20, 22, 19, 21, 20, 23, 18, 21, 20, 22, 19, 60, 21, 20, 22]  # of 400
    for k, (month, neg) in enumerate(zip(ms, negatives, strict=True)):
        await publish_submission(amqp, settings.namespace, {
            "kind": "fft_monthly", "ods_code": ods, "record_id": f"FFT-{run}-{month}",
            "period": month, "setting": "outpatient", "very_good": 250, "good": 100,
            "neither_good_nor_poor": 50 - neg + 20, "poor": neg, "very_poor": 0,
            "dont_know": 0})
        await eventually(functools.partial(_fft_month_in, db, ods, month), what=f"FFT {month}")
        if k == 11:
            raised = await eventually(lambda: db.fetchrow(
                "SELECT * FROM monitor.concerns WHERE ods_code = $1 AND status = 'open'"
                " AND rule = 'measure_signals'", ods), what="special cause raised")
            assert raised["theme"] == "FFT: outpatient"
            assert raised["figures"]["signals"]["spc:fft_negative"]["figures"]["points"] == 12
    row = await db.fetchrow("SELECT * FROM monitor.concerns WHERE ods_code = $1"
                            " AND rule = 'measure_signals'", ods)
    assert row["status"] == "resolved"
    assert row["resolution"].startswith("signal returned to common cause: no special cause of"
                                        " concern in the latest 3 months")
    await eventually(lambda: _resolved_events(stack, row["concern_id"]), what="concern.resolved")


async def _fft_month_in(db: asyncpg.Pool, ods: str, month: str) -> bool:
    return bool(await db.fetchval(
        "SELECT true FROM monitor.fft_months WHERE ods_code = $1 AND period = $2", ods, month))


# -- replicas ---------------------------------------------------------------------------------

async def test_three_replicas_on_a_burst_raise_each_concern_once(
        stack: Stack, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    ods, run = "RAS", uuid.uuid4().hex[:8]
    others = [build_monitor(settings)[0] for _ in range(2)]
    for r in others:
        await r.start()
    try:
        today = stack.today
        bodies: list[dict[str, Any]] = []
        for j in range(12):
            bodies.append({"kind": "gp_alert", "ods_code": ods, "record_id": f"B-{run}-d{j}",
                           "raised_on": (today - timedelta(days=j % 10)).isoformat(),
                           "raised_by_practice": "F84002",
                           "theme_area": "Admissions, discharges and transfers",
                           "patient_safety": True, "description": year.BLAND["gp_alert"]})
        for j in range(6):
            bodies.append({"kind": "complaint", "ods_code": ods, "record_id": f"B-{run}-c{j}",
                           "received_on": (today - timedelta(days=j)).isoformat(),
                           "subject_area": "Clinical treatment",
                           "description": year.BLAND["complaint"],
                           "acknowledged_on": (today - timedelta(days=j)).isoformat(),
                           "risk": {"consequence": 5, "likelihood": 5}})
        await asyncio.gather(*(publish_submission(amqp, settings.namespace, b) for b in bodies))
        await eventually(lambda: monitor_has(db, [ods], len(bodies)), timeout=60,
                         what="burst handled")
        expected = {("measure_signals", "GP alerts"),
                    ("immediate_serious_risk", "Clinical treatment")}

        async def settled() -> bool:
            raised = {(e.data["rule"], e.data["theme"])
                      for e in stack.concern_events({ods}, "concern.raised.v1")}
            return raised >= expected

        await eventually(settled, timeout=30, what="both concerns raised")
        await asyncio.sleep(1)
        rows = await db.fetch("SELECT rule, theme, status, jsonb_array_length(evidence) AS n"
                              " FROM monitor.concerns WHERE ods_code = $1", ods)
        assert sorted((r["rule"], r["theme"], r["status"]) for r in rows) == sorted(
            (rule, theme, "open") for rule, theme in expected)
        assert {(r["rule"], r["n"]) for r in rows} == {("measure_signals", 12),
                                                      ("immediate_serious_risk", 6)}
        raised = [(e.data["rule"], e.data["theme"])
                  for e in stack.concern_events({ods}, "concern.raised.v1")]
        assert sorted(raised) == sorted(expected), "one concern.raised per fingerprint"
        # GP alerts and complaints travel in the urgent lane: its queue shared the burst.
        handled = [r.metrics.messages.labels(
            "quality_monitor",
            f"{settings.namespace}.quality_monitor.feedback.accepted.v1.urgent",
            "handled")._value.get() for r in [stack.runtime, *others]]
        assert sum(1 for h in handled if h > 0) >= 2, f"work was shared: {handled}"
    finally:
        for r in others:
            await r.stop()


# -- outputs for people ------------------------------------------------------------------------

async def test_charts_are_drawn_from_the_monitors_tables(
        stack: Stack, replayed: list[dict[str, Any]], settings: Settings, tmp_path: Any) -> None:
    from tests.helpers import carewatch

    spc_png = tmp_path / "spc.png"
    code, out = await carewatch(settings, "charts", "spc", "--provider", year.ODS["A"],
                                "--metric", "fft_negative", "--setting", year.SETTING,
                                "--out", str(spc_png))
    assert code == 0, out
    assert spc_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    funnel_png = tmp_path / "funnel.png"
    code, out = await carewatch(settings, "charts", "funnel", "--setting", year.SETTING,
                                "--period", month_of(stack.today), "--out", str(funnel_png))
    assert code == 0, out
    assert funnel_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out = await carewatch(settings, "charts", "spc", "--provider", year.ODS["B"],
                                "--metric", "complaints", "--until", month_of(stack.today),
                                "--json")
    assert code == 0, out
    chart = json.loads(out)
    assert chart["verdict"]["concern"] and len(chart["points"]) >= 12
