"""The regression corpus of the free-text harm rule (tests/unit/harm_corpus.jsonl), read by the
clinical-text pipeline that replaced the keyword rule.

This corpus was written for the keyword rule and tuned on (its first 242 sentences before,
its last 40 after the rules were improved); it stays as a regression set. Its labels differ
from the new corpus (tests/data/harm) where the new guide is stricter: an allegation, or a
missed diagnosis with no outcome, is *possible* (the quality team's review) there, positive
here. So: serious precision, and recall at either tier (the safety net), are held high;
serious-tier recall a little lower. The measured figures are in the README.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.quality_monitor.harm.pipeline import CATEGORIES
from tools.eval import evaluate, normalise_row

CORPUS = Path(__file__).parent / "harm_corpus.jsonl"
SERIOUS_PRECISION_FLOOR = 0.95
SERIOUS_RECALL_FLOOR = 0.90
EITHER_TIER_RECALL_FLOOR = 0.95


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def test_corpus_is_labelled_in_the_new_categories() -> None:
    rows = [normalise_row(r) for r in load()]
    assert len(rows) >= 200
    assert {r["category"] for r in rows if r["tier"] == "serious"} <= set(CATEGORIES)


def test_precision_and_recall_on_the_regression_corpus(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    report = evaluate(load())
    with capsys.disabled():
        print(f"\nregression corpus: {report.rows} sentences;"
              f" serious precision {report.serious.precision:.3f},"
              f" recall {report.serious.recall:.3f};"
              f" caught at either tier {report.serious_caught.recall:.3f}")
    assert report.serious.precision >= SERIOUS_PRECISION_FLOOR, report.false_alarms
    assert report.serious.recall >= SERIOUS_RECALL_FLOOR, report.misses
    assert report.serious_caught.recall >= EITHER_TIER_RECALL_FLOOR, report.misses
