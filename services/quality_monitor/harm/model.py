"""A statistical second opinion on each sentence the rules pass over (issue 15).

The rules of ``concepts.yaml`` find what their lexicons name, and fresh text keeps naming harm
in words nobody listed: each development pass, measured before the rules were tuned on it,
lost 14 to 40% of its serious harms. This model reads a sentence as a bag of words, word pairs
and character 2- to 4-grams of each word (TF-IDF, sublinear term frequency, L2-normalised),
weighed by a logistic regression trained on the development corpus (``tests/data/harm``: never
``test.jsonl``, and not pass 13, kept to measure it). When the rules assert nothing of a
sentence and the model scores it at ``threshold`` or more, the sentence is raised at the
*possible* tier: a high concern for the quality team to confirm or dismiss, never a serious
one on the model's word alone.

The weights are ``model.json``, built by ``python -m tools.harm_model`` (scikit-learn, a
development dependency); scoring here is plain Python over that file: nothing is downloaded
or trained at run time. The evidence a reviewer sees: the sentence, the category the model
finds likeliest, the words that weighed most and the score.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
MODEL_FILE = HERE / "model.json"
MODEL_CONTEXT = "model: harm-like wording"

_FUNCTION_WORDS = frozenset("""
a an the and or but so then of in on at to for from by with without into onto over under
after before about as is was were be been being are am has had have having do did does
he she it they we you i him her them us me his hers its their our your my mine this that
these those there here who whom which what when where while whether if not no nor all any
some one two each both very just still also too only even up down out off again once more
most much many few own same such than can could would should will shall may might must
""".split())
_WORDS_CACHED = 100_000
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_PLAIN = str.maketrans({"\u2019": "'", "\u2018": "'"})


def words(text: str) -> list[str]:
    """The words of a sentence, lower-cased ("didn't" one word, "self-harm" two)."""
    return _WORD.findall(text.lower().translate(_PLAIN))


def features(text: str) -> list[str]:
    """The features of a sentence: each word ("w dead"), each pair of neighbouring words
    ("w not breathing") and each character 2- to 4-gram of each word padded with spaces
    (" wom", "omb "), which reads misspellings and inflections ("haemorrage", "overdosed")."""
    ws = words(text)
    out = [f"w {w}" for w in ws]
    out += [f"w {a} {b}" for a, b in pairwise(ws)]
    for w in ws:
        padded = f" {w} "
        size = len(padded)
        for n in (2, 3, 4):
            out += [padded[i:i + n] for i in range(size - n + 1)]
    return out


@dataclass(frozen=True)
class Opinion:
    """The model's reading of one sentence: the probability that it reports a harm, the
    category it finds likeliest and the word features that weighed most for harm."""

    score: float
    category: str
    terms: tuple[str, ...]


class HarmModel:
    """The weights of ``model.json``: per feature its IDF and its weight; per word its weight
    for each category."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.threshold = float(spec["threshold"])
        self.intercept = float(spec["intercept"])
        self.idf: dict[str, float] = {}
        self.weight: dict[str, float] = {}
        # per feature: its IDF and IDF x weight (a feature seen once, most are, costs two adds)
        self.table: dict[str, tuple[float, float]] = {}
        for feature, (idf, weight) in spec["features"].items():
            self.idf[feature] = idf
            self.weight[feature] = weight
            self.table[feature] = (idf, idf * weight)
        # per word: its features in the vocabulary (the word and its character n-grams); a
        # word's features never change, and most words of a text were seen before
        self._by_word: dict[str, tuple[str, ...]] = {}
        self.categories: list[str] = list(spec["categories"])
        self.category_intercepts: list[float] = list(spec["category_intercepts"])
        self.category_words: dict[str, list[float]] = spec["category_words"]
        self.trained_on: list[dict[str, str]] = spec["trained_on"]

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> HarmModel:
        return cls(json.loads(path.read_text()))

    def score(self, sentence: str) -> float:
        """The probability that the sentence reports a harm (the training labels: serious or
        possible against none). Equal to ``_score(features(sentence))``, faster: the features
        of each word are looked up once per process, only those in the vocabulary kept."""
        ws = words(sentence)
        table, by_word = self.table, self._by_word
        found: list[str] = []
        for w in ws:
            known = by_word.get(w)
            if known is None:
                known = self._word_features(w)
            found += known
        found += [f for f in (f"w {a} {b}" for a, b in pairwise(ws)) if f in table]
        squares = dot = 0.0
        for feature, count in Counter(found).items():
            idf, idf_weight = table[feature]
            if count == 1:
                squares += idf * idf
                dot += idf_weight
            else:
                tf = 1.0 + math.log(count)
                squares += tf * tf * idf * idf
                dot += tf * idf_weight
        z = self.intercept + (dot / math.sqrt(squares) if squares else 0.0)
        return 1.0 / (1.0 + math.exp(-z))

    def _word_features(self, word: str) -> tuple[str, ...]:
        padded = f" {word} "
        size = len(padded)
        grams = [f"w {word}"] + [padded[i:i + n] for n in (2, 3, 4) for i in range(size - n + 1)]
        known = tuple(g for g in grams if g in self.table)
        if len(self._by_word) >= _WORDS_CACHED:
            self._by_word.clear()
        self._by_word[word] = known
        return known

    def _score(self, counts: Counter[str]) -> tuple[float, dict[str, float]]:
        idf, weight = self.idf, self.weight
        values: dict[str, float] = {}
        for feature, count in counts.items():
            f_idf = idf.get(feature)
            if f_idf is not None:  # as scikit-learn: features not in the vocabulary count nil
                values[feature] = (1.0 + math.log(count)) * f_idf
        norm = math.sqrt(sum(v * v for v in values.values())) or 1.0
        contributions = {f: v / norm * weight[f] for f, v in values.items()}
        z = self.intercept + sum(contributions.values())
        return 1.0 / (1.0 + math.exp(-z)), contributions

    def opinion(self, sentence: str) -> Opinion:
        """The score, the likeliest category and the words that weighed most (slower than
        ``score``: read for a sentence that is raised)."""
        counts = Counter(features(sentence))
        score, contributions = self._score(counts)
        return Opinion(score, self.category(sentence), self._terms(sentence, counts,
                                                                    contributions))

    @staticmethod
    def _terms(sentence: str, counts: Counter[str], contributions: dict[str, float]
               ) -> tuple[str, ...]:
        """The three words that weighed most for harm: each word's own feature, its share of
        the pairs it is in and of its character n-grams (a feature's weight split between
        its occurrences); words like "the" and "he" are left out of the explanation."""
        unit = {f: c / counts[f] for f, c in contributions.items()}
        ws = words(sentence)
        by_word: dict[str, float] = {}
        for i, w in enumerate(ws):
            total = unit.get(f"w {w}", 0.0)
            if i:
                total += unit.get(f"w {ws[i - 1]} {w}", 0.0) / 2
            if i + 1 < len(ws):
                total += unit.get(f"w {w} {ws[i + 1]}", 0.0) / 2
            padded = f" {w} "
            total += sum(unit.get(padded[j:j + n], 0.0)
                         for n in (2, 3, 4) for j in range(len(padded) - n + 1))
            if w not in _FUNCTION_WORDS:
                by_word[w] = max(by_word.get(w, total), total)
        ranked = sorted(((c, w) for w, c in by_word.items() if c > 0), reverse=True)
        return tuple(w for _, w in ranked[:3])

    def category(self, sentence: str) -> str:
        """The likeliest category of a harm sentence (a linear model over its words)."""
        totals = list(self.category_intercepts)
        for w in set(words(sentence)):
            row = self.category_words.get(w)
            if row is not None:
                totals = [t + x for t, x in zip(totals, row, strict=True)]
        return self.categories[max(range(len(totals)), key=totals.__getitem__)]


@lru_cache(maxsize=1)
def harm_model() -> HarmModel:
    """The process's one model (reading it takes a few milliseconds)."""
    return HarmModel.load()
