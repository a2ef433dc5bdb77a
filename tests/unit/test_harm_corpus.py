"""The immediate-risk free-text rule measured on a labelled corpus (tests/unit/harm_corpus.jsonl).

Labelling guide: a sentence is positive when it reports that the harm of its category happened
to a patient (an allegation or a presupposed death counts: "the death was expected"); negative
when the harm is denied, hypothetical, feared, prevented, a topic (training, policy, risk
assessment, rates), part of the patient's history, or an idiom ("died down"). A positive is
found only if the rule names its labelled category. The first 242 sentences were written
before the rules were improved; the last 40 were written after, as a held-out check (their
first measurement: precision 0.80, recall 0.80; the rules were then generalised).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from services.quality_monitor.rules import HARM_PATTERNS, harm_mentions

CORPUS = Path(__file__).parent / "harm_corpus.jsonl"
RECALL_FLOOR = 0.95
PRECISION_FLOOR = 0.90


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def test_corpus_is_large_labelled_and_covers_every_category() -> None:
    rows = load()
    assert len(rows) >= 200
    assert len({r["text"] for r in rows}) == len(rows), "duplicate sentences"
    for r in rows:
        assert set(r) == {"text", "harm", "category"}
        assert isinstance(r["harm"], bool)
        assert (r["category"] in HARM_PATTERNS) if r["harm"] else r["category"] is None
    per_category = Counter(r["category"] for r in rows if r["harm"])
    assert set(per_category) == set(HARM_PATTERNS)
    assert min(per_category.values()) >= 10
    assert sum(not r["harm"] for r in rows) >= 100


def test_precision_and_recall_on_the_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    tp = fp = fn = tn = 0
    misses: list[str] = []
    by_category: Counter[str] = Counter()
    found_by_category: Counter[str] = Counter()
    for r in load():
        categories = {c for c, _ in harm_mentions(r["text"])}
        if r["harm"]:
            by_category[r["category"]] += 1
            if r["category"] in categories:
                tp += 1
                found_by_category[r["category"]] += 1
            else:
                fn += 1
                misses.append(f"missed ({r['category']}): {r['text']}")
        elif categories:
            fp += 1
            misses.append(f"false alarm ({', '.join(sorted(categories))}): {r['text']}")
        else:
            tn += 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    with capsys.disabled():
        print(f"\nharm corpus: {tp + fp + fn + tn} sentences; tp {tp} fp {fp} fn {fn} tn {tn};"
              f" precision {precision:.3f}, recall {recall:.3f}")
        for category in HARM_PATTERNS:
            print(f"  {category}: {found_by_category[category]}/{by_category[category]}")
        for line in misses:
            print(f"  {line}")
    assert recall >= RECALL_FLOOR, misses
    assert precision >= PRECISION_FLOOR, misses


@pytest.mark.parametrize("text", [
    "Nobody was abused, but she was neglected.",
    "He did not receive his insulin and died.",
    "Staff did not notice he was dehydrated.",
])
def test_a_negation_does_not_reach_past_a_new_clause(text: str) -> None:
    assert harm_mentions(text)


@pytest.mark.parametrize("text", [
    "There was no evidence that she had been neglected.",
    "It was unclear whether he was abused.",
    "All staff completed safeguarding training on abuse and neglect.",
    "The allegation of abuse was not substantiated.",
    "The suicide prevention team reviewed his care plan.",
])
def test_a_strong_negation_a_hedge_or_a_topic_is_not_a_report(text: str) -> None:
    assert harm_mentions(text) == []
