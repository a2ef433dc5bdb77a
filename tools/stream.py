"""A realistic stream of provider submissions, reproducible from a seed.

Providers come from the registry; every feedback kind appears at plausible volumes, with
seasonal pressure in winter. A few things are planted so that the outcome is known in
advance: serious risks (harm in a complaint, an extreme NPSA score, safeguarding), clusters,
an SPC shift in FFT, duplicates (the same provider record sent again) and bad records (which
must be quarantined). ``Expected`` says what a correct carewatch makes of the stream.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from shared.submissions import FFTAnswer, FFTSetting, KO41aSubject

Outcome = Literal["accept", "duplicate", "reject"]


@dataclass(frozen=True)
class Item:
    """One message to publish, and what intake should do with it."""

    body: dict[str, Any] | bytes
    expect: Outcome
    planted: str | None = None  # "serious", "cluster", "spc_shift", "bad", "duplicate"

    def raw(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()

    @property
    def kind(self) -> str:
        return self.body.get("kind", "unknown") if isinstance(self.body, dict) else "unknown"


@dataclass
class Expected:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    # (ods_code, theme) of each planted immediate serious risk: one concern each.
    serious: set[tuple[str, str]] = field(default_factory=set)

    def add(self, item: Item) -> None:
        if item.expect == "accept":
            self.accepted += 1
        elif item.expect == "duplicate":
            self.duplicates += 1
        else:
            self.rejected += 1


_ROUTINE = {
    KO41aSubject.APPOINTMENTS: ["My outpatient appointment was cancelled twice by letter.",
                                "The appointment letter arrived after the clinic date."],
    KO41aSubject.COMMUNICATIONS: ["Nobody explained the plan for my father's discharge.",
                                  "Phone calls to the ward went unanswered for a day."],
    KO41aSubject.WAITING_TIMES: ["We waited five hours in the emergency department.",
                                 "The wait for a follow-up scan has been eleven weeks."],
    KO41aSubject.FACILITIES: ["The toilets on the ward were not cleaned overnight.",
                              "Car parking charges were confusing and the machine broken."],
    KO41aSubject.VALUES_BEHAVIOURS: ["A receptionist was abrupt with my elderly mother.",
                                     "Staff talked over my daughter instead of to her."],
    KO41aSubject.ADMISSIONS_DISCHARGE: ["Discharge was delayed all day waiting for medicines.",
                                        "My husband was sent home at night without transport."],
}
_SERIOUS = [
    "My mother fell on the ward and suffered a fractured hip that was not diagnosed for two"
    " days.",
    "My father died after staff failed to escalate his deteriorating observations.",
    "She was left in soiled sheets for hours and became severely dehydrated.",
    "The operation was carried out on the wrong side: a never event.",
]
_FFT_POSITIVE = ["Staff were kind and explained everything.", "Quick, clean and friendly.",
                 "The nurses on the ward were wonderful.", None, None]
_FFT_NEGATIVE = ["Waited too long to be seen.", "Felt rushed and not listened to.",
                 "The ward was noisy at night.", None]
_SETTING_BY_TYPE = {
    "acute": [FFTSetting.INPATIENT, FFTSetting.A_AND_E, FFTSetting.OUTPATIENT,
              FFTSetting.MATERNITY],
    "mental_health": [FFTSetting.MENTAL_HEALTH, FFTSetting.COMMUNITY],
    "community": [FFTSetting.COMMUNITY],
    "ambulance": [FFTSetting.AMBULANCE],
    "specialist": [FFTSetting.INPATIENT, FFTSetting.OUTPATIENT],
}


def main_setting(provider: dict[str, str]) -> FFTSetting:
    """The FFT setting a provider's history is in (its planted changes too)."""
    return _SETTING_BY_TYPE.get(provider["provider_type"], [FFTSetting.COMMUNITY])[0]


def _winter(day: date) -> float:
    """Seasonal pressure: more activity and more complaints in winter."""
    return 1.3 if day.month in (12, 1, 2) else 1.1 if day.month in (3, 11) else 1.0


