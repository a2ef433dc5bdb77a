"""A realistic year (14 months) of feedback for seven providers, replayed in
tests/integration/test_monitor.py, and what quality-monitor must conclude from it.

Plain data, built relative to the day the tests run (intake refuses future dates). Every
number is fixed (no randomness), so the conclusions are the same in any order of handling:
``test_the_year_is_order_proof`` checks that with the pure rules.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from services.quality_monitor.config import load_rules
from services.quality_monitor.funnel import Band, Unit, funnel
from services.quality_monitor.series import counts_by_month, month_of, month_start, shift_month
from services.quality_monitor.spc import Direction, assess

SETTING = "day_case"
MONTHS = 14
# Letters are roles; the ODS codes are not used by the other test modules.
ODS = {"A": "RKE", "B": "RP6", "C": "RAN", "D": "R1H", "E": "RQX", "F": "RF4", "G": "RWK"}
NOISE = [0.3, -0.2, 0.5, -0.4, 0.1, -0.3, 0.4, -0.1, 0.2, -0.5, 0.0, 0.3, -0.2, 0.1]
BASE_NEGATIVE = {"A": 5.0, "B": 4.5, "C": 5.5, "D": 6.0, "E": 6.0, "F": 5.0, "G": 4.8}
# Complaints per month (background, any theme but Communications) for each provider.
COMPLAINTS = [4, 6, 3, 5, 4, 7, 5, 3, 6, 4, 5, 6, 4, 5]
GP_ALERTS = [1, 2, 0, 3, 1, 2, 1, 0, 2, 1, 3, 1, 2, 1]
BLAND = {
    "complaint": "The clinic letter arrived after the appointment date and the family had to"
                 " phone three times to rearrange it.",
    "gp_alert": "The practice received the clinic letter six weeks after the appointment.",
}
THEMES = ["Appointments", "Waiting times", "Facilities", "Trust admin, policies and procedures"]
GP_THEMES = ["Appointments", "Prescribing", "Waiting times"]

# What the replay must raise: (role, rule, theme, severity). Nothing else, once each.
EXPECTED = {
    # One concern per provider and measure family: A's SPC signal and peer outlier on its FFT
    # % negative (day case) are one concern, with the higher severity.
    ("A", "measure_signals", "FFT: day_case", "high"),
    ("B", "measure_signals", "complaints", "moderate"),
    ("C", "measure_signals", "GP alerts", "high"),
    ("D", "measure_signals", "complaints", "moderate"),
    ("F", "complaint_handling", "late acknowledgements", "low"),
    ("G", "immediate_serious_risk", "Clinical treatment", "serious"),
    ("G", "visit_rating", "visit: Ward 10", "high"),
    ("G", "service_change", "service change: Stroke rehabilitation", "moderate"),
}


def months(today: date) -> list[str]:
    current = month_of(today)
    return [shift_month(current, k - MONTHS + 1) for k in range(MONTHS)]


def day_in(month: str, day: int, today: date) -> date:
    d = month_start(month) + timedelta(days=min(day, 28) - 1)
    return min(d, today)


def fft_counts(role: str, k: int) -> dict[str, int]:
    """One provider's day-case FFT return for month index k (0 = oldest)."""
    i = "ABCDEFG".index(role)
    n = 380 + 20 * ((3 * k + 5 * i) % 7)
    negative = BASE_NEGATIVE[role] + NOISE[(k + 2 * i) % 14]
    if role == "A" and k == MONTHS - 1:
        negative = 12.0  # the spike: special cause, and above the funnel's 99.8% limit
    if role == "E" and k >= MONTHS - 7:
        negative = 3.5 + NOISE[(k + 2 * i) % 14] / 2  # seven months below the mean: improvement
    positive = 84 + 2 * NOISE[(k + 5 * i + 3) % 14]
    neg = round(n * negative / 100)
    pos = round(n * positive / 100)
    very_good = round(pos * 0.7)
    dont_know = 4
    return {"very_good": very_good, "good": pos - very_good,
            "neither_good_nor_poor": n - pos - neg - dont_know, "poor": neg - neg // 3,
            "very_poor": neg // 3, "dont_know": dont_know}


def _complaint(role: str, ref: str, received: date, today: date, theme: str, *,
               acknowledged: bool = True, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "complaint", "ods_code": ODS[role], "record_id": ref,
        "received_on": received.isoformat(), "subject_area": theme,
        "description": BLAND["complaint"]}
    if acknowledged:
        body["acknowledged_on"] = received.isoformat()
    if (today - received).days > 30:
        body["responded_on"] = (received + timedelta(days=30)).isoformat()
    return {**body, **extra}


def _gp_alert(role: str, ref: str, raised: date, theme: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "gp_alert", "ods_code": ODS[role], "record_id": ref,
            "raised_on": raised.isoformat(), "raised_by_practice": "F84001",
            "theme_area": theme, "patient_safety": False, "description": BLAND["gp_alert"],
            **extra}


def year_of_feedback(today: date, run: str) -> Iterator[dict[str, Any]]:
    """Every submission of the year; ``run`` keeps record ids unique per test session."""
    ms = months(today)
    for role in ODS:
        for k, month in enumerate(ms):
            yield {"kind": "fft_monthly", "ods_code": ODS[role], "site_code": f"{ODS[role]}01",
                   "record_id": f"FFT-{run}-{role}-{month}", "period": month, "setting": SETTING,
                   **fft_counts(role, k)}
            count = COMPLAINTS[(k + 3 * "ABCDEFG".index(role)) % MONTHS]
            if role == "B" and k == MONTHS - 1:
                count = 16  # the month that is special cause
            for j in range(count):
                late = role == "F" and k >= MONTHS - 3 and j % 2 == 0
                yield _complaint(role, f"C-{run}-{role}-{month}-{j}", day_in(month, 2 + 2 * j, today),
                                 today, THEMES[j % len(THEMES)], acknowledged=not late)
            for j in range(GP_ALERTS[(k + 5 * "ABCDEFG".index(role)) % MONTHS]):
                yield _gp_alert(role, f"G-{run}-{role}-{month}-{j}", day_in(month, 3 + 5 * j, today),
                                GP_THEMES[j % len(GP_THEMES)])
    # C: three GP alerts about discharge within 30 days, the latest this week.
    for j, ago in enumerate((2, 9, 20)):
        yield _gp_alert("C", f"G-{run}-C-discharge-{j}", today - timedelta(days=ago),
                        "Admissions, discharges and transfers", patient_safety=True)
    # D: five complaints about communication within 60 days.
    for j, ago in enumerate((1, 12, 25, 38, 50)):
        yield _complaint("D", f"C-{run}-D-comms-{j}", today - timedelta(days=ago), today,
                         "Communications")
    # G: a complaint rated 5 x 4, an inadequate Enter and View, a service change without a QIA.
    yield _complaint("G", f"C-{run}-G-serious", today - timedelta(days=3), today,
                     "Clinical treatment", risk={"consequence": 5, "likelihood": 4})
    yield {"kind": "insight_visit", "ods_code": ODS["G"], "record_id": f"V-{run}-G",
           "visit_type": "enter_and_view", "visited_on": (today - timedelta(days=8)).isoformat(),
           "service": "Ward 10", "rating": "inadequate",
           "findings": "Call bells were out of reach in four bays and the ward was short of two"
                       " nurses on the day shift."}
    yield {"kind": "service_change_notice", "ods_code": ODS["G"], "record_id": f"S-{run}-G",
           "notified_on": (today - timedelta(days=5)).isoformat(),
           "service": "Stroke rehabilitation", "change": "Beds move to the community hospital.",
           "effective_from": (today + timedelta(days=120)).isoformat(), "engagement_plan": True,
           "eia_done": True, "qia_done": False,
           "consultation_start": (today - timedelta(days=100)).isoformat(),
           "consultation_end": (today + timedelta(days=10)).isoformat(),
           "informed": ["patients", "healthwatch", "scrutiny"]}


# -- the year's design is order-proof (pure) ---------------------------------------------------

def test_the_year_is_order_proof() -> None:
    """However intake and the monitor interleave the year, the conclusions are the same: FFT
    series are judged on every complete prefix of 12 months or more, the funnel of every
    month on every set of 5 or more providers, and the counts once, at the month's close."""
    rules = load_rules()
    today = date(2026, 11, 22)
    ms = months(today)
    for role in ODS:
        counts = [fft_counts(role, k) for k in range(MONTHS)]
        assert all(v >= 0 for c in counts for v in c.values())
        neg = [100 * (c["poor"] + c["very_poor"]) / sum(c.values()) for c in counts]
        pos = [100 * (c["very_good"] + c["good"]) / sum(c.values()) for c in counts]
        for m in range(12, MONTHS + 1):
            vn = assess(neg[:m], Direction.UP, rules.spc.options)
            vp = assess(pos[:m], Direction.DOWN, rules.spc.options)
            assert vn is not None and vp is not None
            assert vp.concern == []
            assert bool(vn.concern) == (role == "A" and m == MONTHS), (role, m)
    for k in range(MONTHS):
        units = {r: Unit(r, c["poor"] + c["very_poor"], sum(c.values()))
                 for r in ODS for c in [fft_counts(r, k)]}
        for size in range(rules.funnel.min_providers, len(units) + 1):
            for subset in itertools.combinations(units, size):
                above = {p.key for p in funnel([units[r] for r in subset]).points
                         if p.band is Band.ABOVE_998}
                assert above <= ({"A"} if k == MONTHS - 1 else set()), (k, subset)
                if size == len(units) and k == MONTHS - 1:
                    assert above == {"A"}
    bodies = list(year_of_feedback(today, "check"))
    for kind in ("complaint", "gp_alert"):
        for role, ods in ODS.items():
            days = [date.fromisoformat(b.get("received_on") or b["raised_on"]) for b in bodies
                    if b["kind"] == kind and b["ods_code"] == ods]
            v = assess([float(x) for x in counts_by_month(days, ms[0], ms[-1])], Direction.UP,
                       rules.spc.options)
            assert v is not None
            assert bool(v.concern) == (kind == "complaint" and role == "B"), (kind, role)
