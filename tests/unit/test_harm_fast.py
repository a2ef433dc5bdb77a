"""The harm pipeline's fast path (``Analyser._mentions``: ConText only on the sentences a mention
can come from, sentences read from the doc's arrays) gives exactly what the pipeline as written
gives (``Analyser.reference_mentions``: ConText on every span, spaCy's sentence spans): the same
mentions (phrase, category, context, sentence, tier), model findings included, in the same order,
on every sentence of the corpus, on fields built from them, on ordinary text, and on a minimal
match of every line of concepts.yaml as it is when the tests run."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.quality_monitor.harm import pipeline
from services.quality_monitor.harm.pipeline import CONCEPTS_FILE, chunks, expand
from tools import stream

CORPUS = Path(__file__).resolve().parent.parent / "data" / "harm"


def corpus() -> list[str]:
    return [json.loads(line)["text"] for path in sorted(CORPUS.glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


def same(analyser: pipeline.Analyser, text: str) -> list[pipeline.Mention]:
    fast = [m for piece in chunks(text) for m in analyser._mentions(piece)]
    slow = [m for piece in chunks(text) for m in analyser.reference_mentions(piece)]
    assert fast == slow, text
    return fast


@pytest.fixture(scope="module")
def analyser() -> pipeline.Analyser:
    built = pipeline.analyser()
    assert built._targets_independent  # else the fast path is the reference itself
    return built


def test_every_corpus_sentence_gives_what_the_full_pipeline_gives(
        analyser: pipeline.Analyser) -> None:
    texts = corpus()
    assert len(texts) > 3000
    flagged = sum(bool(same(analyser, text)) for text in texts)
    assert 0 < flagged < len(texts)  # harm and ordinary sentences both read


@pytest.mark.parametrize("separator", [" ", "  ", "\n", "\n\n", "\n- ", " \u00a0", "\n2. "])
def test_fields_built_from_the_corpus_give_what_the_full_pipeline_gives(
        analyser: pipeline.Analyser, separator: str) -> None:
    texts = corpus()
    rng = random.Random(separator)
    for _ in range(300):
        same(analyser, separator.join(rng.sample(texts, rng.randint(2, 6))))


def test_long_fields_read_in_pieces_give_what_the_full_pipeline_gives(
        analyser: pipeline.Analyser) -> None:
    texts = corpus()
    rng = random.Random(21)
    for _ in range(4):
        text = " ".join(rng.sample(texts, 40))
        assert len(chunks(text)) > 2
        same(analyser, text)
        assert analyser.mentions(text) == pipeline._dedupe(
            [m for piece in chunks(text) for m in analyser.reference_mentions(piece)])


def test_ordinary_text_gives_what_the_full_pipeline_gives(analyser: pipeline.Analyser) -> None:
    fft = [t for t in stream._FFT_POSITIVE + stream._FFT_NEGATIVE if t]
    ordinary = [*fft, "Staff were lovely and kind", "waited too long", "", "   ", ".", "!!",
                "Good.  ", "Good. !", " Good", "Thank you!!! Brilliant care :)",
                "Great\n\nthanks", "- quick\n- clean", "A&E. Fine.", "self-harm? no, fine",
                "\u2018Lovely\u2019 staff \u2013 very kind", "10km walk, 5pm appointment",
                " ".join(fft), "\n".join(fft)]
    for text in ordinary:
        same(analyser, text)
    # the fast path leaves ConText out on a sentence of outcomes alone ("rushed")
    assert analyser._mentions("Felt rushed and not listened to.") == []


def minimal_match(variant: list[Any]) -> str:
    """The shortest text of one variant: its words, and each gap at its least ("x" words)."""
    words: list[str] = []
    for item in variant:
        if isinstance(item, str):
            words.append(item)
        else:
            words += ["x"] * item[0]
    return " ".join(words)


def concept_lines() -> list[tuple[str, str]]:
    concepts = yaml.safe_load(CONCEPTS_FILE.read_text())
    lines: list[tuple[str, str]] = []
    for category, spec in concepts["categories"].items():
        for kind in ("serious", "possible", "cue"):
            lines += [(f"{category}|{kind}", line) for line in spec.get(kind) or []]
    lines += [("outcome", line) for line in concepts.get("outcome") or []]
    for category, setting in (concepts.get("setting") or {}).items():
        lines += [(f"setting|{category}", line) for line in setting]
    lines += [("idiom", line) for line in concepts.get("idiom") or []]
    return lines


def test_a_minimal_match_of_every_concept_line_gives_what_the_full_pipeline_gives(
        analyser: pipeline.Analyser) -> None:
    """Generated from concepts.yaml as it is (entries added later are covered): the first and
    last variant of each line, alone, after a cue's outcome, and in a sentence of its own
    beside ordinary text."""
    concepts = yaml.safe_load(CONCEPTS_FILE.read_text())
    macros = concepts.get("macros", {})
    tokenize = analyser.nlp.tokenizer
    lines = concept_lines()
    assert len(lines) > 500
    matched = 0
    for label, line in lines:
        variants = expand(line.removeprefix("~ "), macros, tokenize)
        for variant in {id(v): v for v in (variants[0], variants[-1])}.values():
            text = minimal_match(variant)
            doc = analyser.doc(text)
            matched += any(s.label_.startswith(label) for s in doc.spans[analyser.GROUP])
            same(analyser, text)
            same(analyser, f"She {text} and died.")
            same(analyser, f"The parking was fine. {text}. Staff were kind.")
    # the generated texts do match their own lines (a generator that matched nothing would
    # prove nothing)
    assert matched > 0.9 * len(lines)
