"""Build the harm pipeline's statistical second opinion (services/quality_monitor/harm/model.json).

    python -m tools.harm_model            # (re)writes model.json from the training files
    python -m tools.harm_model --check    # exits 1 when model.json is not what they build
    python -m tools.harm_model --cv       # leave-one-pass-out cross-validation (below)
    python -m tools.harm_model --cv --first-met   # and on passes 11 to 15 with the rules as
                                                  # they stood when each was written (git)

Trained on the development corpus only: ``TRAINING`` below. Never on ``test.jsonl`` (the
figures the team reports) and not on ``dev_pass13.jsonl``, written before the model was built
and kept out to measure it on text it never saw, nor on ``dev_pass17.jsonl`` and
``dev_pass20.jsonl`` (held out from rules and model alike). Deterministic: the same files give the same
weights (lbfgs from zeros; the weights rounded to 5 decimals).

- harm or not: count x IDF over ``model.features`` (words, word pairs, character 2- to
  4-grams of each word; features of at least two sentences), divided by the square root of
  the sentence's count of them (a sum over its words, which makes scoring a lookup per word:
  as good as L2-normalised TF-IDF in cross-validation by pass, AUC 0.959 against 0.955), and a
  logistic regression (C=3) of serious-or-possible against none;
- a serious harm or not: a logistic regression (C=3) over the same features of serious
  against possible and none (the hedges of the possible sentences weigh against it);
- the category: a logistic regression over the words present (each in at least two harm
  sentences) of the serious and possible sentences, one weight per category.

``THRESHOLD`` (0.7) was chosen on passes 11 and 12 as they were first measured: the rules as
they stood before each pass, and the model trained on the passes before it
(see the harm section of the top README). ``SERIOUS_THRESHOLD`` (0.9) and
``CATEGORY_CONFIDENCE`` (0.5), which make a sentence the rules find no serious harm in a
serious finding, were chosen by leave-one-pass-out cross-validation over the development
passes (``--cv``: each pass measured by a model trained without it; with ``--first-met``
also passes 11 to 15 with the rules as they stood before any tuning on them, the honest
measure of text the lexicons have not seen).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "harm"
# dev_ordinary.jsonl: ordinary feedback (waits, parking, food, letters, praise), so that the
# model learns what most free text is; the corpus's own negatives are nearly all hard ones
TRAINING = ["dev.jsonl", "dev_extra.jsonl", "dev_pass11.jsonl", "dev_pass12.jsonl",
            "dev_ordinary.jsonl"]
HELD_OUT = ["test.jsonl", "dev_pass13.jsonl", "dev_pass17.jsonl", "dev_pass20.jsonl"]
THRESHOLD = 0.7
SERIOUS_THRESHOLD = 0.9
CATEGORY_CONFIDENCE = 0.5
C_HARM = 3.0
C_CATEGORY = 3.0
MIN_DF = 2
DIGITS = 5


def rows(names: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for name in names
            for line in (CORPUS / name).read_text().splitlines() if line.strip()]


def build(names: list[str] = TRAINING) -> dict[str, Any]:
    if set(names) & set(HELD_OUT):
        raise SystemExit(f"the model never trains on {sorted(set(names) & set(HELD_OUT))}")
    return fit(rows(names), names)


def fit(data: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The weights trained on ``data`` (the rows of the files ``names``, or a subset of
    them: ``--cv`` trains on all but one pass)."""
    import numpy as np
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    from services.quality_monitor.harm.model import features, words
    from services.quality_monitor.harm.pipeline import CATEGORIES

    counts = [Counter(features(r["text"])) for r in data]
    df = Counter(f for c in counts for f in c)
    vocab = {f: j for j, f in enumerate(sorted(f for f, n in df.items() if n >= MIN_DF))}
    n = len(data)
    idf = np.array([np.log((1 + n) / (1 + df[f])) + 1 for f in vocab])  # scikit-learn's smooth idf
    r_i: list[int] = []
    c_i: list[int] = []
    vals: list[float] = []
    for i, c in enumerate(counts):
        row = {vocab[f]: k * idf[vocab[f]] for f, k in c.items() if f in vocab}
        norm = np.sqrt(sum(k for f, k in c.items() if f in vocab)) or 1.0
        for j, v in sorted(row.items()):
            r_i.append(i)
            c_i.append(j)
            vals.append(v / norm)
    x = sparse.csr_matrix((vals, (r_i, c_i)), shape=(n, len(vocab)))
    y = np.array([r["tier"] != "none" for r in data])
    harm = LogisticRegression(C=C_HARM, max_iter=5000, tol=1e-8).fit(x, y)
    y_serious = np.array([r["tier"] == "serious" for r in data])
    serious = LogisticRegression(C=C_HARM, max_iter=5000, tol=1e-8).fit(x, y_serious)

    positives = [r for r in data if r["tier"] != "none" and r["category"] in CATEGORIES]
    word_sets = [set(words(r["text"])) for r in positives]
    wdf = Counter(w for s in word_sets for w in s)
    wvocab = {w: j for j, w in enumerate(sorted(w for w, k in wdf.items() if k >= MIN_DF))}
    wx = sparse.csr_matrix(
        ([1.0] * sum(len(s & wvocab.keys()) for s in word_sets),
         ([i for i, s in enumerate(word_sets) for _ in sorted(s & wvocab.keys())],
          [wvocab[w] for s in word_sets for w in sorted(s & wvocab.keys())])),
        shape=(len(positives), len(wvocab)))
    labels = [CATEGORIES.index(r["category"]) for r in positives]
    category = LogisticRegression(C=C_CATEGORY, max_iter=5000, tol=1e-8).fit(wx, labels)
    order = [list(category.classes_).index(k) for k in range(len(CATEGORIES))]

    def rnd(v: float) -> float:
        return round(float(v), DIGITS)

    spec = {
        "about": "built by python -m tools.harm_model; see services/quality_monitor/harm/model.py",
        "trained_on": [{"file": name, "sha256": hashlib.sha256(
            (CORPUS / name).read_bytes()).hexdigest()} for name in names],
        "sentences": n,
        "threshold": THRESHOLD,
        "intercept": rnd(harm.intercept_[0]),
        "serious_threshold": SERIOUS_THRESHOLD,
        "category_confidence": CATEGORY_CONFIDENCE,
        "serious_intercept": rnd(serious.intercept_[0]),
        "features": {f: [rnd(idf[j]), rnd(harm.coef_[0][j]), rnd(serious.coef_[0][j])]
                     for f, j in vocab.items()},
        "categories": list(CATEGORIES),
        "category_intercepts": [rnd(category.intercept_[k]) for k in order],
        "category_words": {w: [rnd(category.coef_[k][j]) for k in order]
                           for w, j in wvocab.items()},
    }
    # the services' scorer (plain Python over the rounded weights) gives scikit-learn's
    # probabilities
    from services.quality_monitor.harm.model import HarmModel

    runtime = HarmModel(spec)
    fitted = zip(harm.predict_proba(x)[:, 1], serious.predict_proba(x)[:, 1], strict=True)
    worst = max(max(abs(a - p), abs(b - q)) for (a, b), (p, q) in zip(
        (runtime.scores(r["text"]) for r in data), fitted, strict=True))
    if worst > 1e-3:
        raise SystemExit(f"the scorer of model.py is not the fitted model: {worst}")
    return spec


