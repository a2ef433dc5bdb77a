"""Redaction against deliberate evasions (issue 14): a test set written before the patterns
were tuned, and committed before them, so that its figures measure rather than flatter.

``redaction_evasions.jsonl`` has the corpus's format (``{"text", "expect", "note"}``):
NHS numbers with dots, slashes, zero-width characters or wide gaps; ``07700.900.461``;
``0044`` prefixes; ``[at]`` and spelled-out e-mails; "born in March 1938"; a date of birth
followed by an age with no cue word; postcodes with two spaces or full-width letters; and
hard negatives beside each. Cases the implementation still gets wrong are listed in
``KNOWN_MISSES`` (strict xfail) and count against the figures.

Run with ``-s`` to see the precision/recall table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.intake.redaction import redact
from tests.unit.test_redaction import LABELS, Tally, table

EVASIONS_FILE = Path(__file__).with_name("redaction_evasions.jsonl")
EVASIONS: list[dict[str, Any]] = [
    json.loads(line) for line in EVASIONS_FILE.read_text(encoding="utf-8").splitlines()
    if line.strip()]
MIN_RECALL = 0.95
MIN_PRECISION = 0.95

KNOWN_MISSES: dict[str, str] = {}


def _params() -> list[Any]:
    params = []
    for i, case in enumerate(EVASIONS):
        marks = []
        if case["text"] in KNOWN_MISSES:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[case["text"]]))
        params.append(pytest.param(case, id=f"{i:03d}-{case['note']}", marks=marks))
    return params


def test_evasion_set_is_well_formed() -> None:
    assert len(EVASIONS) >= 60
    texts = [c["text"] for c in EVASIONS]
    assert len(set(texts)) == len(texts)
    for case in EVASIONS:
        assert set(case) == {"text", "expect", "note"}
        assert set(case["expect"]) <= set(LABELS), case
    assert sum(1 for c in EVASIONS if not c["expect"]) >= 14, "too few hard negatives"
    assert set(KNOWN_MISSES) <= set(texts)


@pytest.mark.parametrize("case", _params())
def test_evasion_case(case: dict[str, Any]) -> None:
    result = redact(case["text"])
    assert dict(result.found) == case["expect"], result.text
    for label in LABELS:
        assert result.text.count(label) == case["expect"].get(label, 0), result.text
    if case["expect"]:
        again = redact(result.text)
        assert again.text == result.text and not again.changed


def score_evasions() -> dict[str, Tally]:
    tallies = {label: Tally() for label in LABELS}
    for case in EVASIONS:
        found = redact(case["text"]).found
        for label in LABELS:
            expected, got = case["expect"].get(label, 0), found.get(label, 0)
            t = tallies[label]
            t.tp += min(expected, got)
            t.fp += max(0, got - expected)
            t.fn += max(0, expected - got)
            if expected != got:
                t.misses.append(f"expected {expected} got {got}: {case['text']!r}")
    return tallies


def test_precision_and_recall_over_the_evasions(record_property: Any) -> None:
    tallies = score_evasions()
    report = table(tallies)
    print(f"\nRedaction over {len(EVASIONS)} evasion cases\n{report}")
    record_property("evasion_table", report)
    tp = sum(t.tp for t in tallies.values())
    fp = sum(t.fp for t in tallies.values())
    fn = sum(t.fn for t in tallies.values())
    assert tp / (tp + fp) >= MIN_PRECISION, report
    assert tp / (tp + fn) >= MIN_RECALL, report