class StreamGenerator:
    def __init__(self, providers: list[dict[str, str]], *, seed: int = 7,
                 ods_codes: list[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.providers = [p for p in providers if not ods_codes or p["ods_code"] in ods_codes]
        if not self.providers:
            raise ValueError("no providers to generate for")
        self.expected = Expected()
        self._seq = 0
        self._accepted: list[dict[str, Any]] = []

    def _record_id(self, prefix: str, ods: str) -> str:
        self._seq += 1
        return f"{prefix}-{ods}-{self._seq:08d}"

    def _emit(self, item: Item, keep: bool = True) -> Item:
        """Count ``item`` in what is expected; ``keep``: an accepted item may be sent again
        as a duplicate (and so stays in memory)."""
        self.expected.add(item)
        if keep and item.expect == "accept" and isinstance(item.body, dict):
            self._accepted.append(item.body)
        return item

    # -- kinds ----------------------------------------------------------------------------
    def complaint(self, ods: str, day: date, serious: bool = False,
                  handled: bool = False) -> Item:
        """A complaint; ``handled``: acknowledged and answered on time, as most are (history
        months: otherwise every old complaint would be an overdue response)."""
        rng = self.rng
        if serious:
            text = rng.choice(_SERIOUS)
            subject = KO41aSubject.PATIENT_CARE if "soiled" in text else \
                KO41aSubject.CLINICAL_TREATMENT
            risk = {"consequence": 5, "likelihood": rng.choice([3, 4])}
            body = self._complaint(ods, day, subject, text, risk)
            self.expected.serious.add((ods, subject.value))
            return self._emit(Item(body, "accept", "serious"))
        subject = rng.choice(list(_ROUTINE))
        risk = {"consequence": rng.randint(1, 3), "likelihood": rng.randint(1, 3)}
        body = self._complaint(ods, day, subject, rng.choice(_ROUTINE[subject]), risk)
        if handled:
            body["acknowledged_on"] = min(day + timedelta(days=1), date.today()).isoformat()
            answered = day + timedelta(days=rng.randint(20, 90))
            if answered <= date.today():
                body["responded_on"] = answered.isoformat()
            else:
                body.pop("responded_on", None)
        return self._emit(Item(body, "accept"))

    def _complaint(self, ods: str, day: date, subject: KO41aSubject, text: str,
                   risk: dict[str, int]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "complaint", "version": 1, "ods_code": ods,
            "record_id": self._record_id("CMP", ods), "received_on": day.isoformat(),
            "subject_area": subject.value, "description": text, "risk": risk}
        if self.rng.random() < 0.8:
            body["acknowledged_on"] = min(day + timedelta(days=self.rng.choice([1, 2, 3, 6])),
                                          date.today()).isoformat()
        return body

    def fft_response(self, ods: str, day: date, setting: FFTSetting,
                     negative_rate: float, keep: bool = True) -> Item:
        rng = self.rng
        roll = rng.random()
        if roll < negative_rate:
            answer, comment = rng.choice([FFTAnswer.POOR, FFTAnswer.VERY_POOR]), \
                rng.choice(_FFT_NEGATIVE)
        elif roll < negative_rate + 0.04:
            answer, comment = rng.choice([FFTAnswer.NEITHER, FFTAnswer.DONT_KNOW]), None
        else:
            answer, comment = rng.choice([FFTAnswer.VERY_GOOD, FFTAnswer.VERY_GOOD,
                                          FFTAnswer.GOOD]), rng.choice(_FFT_POSITIVE)
        body: dict[str, Any] = {
            "kind": "fft_response", "version": 1, "ods_code": ods,
            "record_id": self._record_id("FFT", ods), "responded_on": day.isoformat(),
            "setting": setting.value, "answer": answer.value}
        if comment:
            body["comment"] = comment
        return self._emit(Item(body, "accept"), keep)

    def gp_alert(self, ods: str, day: date, theme: KO41aSubject, planted: str | None = None
                 ) -> Item:
        body = {"kind": "gp_alert", "version": 1, "ods_code": ods,
                "record_id": self._record_id("GPA", ods), "raised_on": day.isoformat(),
                "raised_by_practice": self.rng.choice(["F83004", "F85002", "E83010", "G85001"]),
                "theme_area": theme.value, "patient_safety": False,
                "description": "Discharge summary not received; medicines changes unclear."
                if theme == KO41aSubject.ADMISSIONS_DISCHARGE else
                "Referral acknowledged late; patient chased the practice twice."}
        return self._emit(Item(body, "accept", planted))

    def compliment(self, ods: str, day: date) -> Item:
        body = {"kind": "compliment", "version": 1, "ods_code": ods,
                "record_id": self._record_id("CPL", ods), "received_on": day.isoformat(),
                "service": self.rng.choice(["Maternity", "Ward 7", "Emergency department"]),
                "description": "Thank you to the whole team for their care and kindness."}
        return self._emit(Item(body, "accept"))

    def safeguarding(self, ods: str, day: date) -> Item:
        body = {"kind": "safeguarding_concern", "version": 1, "ods_code": ods,
                "record_id": self._record_id("SG", ods), "raised_on": day.isoformat(),
                "category": "neglect", "about": "adult",
                "description": "Concern raised by a relative about the care of a resident."}
        self.expected.serious.add((ods, "safeguarding: neglect"))
        return self._emit(Item(body, "accept", "serious"))

    def bad(self, ods: str, day: date) -> Item:
        rng = self.rng
        choice = rng.randrange(5)
        if choice == 0:
            body: dict[str, Any] | bytes = b"{not json"
        elif choice == 1:
            body = {"kind": "complaint", "version": 1, "ods_code": ods,
                    "record_id": self._record_id("BAD", ods), "received_on": "2031-01-01",
                    "subject_area": "Clinical treatment", "description": "future dated"}
        elif choice == 2:
            body = {"kind": "tweet", "ods_code": ods, "record_id": self._record_id("BAD", ods)}
        elif choice == 3:
            body = {"kind": "complaint", "version": 1, "ods_code": "ZZZ99",
                    "record_id": self._record_id("BAD", ods), "received_on": day.isoformat(),
                    "subject_area": "Clinical treatment", "description": "unknown provider"}
        else:
            body = {"kind": "fft_response", "version": 1, "ods_code": ods,
                    "record_id": self._record_id("BAD", ods), "responded_on": day.isoformat(),
                    "setting": "inpatient", "answer": "amazing"}
        return self._emit(Item(body, "reject", "bad"))

    def duplicate(self) -> Item | None:
        if not self._accepted:
            return None
        return self._emit(Item(self.rng.choice(self._accepted), "duplicate", "duplicate"))

    # -- the stream -------------------------------------------------------------------------
    def days(self, start: date, n_days: int, *, per_provider_per_day: float = 10.0,
             serious_every: int = 2_000, bad_rate: float = 0.01,
             duplicate_rate: float = 0.01) -> Iterator[Item]:
        """``n_days`` of feedback for every provider, in time order."""
        rng = self.rng
        n = 0
        for offset in range(n_days):
            day = start + timedelta(days=offset)
            if day > date.today():
                break
            for provider in self.providers:
                ods = provider["ods_code"]
                settings = _SETTING_BY_TYPE.get(provider["provider_type"], [FFTSetting.COMMUNITY])
                volume = max(1, int(rng.gauss(per_provider_per_day * _winter(day),
                                              per_provider_per_day / 5)))
                for _ in range(volume):
                    n += 1
                    roll = rng.random()
                    if n % serious_every == 0:
                        yield (self.safeguarding(ods, day) if rng.random() < 0.3
                               else self.complaint(ods, day, serious=True))
                    elif roll < bad_rate:
                        yield self.bad(ods, day)
                    elif roll < bad_rate + duplicate_rate and (dup := self.duplicate()):
                        yield dup
                    elif roll < 0.10:
                        yield self.complaint(ods, day)
                    elif roll < 0.13:
                        yield self.compliment(ods, day)
                    elif roll < 0.15:
                        yield self.gp_alert(ods, day, rng.choice(list(_ROUTINE)))
                    else:
                        yield self.fft_response(ods, day, rng.choice(settings), 0.05)

    # -- months of history (make demo) ------------------------------------------------------
    def history(self, months: list[str], *, fft_per_month: tuple[int, int] = (15, 45),
                returns_every: int = 6) -> Iterator[Item]:
        """``months`` (YYYY-MM, oldest first) of FFT, complaints and GP alerts for every
        provider, so that each has a monthly series to chart. Every ``returns_every``-th
        provider sends FFT as monthly returns (one per month and setting), the others as
        individual responses in their main setting. Planted, in the registry's order
        (:data:`PLANTED_HISTORY`): a spike in FFT negative answers in the last month, a
        sustained rise over the last 10 months, an improvement a year ago (a known change to
        rebase on), a spike of complaints and of GP alerts in the last month."""
        rng = self.rng
        for k, provider in enumerate(self.providers):
            ods = provider["ods_code"]
            setting = main_setting(provider)
            size = rng.randint(*fft_per_month)
            base = rng.uniform(0.03, 0.07)
            plant = PLANTED_HISTORY[k][0] if k < len(PLANTED_HISTORY) else None
            for m, month in enumerate(months):
                last = m == len(months) - 1
                rate = base
                if plant == "fft_spike" and last:
                    rate = 0.35
                elif plant == "fft_shift" and m >= len(months) - 10:
                    rate = base + 0.12
                elif plant == "fft_improved" and m < len(months) - 12:
                    rate = base + 0.08
                days = _days_of(month)
                if k % returns_every == returns_every - 1:
                    yield self._fft_return(ods, month, setting, size * 4, rate)
                else:
                    for _ in range(max(5, int(rng.gauss(size, size / 6)))):
                        yield self.fft_response(ods, rng.choice(days), setting, rate)
                complaints = 14 if plant == "complaints_spike" and last else _poisson(rng, 3)
                for _ in range(complaints):
                    yield self.complaint(ods, rng.choice(days), handled=True)
                alerts = 8 if plant == "gp_alerts_spike" and last else _poisson(rng, 1)
                for _ in range(alerts):
                    yield self.gp_alert(ods, rng.choice(days), rng.choice(list(_ROUTINE)))

    def _fft_return(self, ods: str, month: str, setting: FFTSetting, n: int,
                    negative_rate: float) -> Item:
        rng = self.rng
        negative = sum(rng.random() < negative_rate for _ in range(n))
        neutral = sum(rng.random() < 0.04 for _ in range(n - negative))
        positive = n - negative - neutral
        very_good = sum(rng.random() < 0.7 for _ in range(positive))
        body = {"kind": "fft_monthly", "version": 1, "ods_code": ods,
                "record_id": self._record_id("FFTM", ods), "period": month,
                "setting": setting.value, "very_good": very_good, "good": positive - very_good,
                "neither_good_nor_poor": neutral // 2, "dont_know": neutral - neutral // 2,
                "poor": negative - negative // 3, "very_poor": negative // 3}
        return self._emit(Item(body, "accept"))

    def fft_year(self, count: int, year: int) -> Iterator[Item]:
        """``count`` FFT responses over the days of ``year``, each from a provider of the
        registry at random in one of its settings (5% negative): a national FFT year in
        miniature. None is kept for duplicates, so millions of them stream in constant
        memory; record ids are distinct, so every one is accepted."""
        rng = self.rng
        first = date(year, 1, 1)
        days = [first + timedelta(days=d) for d in range((date(year + 1, 1, 1) - first).days)]
        for _ in range(count):
            provider = rng.choice(self.providers)
            settings = _SETTING_BY_TYPE.get(provider["provider_type"], [FFTSetting.COMMUNITY])
            yield self.fft_response(provider["ods_code"], rng.choice(days),
                                    rng.choice(settings), 0.05, keep=False)

    def take(self, count: int, start: date, **kwargs: Any) -> list[Item]:
        """Exactly ``count`` items (more days are generated as needed)."""
        items: list[Item] = []
        day = start
        while len(items) < count:
            for item in self.days(day, 30, **kwargs):
                items.append(item)
                if len(items) == count:
                    break
            day += timedelta(days=30)
            if day > date.today():
                day = start
        return items


# What :meth:`StreamGenerator.history` plants, by position in the provider registry.
PLANTED_HISTORY = [
    ("fft_spike", "FFT % negative jumps in the last month: SPC above the limit, a peer"
                  " outlier on the funnel, FFT % positive falls: one concern"),
    ("fft_shift", "FFT % negative 12 points higher for the last 10 months: a run above the"
                  " mean, a concern, and a proposed rebase"),
    ("fft_improved", "FFT % negative 8 points lower for the last 12 months (a known change:"
                     " record a rebase at its first month)"),
    ("complaints_spike", "14 complaints in the last month, about 3 usually"),
    ("gp_alerts_spike", "8 GP alerts in the last month, about 1 usually"),
]


def _days_of(month: str) -> list[date]:
    """The days of ``month`` up to today."""
    first = date(int(month[:4]), int(month[5:]), 1)
    days = [first + timedelta(days=d) for d in range(31)
            if (first + timedelta(days=d)).month == first.month]
    return [d for d in days if d <= date.today()] or [first]


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count (Knuth's method; the means here are small)."""
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def load_providers() -> list[dict[str, str]]:
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data" / "providers.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