# the rules as they stood when each development pass was committed, before any rule was
# tuned on it (git): the commit that added the file
FIRST_MET = {"dev_pass11.jsonl": "819e2533f0fde0a2b384372fa0698030049536b3",
             "dev_pass12.jsonl": "fb7f4b5f34b48ffe115bbb1eda9e34e9b2f146a9",
             "dev_pass13.jsonl": "7134ed9f4f52a6afe354e806af3f358545273415",
             "dev_pass14.jsonl": "bb2a4a1906adcfe058f312227ba2ded16def8e39"}


def cv_files() -> list[str]:
    """The development files cross-validation measures: the training files and every later
    pass (``dev_pass*.jsonl``) but the held-out ones; never ``test.jsonl``."""
    from tools.eval import HELD_OUT_PASSES

    later = sorted(path.name for path in CORPUS.glob("dev_pass*.jsonl")
                   if path.name not in HELD_OUT_PASSES and path.name not in TRAINING)
    names = [*TRAINING, *later]
    assert "test.jsonl" not in names and not set(names) & set(HELD_OUT_PASSES)
    return names


@dataclass
class Tally:
    """Serious precision and recall, and serious caught at either tier, of one decision."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    caught: int = 0

    def add(self, label: str, tiers: set[str]) -> None:
        if label == "serious":
            self.tp += "serious" in tiers
            self.fn += "serious" not in tiers
            self.caught += bool(tiers)
        else:
            self.fp += "serious" in tiers

    def cell(self) -> str:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        either = self.caught / (self.tp + self.fn) if self.tp + self.fn else 1.0
        return f"{p:.3f} / {r:.3f} / {either:.3f} ({self.fp:>2} fp, {self.fn:>2} fn)"


DECISIONS = ("rules alone", "rules + model (possible)", "rules + model (serious)")


def cross_validate(first_met: bool = False, out: Any = sys.stdout) -> dict[str, list[Tally]]:
    """Leave one pass out: for each development pass (the ``pass`` field), the model is
    trained on the training files' other passes and measured on it, three ways: the rules
    alone; the rules with the model raising only the possible tier (``serious_threshold``
    out of reach); the rules with the model also making serious findings. A pass of a file
    the model never trains on (pass 13, ...) is measured by the model trained on all the
    training files. Prints serious precision / recall / caught at either tier per pass and
    pooled; ``first_met``: also on passes 11 to 15 with the rules of ``FIRST_MET``."""
    import subprocess
    import tempfile

    from services.quality_monitor.harm.model import HarmModel
    from services.quality_monitor.harm.pipeline import Analyser, _quiet_pyrush

    _quiet_pyrush()
    data = [dict(row, file=name) for name in cv_files() for row in rows([name])]
    passes = sorted({row["pass"] for row in data})
    rule_sets: list[tuple[str, Analyser, list[dict[str, Any]]]] = [
        ("rules of today (tuned on every development pass but 13)", Analyser(model=False),
         data)]
    if first_met:
        tmp = Path(tempfile.mkdtemp(prefix="harm-cv-"))
        for name, commit in FIRST_MET.items():
            paths = []
            for part in ("concepts.yaml", "context.yaml"):
                path = tmp / f"{commit[:7]}-{part}"
                path.write_bytes(subprocess.run(
                    ["git", "show", f"{commit}:services/quality_monitor/harm/{part}"],
                    cwd=ROOT, check=True, capture_output=True).stdout)
                paths.append(path)
            rule_sets.append((f"{name}: the rules of {commit[:7]}, before any tuning on it",
                              Analyser(paths[0], paths[1], model=False),
                              [row for row in data if row["file"] == name]))
    models: dict[int, HarmModel] = {}
    for held in passes:
        train = [row for row in data if row["file"] in TRAINING and row["pass"] != held]
        models[held] = HarmModel(fit(train, TRAINING))
    pooled: dict[str, list[Tally]] = {}
    for title, analyser, measured in rule_sets:
        print(f"\n{title}\nserious precision / recall / caught at either tier", file=out)
        print(f"{'pass':>4} {'sentences':>9} {'serious':>7}  " + "  ".join(
            f"{d:<40}" for d in DECISIONS), file=out)
        total = [Tally() for _ in DECISIONS]
        for held in passes:
            subset = [row for row in measured if row["pass"] == held]
            if not subset:
                continue
            tallies = [Tally() for _ in DECISIONS]
            model = models[held]
            promote = model.serious_threshold
            for row in subset:
                analyser.model = None
                tallies[0].add(row["tier"], {m.tier for m in analyser.mentions(row["text"])})
                analyser.model = model
                model.serious_threshold = 2.0  # never: the possible tier only
                tallies[1].add(row["tier"], {m.tier for m in analyser.mentions(row["text"])})
                model.serious_threshold = promote
                tallies[2].add(row["tier"], {m.tier for m in analyser.mentions(row["text"])})
            analyser.model = None
            for t, s in zip(total, tallies, strict=True):
                t.tp, t.fp, t.fn, t.caught = (t.tp + s.tp, t.fp + s.fp, t.fn + s.fn,
                                              t.caught + s.caught)
            serious = sum(row["tier"] == "serious" for row in subset)
            print(f"{held:>4} {len(subset):>9} {serious:>7}  " + "  ".join(
                f"{t.cell():<40}" for t in tallies), file=out)
        n = len(measured)
        serious = sum(row["tier"] == "serious" for row in measured)
        print(f"{'all':>4} {n:>9} {serious:>7}  " + "  ".join(
            f"{t.cell():<40}" for t in total), file=out)
        pooled[title] = total
    return pooled


def dumps(spec: dict[str, Any]) -> str:
    return json.dumps(spec, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"


def main(argv: list[str] | None = None) -> int:
    from services.quality_monitor.harm.model import MODEL_FILE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare model.json with what the training files build")
    parser.add_argument("--cv", action="store_true",
                        help="leave-one-pass-out cross-validation over the development files")
    parser.add_argument("--first-met", action="store_true",
                        help="with --cv: also passes 11 to 15 with the rules before their tuning")
    args = parser.parse_args(argv)
    if args.cv:
        cross_validate(args.first_met)
        return 0
    built = build()
    if args.check:
        same = MODEL_FILE.exists() and close(json.loads(MODEL_FILE.read_text()), built)
        print("model.json is what the training files build" if same
              else "model.json differs from what the training files build: "
                   "python -m tools.harm_model")
        return 0 if same else 1
    MODEL_FILE.write_text(dumps(built))
    print(f"{MODEL_FILE.relative_to(ROOT)}: {built['sentences']} sentences of "
          f"{', '.join(TRAINING)}; {len(built['features'])} features,"
          f" {len(built['category_words'])} category words; threshold {THRESHOLD}")
    return 0


def close(a: Any, b: Any, tolerance: float = 1e-3) -> bool:
    """Equal but for floating-point noise (another BLAS may differ in the last digits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= tolerance
    return bool(a == b)


if __name__ == "__main__":
    sys.exit(main())
