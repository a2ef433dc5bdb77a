"""FFT from individual responses through the real broker: 24 months of responses for ten
providers (one setting, maternity) are published to intake as provider feeds would; a
monthly return for one provider's month arrives too; the month closes.

Asserted: each provider's monthly series (both measures) equals a hand aggregation of the
published responses, with the return winning its month and a month of 3 responses
suppressed; and the concerns: exactly one, raised once, for the provider whose negative
answers jumped in the last month, carrying its three signals (SPC % negative up, SPC %
positive down, above the funnel's 99.8% limit).

ODS codes used here (maternity FFT) and by no other monitor test: RV5 RPG RAT RYJ R1K RV3
RJ6 RQM RPY RYX.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.quality_monitor.lifecycle import month_close_at
from services.quality_monitor.measures import load_fft_months
from services.quality_monitor.series import fft_month_series, month_of, month_start, shift_month
from shared.groupcommit import Batch
from shared.settings import Settings
from tests.helpers import eventually, publish_submission
from tests.integration import test_monitor as monitor_tests

pytestmark = pytest.mark.integration
stack = monitor_tests.stack  # the same stack: intake and quality-monitor, a driven clock

SETTING = "maternity"
CODES = ["RV5", "RPG", "RAT", "RYJ", "R1K", "RV3", "RJ6", "RQM", "RPY", "RYX"]
SIZES = [40, 10, 12, 14, 16, 10, 12, 14, 16, 20]  # responses a month
SHIFTED = "RV5"  # 2 or 3 poor of 40 a month, then 18 in the last month
SUPPRESSED = ("RPG", 5)  # this provider's 6th month has 3 responses only
RETURNED = ("RAT", 10)  # and this one's 11th month also comes as a monthly return
RETURN = {"very_good": 100, "good": 50, "neither_good_nor_poor": 10, "poor": 8,
          "very_poor": 2, "dont_know": 0}
MONTHS = 24


def answers(code: str, m: int) -> list[str]:
    """The month's answers of one provider: steady, alternating month to month."""
    i, n = CODES.index(code), SIZES[CODES.index(code)]
    if (code, m) == SUPPRESSED:
        return ["very_good", "very_good", "poor"]
    if code == SHIFTED:
        poor = 18 if m == MONTHS - 1 else 2 + m % 2
    else:
        poor = 1 + (m + i) % 2
    very_poor = poor // 3
    return (["poor"] * (poor - very_poor) + ["very_poor"] * very_poor
            + ["neither_good_nor_poor", "dont_know"]
            + ["very_good", "good"] * ((n - poor - 2) // 2) + ["very_good"] * ((n - poor) % 2))


def responses(months: list[str], last_day: int, run: str) -> list[dict[str, Any]]:
    out = []
    for code in CODES:
        for m, month in enumerate(months):
            days = last_day if m == len(months) - 1 else 28
            for j, answer in enumerate(answers(code, m)):
                out.append({"kind": "fft_response", "ods_code": code,
                            "record_id": f"R-{run}-{code}-{month}-{j}",
                            "responded_on": (month_start(month) + timedelta(
                                days=j % days)).isoformat(),
                            "setting": SETTING, "answer": answer,
                            "site_code": f"{code}01" if j % 3 else f"{code}02"})
    return out


def hand_series(bodies: list[dict[str, Any]], code: str, metric: str) -> tuple[list[str],
                                                                                 list[float]]:
    """The series worked out from the published bodies, not from the monitor's tables."""
    counts: dict[str, Counter[str]] = {}
    for b in bodies:
        if b["ods_code"] == code:
            counts.setdefault(b["responded_on"][:7], Counter())[b["answer"]] += 1
    if code == RETURNED[0]:
        counts[sorted(counts)[RETURNED[1]]] = Counter(RETURN)  # the return wins its month
    periods, values = [], []
    for period in sorted(counts):
        c = counts[period]
        total = sum(c.values())
        if 1 <= total <= 4:
            continue  # suppressed
        part = c["poor"] + c["very_poor"] if metric == "fft_negative" else \
            c["very_good"] + c["good"]
        periods.append(period)
        values.append(100 * part / total)
    return periods, values


async def test_24_months_of_responses_make_the_series_and_one_concern(
        stack: monitor_tests.Stack, settings: Settings, db: asyncpg.Pool,
        amqp: aio_pika.abc.AbstractConnection) -> None:
    run = uuid.uuid4().hex[:8]
    current = month_of(stack.today)
    months = [shift_month(current, k - MONTHS + 1) for k in range(MONTHS)]
    bodies = responses(months, stack.today.day, run)
    await monitor_tests.publish_all(amqp, settings, bodies)

    async def all_in() -> bool:
        return await db.fetchval(
            "SELECT count(*) FROM monitor.feedback WHERE ods_code = ANY($1)"
            " AND kind = 'fft_response'", CODES) >= len(bodies)

    await eventually(all_in, timeout=300, what=f"{len(bodies)} FFT responses in the monitor")
    code, m = RETURNED
    await publish_submission(amqp, settings.namespace, {
        "kind": "fft_monthly", "ods_code": code, "record_id": f"M-{run}", "period": months[m],
        "setting": SETTING, **RETURN})
    await eventually(lambda: db.fetchval(
        "SELECT true FROM monitor.fft_months WHERE ods_code = $1 AND period = $2", code,
        months[m]), what="the monthly return")

    # The month closes: the series of every provider with responses in it, then the funnel.
    stack.clock.now = month_close_at(current, 3) + timedelta(minutes=1)
    # Other modules of the session may have left responses of other providers in this month:
    # they are judged too, and counted.
    others = await db.fetchval(
        "SELECT count(DISTINCT (ods_code, content->>'setting')) FROM monitor.feedback"
        " WHERE kind = 'fft_response' AND occurred_on >= $1 AND occurred_on < $2"
        " AND NOT ods_code = ANY($3)", month_start(current),
        month_start(shift_month(current, 1)), CODES)
    result = await stack.monitor.close_month(stack.runtime.pool, current)
    assert result["fft_series"] == len(CODES) + others

    async with db.acquire() as conn:
        for c in CODES:
            found, behind = await load_fft_months(Batch(conn), c, SETTING, current)
            assert {m.source for m in found if m.period == months[RETURNED[1]]} == (
                {"return"} if c == RETURNED[0] else {"responses"})
            for metric in ("fft_negative", "fft_positive"):
                series = fft_month_series(found, metric, behind)
                periods, values = hand_series(bodies, c, metric)
                assert series.periods == periods, (c, metric)
                assert series.values == pytest.approx(values, abs=1e-9), (c, metric)
                assert len(periods) == MONTHS - (c == SUPPRESSED[0])

    async def raised() -> list[Any]:
        return [e for e in stack.concern_events(set(CODES), "concern.raised.v1")]

    await eventually(raised, timeout=30, what="the concern raised")
    await eventually(lambda: _settled(stack), timeout=30, what="its updates")
    events = await raised()
    assert [(e.data["provider"]["ods_code"], e.data["rule"], e.data["theme"]) for e in events] \
        == [(SHIFTED, "measure_signals", f"FFT: {SETTING}")], "one concern, raised once"
    rows = await db.fetch("SELECT * FROM monitor.concerns WHERE ods_code = ANY($1)", CODES)
    assert len(rows) == 1
    concern = rows[0]
    assert concern["status"] == "open" and concern["severity"] == "high"
    signals = concern["figures"]["signals"]
    assert set(signals) == {"spc:fft_negative", "spc:fft_positive", "funnel:fft_negative"}
    assert all(s["active"] for s in signals.values())
    assert signals["spc:fft_negative"]["figures"]["signals"] == [
        {"test": "beyond_limits", "direction": "up", "periods": [current]}]
    assert signals["spc:fft_positive"]["figures"]["signals"][0]["direction"] == "down"
    funnel = signals["funnel:fft_negative"]["figures"]
    assert funnel["providers"] == len(CODES) and funnel["band"] == "above_99.8"
    assert funnel["phi"] <= 1  # no overdispersion: FunnelPlotR's unadjusted limits
    # The evidence: the month's poor and very poor responses (up to 20), each once.
    ids = [e["feedback_id"] for e in concern["evidence"]]
    assert len(ids) == len(set(ids)) == 18
    assert {e["kind"] for e in concern["evidence"]} == {"fft_response"}


async def _settled(stack: monitor_tests.Stack) -> bool:
    events = stack.concern_events({SHIFTED})
    signals = events[-1].data["figures"].get("signals", {}) if events else {}
    return len(signals) == 3
