"""Measure the clinical-text harm pipeline on the labelled corpus (tests/data/harm).

    python -m tools.eval            # the test set (the figures the team reports)
    python -m tools.eval --dev      # the development sentences (dev.jsonl, dev_extra.jsonl and
                                    # the later passes dev_pass*.jsonl but the held-out
                                    # dev_pass17.jsonl, dev_pass20.jsonl,
                                    # dev_pass26.jsonl, dev_pass31.jsonl and
                                    # dev_pass35.jsonl: the ones rules are tuned on)
    python -m tools.eval --corpus tests/unit/harm_corpus.jsonl   # any JSONL of the same form
    python -m tools.eval --rules-only   # without the model's second opinion (harm/model.py)

Prints precision, recall and F1 by tier and by category, then every miss and false alarm.

- Serious tier: a sentence labelled ``serious`` is found when the pipeline gives it a serious
  mention (of any category); a false alarm is a serious mention on a sentence labelled
  ``possible`` or ``none``.
- Serious or possible: a sentence labelled ``serious`` or ``possible`` is found when the
  pipeline gives it any mention; a false alarm is a mention on a sentence labelled ``none``.
  "serious caught at either tier" is the share of serious sentences the pipeline flags at all
  (the safety net: a possible one reaches the quality team's review).
- By category: a labelled sentence is found when the pipeline names its category (any tier);
  a false alarm is a mention of the category on a sentence labelled ``none``. A positive
  sentence may name other categories too ("missed sepsis ... died": death and missed
  diagnosis); those are counted apart as "other categories named".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "harm"
TEST_SET = CORPUS / "test.jsonl"
DEV_SET = CORPUS / "dev.jsonl"
# the later development passes, written after the split (tests/data/harm/README.md)
DEV_EXTRA = CORPUS / "dev_extra.jsonl"


# held out: measured alone (--corpus), never tuned on, so not among the development sentences
# that --dev measures and the unit tests hold to their targets (tests/data/harm/README.md)
HELD_OUT_PASSES = ("dev_pass17.jsonl", "dev_pass20.jsonl", "dev_pass26.jsonl",
                   "dev_pass31.jsonl", "dev_pass35.jsonl")


def dev_passes() -> list[Path]:
    """The later development passes, one file each (pass 11 on: dev_pass11.jsonl, ...),
    without the held-out ones."""
    return sorted(path for path in CORPUS.glob("dev_pass*.jsonl")
                  if path.name not in HELD_OUT_PASSES)

TARGETS = {"serious_recall": 0.95, "serious_precision": 0.90, "any_recall": 0.98}


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def line(self, name: str) -> str:
        return (f"  {name:<28} precision {self.precision:6.3f}  recall {self.recall:6.3f}"
                f"  F1 {self.f1:6.3f}   (tp {self.tp}, fp {self.fp}, fn {self.fn})")


@dataclass
class Report:
    rows: int = 0
    serious: Score = field(default_factory=Score)
    any_tier: Score = field(default_factory=Score)
    serious_caught: Score = field(default_factory=Score)
    # sentences whose strongest mention is possible (the quality team's review queue): a true
    # one is labelled serious or possible; recall is not counted
    possible_only: Score = field(default_factory=Score)
    categories: dict[str, Score] = field(default_factory=dict)
    other_categories: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    def passes(self) -> dict[str, bool]:
        return {"serious_recall": self.serious.recall >= TARGETS["serious_recall"],
                "serious_precision": self.serious.precision >= TARGETS["serious_precision"],
                "any_recall": self.serious_caught.recall >= TARGETS["any_recall"]}


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """The corpus form (text, tier, category, context); the older regression corpus
    (tests/unit/harm_corpus.jsonl: text, harm, category) is read as serious/none."""
    if "tier" in row:
        return row
    old = {"serious harm": "severe_harm", "missed diagnosis with harm": "missed_diagnosis",
           "never event": "never_event", "self-harm": "self_harm"}
    category = row.get("category")
    return {"text": row["text"], "tier": "serious" if row["harm"] else "none",
            "category": old.get(category, category) if category else None,
            "context": "affirmed" if row["harm"] else "unlabelled"}


def evaluate(rows: list[dict[str, Any]], rules_only: bool = False) -> Report:
    from services.quality_monitor.harm.pipeline import POSSIBLE, SERIOUS, Analyser, mentions

    if rules_only:
        mentions = Analyser(model=False).mentions
    report = Report(rows=len(rows))
    for raw in rows:
        row = normalise_row(raw)
        found = mentions(row["text"])
        tiers = {m.tier for m in found}
        named = {m.category for m in found}
        label, category = row["tier"], row.get("category")
        said = "; ".join(f"{m.category}/{m.tier} \"{m.phrase}\" [{m.context}]" for m in found)
        where = f"[{label} {category or '-'}, {row.get('context', '')}] {row['text']}"
        # serious tier
        if label == SERIOUS:
            if SERIOUS in tiers:
                report.serious.tp += 1
            else:
                report.serious.fn += 1
                report.misses.append(f"serious not found ({said or 'nothing'}): {where}")
            if found:
                report.serious_caught.tp += 1
            else:
                report.serious_caught.fn += 1
        elif SERIOUS in tiers:
            report.serious.fp += 1
            report.false_alarms.append(f"serious ({said}): {where}")
        # serious or possible
        if label in (SERIOUS, POSSIBLE):
            if found:
                report.any_tier.tp += 1
            else:
                report.any_tier.fn += 1
                if label == POSSIBLE:
                    report.misses.append(f"possible not found: {where}")
        elif found:
            report.any_tier.fp += 1
            if SERIOUS not in tiers:
                report.false_alarms.append(f"possible ({said}): {where}")
        # the possible tier alone
        if found and SERIOUS not in tiers:
            if label in (SERIOUS, POSSIBLE):
                report.possible_only.tp += 1
            else:
                report.possible_only.fp += 1
        # by category
        if label in (SERIOUS, POSSIBLE) and category:
            score = report.categories.setdefault(category, Score())
            if category in named:
                score.tp += 1
                report.other_categories += len(named - {category}) > 0
            else:
                score.fn += 1
                if found:
                    report.misses.append(f"category {category} not named ({said}): {where}")
        elif label not in (SERIOUS, POSSIBLE):
            for name in named:
                report.categories.setdefault(name, Score()).fp += 1
    return report


def print_report(report: Report, name: str, paths: list[Path], out: Any = sys.stdout) -> None:
    files = ", ".join(
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
        f" (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}...)" for path in paths)
    print(f"harm pipeline on {name}: {report.rows} sentences in {files}", file=out)
    print("by tier:", file=out)
    print(report.serious.line("serious"), file=out)
    print(report.any_tier.line("serious or possible"), file=out)
    print(f"  {'serious caught at either tier':<28} recall {report.serious_caught.recall:6.3f}"
          f"   (found {report.serious_caught.tp} of"
          f" {report.serious_caught.tp + report.serious_caught.fn})", file=out)
    print(f"  {'possible tier (for review)':<28} precision {report.possible_only.precision:6.3f}"
          f"   (raised {report.possible_only.tp + report.possible_only.fp}:"
          f" {report.possible_only.tp} labelled serious or possible,"
          f" {report.possible_only.fp} none)", file=out)
    print("by category (any tier):", file=out)
    for category in sorted(report.categories):
        print(report.categories[category].line(category), file=out)
    print(f"  positives that also named other categories: {report.other_categories}", file=out)
    verdict = report.passes()
    print("targets: serious recall >= 0.95 {}; serious precision >= 0.90 {};"
          " serious caught at either tier >= 0.98 {}".format(
              *("met" if verdict[k] else "NOT met"
                for k in ("serious_recall", "serious_precision", "any_recall"))), file=out)
    print(f"\nmisses ({len(report.misses)}):", file=out)
    for line in report.misses:
        print(f"  - {line}", file=out)
    print(f"\nfalse alarms ({len(report.false_alarms)}):", file=out)
    for line in report.false_alarms:
        print(f"  - {line}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--dev", action="store_true",
                       help="the development sentences (dev.jsonl, dev_extra.jsonl, dev_pass*.jsonl"
                       " but the held-out passes)")
    which.add_argument("--corpus", type=Path, help="another JSONL corpus")
    parser.add_argument("--rules-only", action="store_true",
                        help="the rules alone, without the model's second opinion")
    args = parser.parse_args(argv)
    paths = ([args.corpus] if args.corpus else [DEV_SET, DEV_EXTRA, *dev_passes()] if args.dev
             else [TEST_SET])
    name = "another corpus" if args.corpus else ("the development sentences" if args.dev
                                                else "the test set")
    if args.rules_only:
        name += " (rules alone)"
    print_report(evaluate([row for path in paths for row in load(path)], args.rules_only),
                 name, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
