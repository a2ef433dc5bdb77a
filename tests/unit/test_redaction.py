"""Redaction of personal data (services/intake/redaction.py), measured on a labelled corpus.

``redaction_corpus.jsonl`` holds one case a line: ``{"text", "expect", "note"}``, where
``expect`` counts the personal data truly in the text by label (zero counts omitted). The
labels are the truth, not what the implementation does: cases it gets wrong are listed in
``KNOWN_MISSES`` (strict xfail, so a fix shows up) and drag the corpus-wide figures down.
The NHS numbers in the corpus were generated once with their Modulus 11 check digit.

Run with ``-s`` to see the precision/recall table.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.intake.redaction import (
    DATE_OF_BIRTH,
    EMAIL,
    NHS_NUMBER,
    PHONE,
    POSTCODE,
    is_valid_nhs_number,
    redact,
)

LABELS = (NHS_NUMBER, PHONE, EMAIL, POSTCODE, DATE_OF_BIRTH)
CORPUS_FILE = Path(__file__).with_name("redaction_corpus.jsonl")
CORPUS: list[dict[str, Any]] = [
    json.loads(line) for line in CORPUS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
MIN_RECALL = 0.99
MIN_PRECISION = 0.95

# Realistic cases the implementation gets wrong today (text -> what goes wrong).
KNOWN_MISSES: dict[str, str] = {}


def _case_id(i: int, case: dict[str, Any]) -> str:
    return f"{i:03d}-{case['note']}"


def _params() -> list[Any]:
    params = []
    for i, case in enumerate(CORPUS):
        marks = []
        if case["text"] in KNOWN_MISSES:
            marks.append(pytest.mark.xfail(
                strict=True, reason=f"BUG: redaction - {KNOWN_MISSES[case['text']]}"))
        params.append(pytest.param(case, id=_case_id(i, case), marks=marks))
    return params


# -- the corpus itself -------------------------------------------------------------------------

def test_corpus_is_large_and_well_formed() -> None:
    assert len(CORPUS) >= 220
    texts = [c["text"] for c in CORPUS]
    assert len(set(texts)) == len(texts), "duplicate texts in the corpus"
    for case in CORPUS:
        assert set(case) == {"text", "expect", "note"}
        assert set(case["expect"]) <= set(LABELS), case
        assert all(isinstance(n, int) and n > 0 for n in case["expect"].values()), case
    totals = Counter(label for c in CORPUS for label, n in c["expect"].items() for _ in range(n))
    assert all(totals[label] >= 15 for label in LABELS), totals
    assert sum(1 for c in CORPUS if not c["expect"]) >= 60, "too few negative cases"
    assert set(KNOWN_MISSES) <= set(texts), "a known miss is no longer in the corpus"


# -- one test per case -------------------------------------------------------------------------

@pytest.mark.parametrize("case", _params())
def test_corpus_case(case: dict[str, Any]) -> None:
    result = redact(case["text"])
    assert dict(result.found) == case["expect"], result.text
    for label in LABELS:
        assert result.text.count(label) == case["expect"].get(label, 0), result.text
    assert result.changed == bool(case["expect"])


@pytest.mark.parametrize("case", [c for c in CORPUS if c["expect"]], ids=lambda c: c["note"])
def test_redacting_twice_finds_nothing_more(case: dict[str, Any]) -> None:
    once = redact(case["text"]).text
    again = redact(once)
    assert again.text == once
    assert not again.changed


# -- precision and recall over the corpus --------------------------------------------------------

@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def score_corpus() -> dict[str, Tally]:
    """Count-based scoring per label: a case expecting 2 and finding 1 is 1 TP and 1 FN."""
    tallies = {label: Tally() for label in LABELS}
    for case in CORPUS:
        found = redact(case["text"]).found
        for label in LABELS:
            expected, got = case["expect"].get(label, 0), found.get(label, 0)
            t = tallies[label]
            t.tp += min(expected, got)
            t.fp += max(0, got - expected)
            t.fn += max(0, expected - got)
            if expected != got:
                t.misses.append(f"expected {expected} got {got}: {case['text']}")
    return tallies


def table(tallies: dict[str, Tally]) -> str:
    overall = Tally(sum(t.tp for t in tallies.values()), sum(t.fp for t in tallies.values()),
                    sum(t.fn for t in tallies.values()))
    rows = [f"{'label':<16} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>8}"]
    for name, t in [*tallies.items(), ("overall", overall)]:
        rows.append(f"{name:<16} {t.tp:>4} {t.fp:>4} {t.fn:>4} {t.precision:>10.3f} {t.recall:>8.3f}")
    rows += [f"  {label} {m}" for label, t in tallies.items() for m in t.misses]
    return "\n".join(rows)


def test_precision_and_recall_over_the_corpus(record_property: Any) -> None:
    tallies = score_corpus()
    report = table(tallies)
    print(f"\nRedaction over {len(CORPUS)} cases\n{report}")
    record_property("redaction_table", report)
    tp = sum(t.tp for t in tallies.values())
    fp = sum(t.fp for t in tallies.values())
    fn = sum(t.fn for t in tallies.values())
    assert tp / (tp + fp) >= MIN_PRECISION, report
    assert tp / (tp + fn) >= MIN_RECALL, report


# -- focused behaviour ---------------------------------------------------------------------------

def test_labels_replace_the_data_and_keep_the_cue() -> None:
    r = redact("DOB: 12/03/1954, NHS number 943 476 5919, call 07700 900461 or "
               "jane.doe@example.com, postcode SW1A 1AA.")
    assert r.text == ("DOB: [DATE OF BIRTH], NHS number [NHS NUMBER], call [PHONE] or "
                      "[EMAIL], postcode [POSTCODE].")
    assert r.found == Counter({NHS_NUMBER: 1, PHONE: 1, EMAIL: 1, POSTCODE: 1, DATE_OF_BIRTH: 1})


def test_text_without_personal_data_is_unchanged() -> None:
    text = "Ward 7B, bed 12, 14:30, paracetamol 1g, £1,250.00, Datix 1234567890."
    r = redact(text)
    assert r.text == text
    assert not r.changed


@pytest.mark.parametrize("text", ["+44 7700 900019", "+44 (0)7700 900019", "+44 20 7946 0005",
                                  "+44-20-7946-0005"])
def test_international_phone_passing_modulus_11_is_a_phone(text: str) -> None:
    assert is_valid_nhs_number("7700900019") and is_valid_nhs_number("2079460005")
    r = redact(f"Call {text} today")
    assert r.text == "Call [PHONE] today"
    assert r.found == Counter({PHONE: 1})


# -- is_valid_nhs_number -------------------------------------------------------------------------

@pytest.mark.parametrize("digits", ["9434765919", "4010232137", "4000000020"])
def test_valid_nhs_numbers(digits: str) -> None:
    assert is_valid_nhs_number(digits)


@pytest.mark.parametrize("digits", [f"943476591{d}" for d in "012345678"])
def test_every_other_check_digit_is_invalid(digits: str) -> None:
    assert not is_valid_nhs_number(digits)


@pytest.mark.parametrize("last", list("0123456789"))
def test_check_digit_of_ten_is_never_valid(last: str) -> None:
    # 4*10 + 8*2 = 56; 56 % 11 = 1; 11 - 1 = 10.
    assert not is_valid_nhs_number("400000008" + last)


def test_check_digit_of_eleven_becomes_zero() -> None:
    # 4*10 + 2*2 = 44; 44 % 11 = 0; 11 - 0 = 11 -> 0.
    assert is_valid_nhs_number("4000000020")
    assert not is_valid_nhs_number("400000002" + "1")


@pytest.mark.parametrize("value", ["", "943476591", "94347659190", "943 476 5919", "943-476-5919",
                                   "943476591X", " 943476591", "9434765919 "])
def test_malformed_values_are_invalid(value: str) -> None:
    assert not is_valid_nhs_number(value)


def test_other_unicode_decimal_digits_are_checked_like_ascii() -> None:
    # re's \d matches any Unicode decimal digit, so redact() may pass these in.
    assert is_valid_nhs_number("９４３４７６５９１９")  # full-width 9434765919
    assert not is_valid_nhs_number("９４３４７６５９１８")


def test_superscript_digits_are_invalid_not_an_error() -> None:
    assert is_valid_nhs_number("²" * 10) is False
