"""The clinical-text pipeline: serious risks found in free text the way a clinician reads them.

spaCy's blank English tokenizer and rule-based sentencizer, medspaCy's target matcher (the
concepts of ``concepts.yaml``) and ConText (the assertions of ``context.yaml``): a harm is
kept when it is asserted of the patient, and dropped when it is denied, hypothetical or
feared, prevented, historical, someone else's, an idiom or a topic. A statistical second
opinion (``model.py``: TF-IDF and a logistic regression, weights committed in ``model.json``)
reads each sentence the rules assert nothing of, and raises it at the possible tier when it
reads like harm. Nothing is downloaded. The pipeline is built once per process (``analyser()``).

Each mention carries what a clinician needs to check it: the phrase, the category, the
assertion context and the sentence (the text it reads has already been redacted by intake).
"""

from __future__ import annotations

import asyncio
import gc
import math
import re
import warnings
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from services.quality_monitor.harm.model import (
    MODEL_CONTEXT,
    SERIOUS_CONTEXT,
    VETO_CONTEXT,
    Opinion,
)
from services.quality_monitor.harm.model import words as model_words

HERE = Path(__file__).parent
CONCEPTS_FILE = HERE / "concepts.yaml"
CONTEXT_FILE = HERE / "context.yaml"

SERIOUS = "serious"
POSSIBLE = "possible"
CATEGORIES = ("death", "severe_harm", "abuse", "neglect", "never_event", "self_harm",
              "missed_diagnosis", "maternity", "deterioration", "medication_error")
# ConText categories that make a mention no report of harm to the patient.
DROPPING = ("negated", "denied", "hypothetical", "prevented", "historical", "other", "topic")
# ConText categories that leave a mention for the quality team's review.
DOUBTING = ("possible", "uncertain")
# the contexts of a possible mention with no hedge: a weaker term stated plainly, or a cue with
# no outcome (the model may make such a sentence serious; never a hedged or uncertain one)
NO_OUTCOME = "no outcome stated"
UNHEDGED = ("unqualified term", NO_OUTCOME)
# a cue left without an outcome in its sentence is completed by an outcome told in one of the
# next sentences, up to this many ("EPU scan didn't pick up the ectopic. I came back with it
# ruptured and lost a tube."; "... did not bleep the reg. Child arrested 40 mins later."), or
# else in the sentence just before ("Pt arrested on the ward. NEWS2 of 9 not escalated.")
OUTCOME_SENTENCES_AFTER = 2
OUTCOME_SENTENCES_BEFORE = 1
_LABEL_SEP = "|"
MAX_SENTENCE_EVIDENCE = 300


@dataclass(frozen=True)
class Mention:
    """One harm the text reports: what matched, its category, what the words around it say
    (``affirmed``, or the hedge that makes it possible), its sentence and its tier."""

    phrase: str
    category: str
    context: str
    sentence: str
    tier: str

    def as_json(self) -> dict[str, str]:
        return {"phrase": self.phrase, "category": self.category, "context": self.context,
                "sentence": self.sentence, "tier": self.tier}


# -- the pattern syntax of concepts.yaml / context.yaml ---------------------------------------
_QUANT = re.compile(r"^_\{(\d*),(\d*)\}$")
Gap = tuple[int, int]


@dataclass(frozen=True)
class Regex:
    """A token matching a regular expression (ConText rules only: "in re:^(19|20)\\d\\d$")."""

    pattern: str


Variant = list[str | Gap | Regex]


def _position(raw: str, macros: dict[str, str]) -> tuple[str, bool]:
    """One position of a line: its alternatives with the macros put in, and whether it may be
    left out ("word?"; a lone "?" is the question mark)."""
    optional = raw.endswith("?") and raw != "?"
    spec = raw[:-1] if optional else raw
    return "|".join(macros[alt[1:]] if alt.startswith("$") else alt
                    for alt in spec.split("|")), optional


def expand(text: str, macros: dict[str, str], tokenize: Any) -> list[Variant]:
    """One line of the syntax -> every token sequence it stands for: words (lower-cased, as
    the tokenizer splits them: "didn't" is two) and gaps (min, max) of any tokens."""
    variants: list[Variant] = [[]]
    for raw in text.split():
        spec, optional = _position(raw, macros)
        steps: list[Variant]
        if spec == "_":
            steps = [[(1, 1)]]
        elif spec.startswith("re:"):
            steps = [[Regex(spec[3:])]]
        elif (m := _QUANT.match(spec)) is not None:
            steps = [[(int(m.group(1) or 0), int(m.group(2)))]]
        else:
            steps = [[t.lower_ for t in tokenize(alt.replace("+", " "))] if alt != "?" else ["?"]
                     for alt in spec.split("|")]
        if optional:
            steps.append([])
        variants = [v + step for v in variants for step in steps]
    return [v for v in variants if any(isinstance(x, str) for x in v)]


WordSet = tuple[tuple[str, ...], ...]  # one position's alternatives, each a run of tokens
Shape = list[WordSet | Gap]


def shapes(text: str, macros: dict[str, str], tokenize: Any) -> list[Shape]:
    """One line of the syntax -> the sequences of positions it stands for, each optional
    position present or absent, but a position's alternatives kept together as one set (a
    line's variants are its shapes with each set expanded: ``expand``). "stopped $POSS _{0,1}
    $DRUG" is one shape, where it is hundreds of variants."""
    out: list[Shape] = [[]]
    for raw in text.split():
        spec, optional = _position(raw, macros)
        step: WordSet | Gap
        if spec == "_":
            step = (1, 1)
        elif spec.startswith("re:"):
            raise ValueError(f"a target pattern cannot hold a regular expression: {text}")
        elif (m := _QUANT.match(spec)) is not None:
            step = (int(m.group(1) or 0), int(m.group(2)))
        else:
            alternatives: dict[tuple[str, ...], None] = {}
            for alt in spec.split("|"):
                words = (tuple(t.lower_ for t in tokenize(alt.replace("+", " ")))
                         if alt != "?" else ("?",))
                if words:
                    alternatives[words] = None
                else:
                    optional = True  # an alternative of no words: the position may be absent
            if not alternatives:
                continue
            step = tuple(alternatives)
        out = [t for s in out for t in (([*s, step], s) if optional else ([*s, step],))]
    return out


def _is_gap(step: WordSet | Gap) -> bool:
    return isinstance(step[0], int)


def positions(shape: Shape) -> tuple[list[WordSet], list[Gap]]:
    """A shape as its word positions and the gap between each two (0 tokens between two
    positions side by side; leading and trailing gaps are dropped: they add nothing to a
    match)."""
    sets: list[WordSet] = []
    gaps: list[Gap] = []
    pending = (0, 0)
    for step in shape:
        if _is_gap(step):
            gap: Any = step
            pending = (pending[0] + gap[0], pending[1] + gap[1])
        else:
            if sets:
                gaps.append(pending)
            pending = (0, 0)
            sets.append(step)  # type: ignore[arg-type]
    return sets, gaps


# Positions side by side become one run of words while it stands for at most this many phrases.
# Alternated on the corpus: 256 built in 2.9 s and moved 3 evidence phrases; 1,024 built in
# 3.1 s with the same mentions as every variant expanded (4.9 s); the fields read per second the
# same within noise (3,400-3,800 on this host).
RUN_UP_TO = 1024


def joined(sets: list[WordSet], gaps: list[Gap]) -> tuple[list[WordSet], list[Gap]]:
    """Positions side by side made one (every phrase of their alternatives) while they stand
    for at most ``RUN_UP_TO`` phrases: a run of words is what the matcher finds fastest, a
    set of common words ("his|her|my") alone matches in almost every text."""
    out_sets = [sets[0]] if sets else []
    out_gaps: list[Gap] = []
    for alternatives, gap in zip(sets[1:], gaps, strict=True):
        if gap == (0, 0) and len(out_sets[-1]) * len(alternatives) <= RUN_UP_TO:
            out_sets[-1] = tuple(a + b for a in out_sets[-1] for b in alternatives)
        else:
            out_sets.append(alternatives)
            out_gaps.append(gap)
    return out_sets, out_gaps


def _bare_lexemes(vocab: Any, keys: list[str]) -> None:
    """Lexemes for a matcher's keys without a word's attributes (spaCy's PhraseMatcher makes
    a lexeme of every key it is given; a key is no token of any text)."""
    getters = vocab.lex_attr_getters
    vocab.lex_attr_getters = {}
    try:
        for key in keys:
            vocab[key]
    finally:
        vocab.lex_attr_getters = getters


class GappedMatcher:
    """Target patterns with gaps ("left _{0,3} on the floor"): each position's words (a set of
    alternatives) are found by a PhraseMatcher (hash lookups, fast whatever the number of
    phrases), then the positions are joined within the gaps allowed, inside one sentence. The
    spans join medspaCy's group. A pattern is kept as its sets, not expanded into every
    combination of their words: the same matches from hundreds of patterns over about a
    thousand sets, where the variants numbered a million (built in 3-4 s of CPU, not 13)."""

    def __init__(self, vocab: Any, tokenize: Any) -> None:
        from spacy.matcher import PhraseMatcher

        self.vocab = vocab
        self.matcher = PhraseMatcher(vocab, attr="LOWER")
        self.tokenize = tokenize
        self.set_ids: dict[WordSet, int] = {}
        self.key_to_set: dict[int, int] = {}
        # first set -> second set -> [(label, [set ids], [gaps])]
        self.by_pair: dict[int, dict[int, list[tuple[str, list[int], list[Gap]]]]] = {}
        self.patterns: set[tuple[str, tuple[int, ...], tuple[Gap, ...]]] = set()
        self.count = 0  # the patterns' variants: every combination of their sets' words

    def _set(self, alternatives: WordSet) -> int:
        sid = self.set_ids.get(alternatives)
        if sid is None:
            sid = self.set_ids[alternatives] = len(self.set_ids)
            key = f"harm_set_{sid}"
            _bare_lexemes(self.vocab, [key])
            self.matcher.add(key, [self.tokenize(" ".join(words)) for words in alternatives])
            self.key_to_set[self.vocab.strings[key]] = sid
        return sid

    def add(self, label: str, sets: list[WordSet], gaps: list[Gap]) -> None:
        """A pattern as ``positions`` splits it: two positions or more, a gap between each
        two."""
        ids = [self._set(alternatives) for alternatives in sets]
        key = (label, tuple(ids), tuple(gaps))
        if key in self.patterns:
            return
        self.patterns.add(key)
        self.by_pair.setdefault(ids[0], {}).setdefault(ids[1], []).append((label, ids, gaps))
        self.count += math.prod(len(alternatives) for alternatives in sets)

    def __call__(self, doc: Any, group: str) -> None:
        from spacy.tokens import Span

        at: dict[int, dict[int, list[int]]] = {}  # phrase -> start -> [ends]
        for key, start, end in self.matcher(doc):
            at.setdefault(self.key_to_set[key], {}).setdefault(start, []).append(end)
        if not at:
            return
        sentence: list[int] = []  # numbered on the first pattern that may match
        found: set[tuple[int, int, str]] = set()
        for first, starts in at.items():
            partners = self.by_pair.get(first)
            if not partners:
                continue
            # the pairs whose second run is in the text too: from whichever side is shorter
            seconds = ([p for p in partners if p in at] if len(partners) < len(at)
                       else [p for p in at if p in partners])
            for second in seconds:
                for label, ids, gaps in partners[second]:
                    if len(ids) > 2 and any(i not in at for i in ids[2:]):
                        continue  # a run of the pattern is nowhere in the text
                    if not sentence:
                        sentence = _sentence_numbers(doc)
                    self._found(at, starts, label, ids, gaps, sentence, found)
        if found:
            spans = list(doc.spans.get(group, []))
            spans += [Span(doc, start, end, label=label) for start, end, label in sorted(found)]
            doc.spans[group] = spans

    def _found(self, at: dict[int, dict[int, list[int]]], starts: dict[int, list[int]],
               label: str, ids: list[int], gaps: list[Gap], sentence: list[int],
               found: set[tuple[int, int, str]]) -> None:
        for start, ends in starts.items():
            for end in ends:
                for last in self._join(at, ids, gaps, 1, end):
                    if sentence[start] == sentence[last - 1]:
                        found.add((start, last, label))

    def _join(self, at: dict[int, dict[int, list[int]]], ids: list[int], gaps: list[Gap],
              i: int, end: int) -> list[int]:
        if i == len(ids):
            return [end]
        starts = at[ids[i]]
        low, high = gaps[i - 1]
        out: list[int] = []
        for start in range(end + low, end + high + 1):
            for nxt in starts.get(start, ()):
                out += self._join(at, ids, gaps, i + 1, nxt)
        return out


def _sentence_numbers(doc: Any) -> list[int]:
    """The sentence number of each token (read from the doc's array: a loop over the tokens
    in Python cost more than the matching)."""
    starts = doc.to_array("SENT_START") == 1
    starts[0] = False
    numbers: list[int] = starts.cumsum().tolist()
    return numbers


def as_token_pattern(variant: Variant) -> list[dict[str, Any]]:
    """A variant as a spaCy Matcher pattern (for the few ConText rules with gaps)."""
    return [{"LOWER": item} if isinstance(item, str)
            else {"LOWER": {"REGEX": item.pattern}} if isinstance(item, Regex)
            else {"OP": f"{{{item[0]},{item[1]}}}"} for item in variant]


COMPACT_FROM = 64
# a full stop after "A&E", "A+E", "O&G" ends the sentence (spaCy reads "A&E." as one token)
AMPERSAND_STOP = r"(?<=[&+][A-Za-z])\."


def compact_pattern(text: str, macros: dict[str, str], tokenize: Any
                    ) -> list[dict[str, Any]] | None:
    """One line with a gap as ONE spaCy Matcher pattern (a set of words per position), when
    every alternative is a single token: expanding "stopped $POSS _{0,1} $DRUG" into its
    variants made a thousand Matcher patterns, each tried on every text. None when an
    alternative is several tokens ("the+dose", "didn't"): the line is then expanded."""
    pattern: list[dict[str, Any]] = []
    for raw in text.split():
        spec, optional = _position(raw, macros)
        step: dict[str, Any]
        if spec == "_":
            step = {"OP": "{1,1}"}
        elif spec.startswith("re:"):
            step = {"LOWER": {"REGEX": spec[3:]}}
        elif (m := _QUANT.match(spec)) is not None:
            step = {"OP": f"{{{int(m.group(1) or 0)},{int(m.group(2))}}}"}
        else:
            words: list[str] = []
            for alt in spec.split("|"):
                if "+" in alt:
                    return None
                tokens = [tok.lower_ for tok in tokenize(alt)] if alt != "?" else ["?"]
                if len(tokens) != 1:
                    return None
                words.append(tokens[0])
            step = {"LOWER": {"IN": sorted(set(words))}}
        if optional:
            if "OP" in step:
                return None
            step["OP"] = "?"
        pattern.append(step)
    return pattern


def normalise(text: str) -> str:
    """Same length as the text (offsets stay valid): typographic quotes and dashes made plain,
    a hyphen between letters read as a space ("self-harm" is "self harm")."""
    text = text.translate(_PLAIN)
    return _WORD_HYPHEN.sub(" ", text)


_PLAIN = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"',
                        "\u2013": "-", "\u2014": "-", "\u00a0": " "})
_WORD_HYPHEN = re.compile(r"(?<=[A-Za-z])-(?=[A-Za-z])")


# -- the pipeline ------------------------------------------------------------------------------
class Analyser:
    """spaCy + medspaCy, built from the two YAML files; ``mentions(text)`` is pure."""

    GROUP = "medspacy_spans"

    def __init__(self, concepts_file: Path = CONCEPTS_FILE,
                 context_file: Path = CONTEXT_FILE, model: bool = True) -> None:
        import spacy

        from services.quality_monitor.harm.model import harm_model

        # the second opinion on the sentences the rules pass over (model=False: rules alone)
        self.model = harm_model() if model else None

        # every target rule is a phrase: medspaCy's token Matcher stays empty (spaCy W036)
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        from medspacy.context import ConTextRule
        from medspacy.target_matcher import TargetRule

        concepts = yaml.safe_load(concepts_file.read_text())
        context = yaml.safe_load(context_file.read_text())
        self.nlp = spacy.blank("en")
        # spaCy keeps a full stop on a capital after "&" or "+" as part of the token, as in an
        # abbreviation: "sent home from A&E. She died" was one sentence, and "a&e" in a rule
        # missed the token "A&E.". The stop is split off ("A&E", "A+E", "O&G").
        tokenize: Any = self.nlp.tokenizer
        suffixes: list[Any] = [*(self.nlp.Defaults.suffixes or ()), AMPERSAND_STOP]
        tokenize.suffix_search = spacy.util.compile_suffix_regex(suffixes).search
        macros: dict[str, str] = concepts.get("macros", {})
        self.gapped = GappedMatcher(self.nlp.vocab, tokenize)

        # Phrases without gaps go to medspaCy's target matcher as literals (its PhraseMatcher);
        # it is first in the pipeline so that adding a literal (medspaCy runs the pipeline on
        # it) costs a tokenization and a lookup.
        matcher: Any = self.nlp.add_pipe(
            "medspacy_target_matcher", config={"result_type": "group", "prune": False})
        literals: dict[tuple[str, str], Any] = {}

        def add(label: str, lines: list[str]) -> None:
            for line in lines:
                weak = line.startswith("~ ")
                text = line[2:] if weak else line
                full = label + ("|weak" if weak else "")
                for shape in shapes(text, macros, tokenize):
                    sets, gaps = joined(*positions(shape))
                    if not sets:
                        continue
                    if len(sets) > 1:
                        self.gapped.add(full, sets, gaps)
                        continue
                    for phrase in (" ".join(words) for words in sets[0]):  # no gap: phrases
                        if (phrase, full) not in literals:
                            literals[phrase, full] = TargetRule(phrase, full)

        for category, spec in concepts["categories"].items():
            add(f"{category}|{SERIOUS}", spec.get("serious") or [])
            add(f"{category}|{POSSIBLE}", spec.get("possible") or [])
            add(f"cue|{category}", spec.get("cue") or [])
        add("outcome", concepts.get("outcome") or [])
        for category, lines in (concepts.get("setting") or {}).items():
            add(f"setting|{category}", lines)
        add("idiom", concepts.get("idiom") or [])
        rules = list(literals.values())
        inner_count = getattr(getattr(matcher, "_TargetMatcher__matcher", None),
                              "_MedspacyMatcher__rule_count", 0)
        # medspaCy adds each literal under its own key ("<category>_<n>"), and spaCy makes a
        # lexeme of every key with its 23 attributes (a word's shape, prefix, suffix ...):
        # ~2 s of ~20 for 134,000 keys no text ever holds. Made bare beforehand.
        _bare_lexemes(self.nlp.vocab, [f"{rule.category}_{inner_count + i}"
                                       for i, rule in enumerate(rules)])
        matcher.add(rules)
        self.nlp.add_pipe("sentencizer")

        context_rules: list[Any] = []
        seen: set[str] = set()
        twice: set[str] = set()
        directions = {"forward": "FORWARD", "backward": "BACKWARD", "both": "BIDIRECTIONAL",
                      "terminate": "TERMINATE", "pseudo": "PSEUDO", "clause": "PSEUDO"}
        # Every rule carries its own window; the component has none (below): medspaCy bounds a
        # scope by the modifier's sentence only when the component has no global max_scope
        # (with one, its window runs over the sentence end: "My neighbour's dog died. Mum died
        # on the ward." had the dog's "other" reach mum's death).
        default_scope = int(context.get("max_scope", 10))
        for category, by_direction in context["rules"].items():
            if category in ("terminate", "clause"):
                by_direction = {category: by_direction}
            for key, lines in by_direction.items():
                # "both_3": both directions, at most 3 tokens away; "forward@harmed": only
                # the target categories of the group "harmed"
                key, _, group = key.partition("@")
                direction, _, scope = key.partition("_")
                label = "TERMINATE" if direction == "terminate" else category.upper()
                for line in lines:
                    variants = expand(line, macros, tokenize)
                    # a set of words per position costs spaCy's Matcher a predicate per
                    # token: worth it only against many variants
                    compact = (compact_pattern(line, macros, tokenize)
                               if len(variants) > COMPACT_FROM
                               and any(not isinstance(x, str) for v in variants for x in v)
                               else None)
                    for variant in variants if compact is None else [[]]:
                        extra: dict[str, Any] = {"direction": directions[direction]}
                        extra["max_scope"] = int(scope) if scope else default_scope
                        if direction in ("terminate", "clause", "pseudo"):
                            # medspaCy limits a scope by a terminator only when their scopes
                            # overlap at an edge (util.tuple_overlaps misses containment): a
                            # terminator's own scope is kept to its neighbours
                            extra["max_scope"] = 1
                        if group:
                            extra["allowed_types"] = {
                                label.upper() for c in context["groups"][group]
                                for label in (f"{c}|{SERIOUS}", f"{c}|{POSSIBLE}", f"cue|{c}",
                                              f"cue|{c}|weak")}
                        if category in context.get("ended_by_a_new_clause", ()):
                            extra["terminated_by"] = {"CLAUSE"}
                        if compact is not None:
                            rule = ConTextRule(line, label, pattern=compact, **extra)
                        elif all(isinstance(x, str) for x in variant):
                            rule = ConTextRule(" ".join(str(x) for x in variant), label, **extra)
                        else:
                            rule = ConTextRule(line, label, pattern=as_token_pattern(variant),
                                               **extra)
                        if rule.literal in seen and not rule.pattern:
                            twice.add(rule.literal)
                        seen.add(rule.literal)
                        context_rules.append(rule)
        if twice:  # one phrase, two rules: medspaCy would keep only one of them
            raise ValueError(f"{context_file}: in two rules: {sorted(twice)}")
        context_pipe: Any = self.nlp.add_pipe(
            "medspacy_context",
            config={"rules": None, "span_attrs": None, "input_span_type": "group",
                    # a modifier inside a target ("not" in "did not survive") does not
                    # modify it (medspaCy's own check), and is no reason to drop the
                    # modifier for the other targets
                    "prune_on_target_overlap": False,
                    # no global window: each scope is the modifier's sentence, cut to its
                    # rule's max_scope (context.yaml)
                    "max_scope": None})
        context_pipe.add(context_rules)
        self.context = context_pipe
        self.rule_count = len(literals) + self.gapped.count + len(context_rules)
        self._matcher = matcher
        self._sentencizer = self.nlp.get_pipe("sentencizer")
        # medspaCy's target matcher runs an empty token Matcher and an empty regex matcher
        # beside its PhraseMatcher, and sets an extension attribute on every span (a rule
        # nothing here reads): its PhraseMatcher and rule labels are called directly, the
        # same matches in the same order
        inner: Any = getattr(matcher, "_TargetMatcher__matcher", None)
        phrases = getattr(inner, "_MedspacyMatcher__phrase_matcher", None)
        if (phrases is None or len(inner._MedspacyMatcher__matcher) != 0
                or inner._MedspacyMatcher__regex_matcher._patterns or inner._prune):
            raise RuntimeError("medspaCy's target matcher is not the one this pipeline knows")
        self._phrases = phrases
        self._labels = {self.nlp.vocab.strings[rule_id]: rule.category
                        for rule_id, rule in inner.rule_map.items()}
        # ConText is read for each target on its own (a modifier's edges to one target do not
        # depend on the others) when no rule caps its targets or judges them by a callback and
        # the graph prunes nothing: then it need only read the sentences a mention can come from
        # (``_mentions``). Checked on the rules as built, so a rule that breaks it turns it off.
        self._context_matcher: Any = getattr(context_pipe, "_ConText__matcher", None)
        self._targets_independent = self._context_matcher is not None and (
            not getattr(context_pipe, "prune_on_target_overlap", True)
            and not getattr(context_pipe, "context_attributes_mapping", None)
            and all(rule.max_targets is None and rule.on_modifies is None
                    for rule in context_rules))

    def doc(self, text: str) -> Any:
        """The processed doc: tokens, sentences, target spans, ConText modifiers (ConText is
        not run on a doc without a target span: it would have nothing to modify)."""
        doc = self._targets(text)
        if not len(doc.spans[self.GROUP]):
            return doc
        return self.context(doc)

    def mentions(self, text: str) -> list[Mention]:
        """Every harm the text reports, serious or possible; denied, hypothetical, prevented,
        historical, someone else's, idiomatic and topical mentions are left out."""
        found: list[Mention] = []
        for chunk in chunks(text):
            found.extend(self._mentions(chunk))
        return _dedupe(found)

    def _targets(self, text: str) -> Any:
        """The doc with its tokens, sentences and target spans (``doc`` without ConText)."""
        from spacy.tokens import Span

        doc = self.nlp.make_doc(normalise(text))
        labels = self._labels
        doc.spans[self.GROUP] = [Span(doc, start, end, label=labels[key])
                                 for key, start, end in self._phrases(doc)]
        doc = self._sentencizer(doc)
        if "\n" in text:
            _line_breaks(doc)
        self.gapped(doc, self.GROUP)
        return doc

    def _mentions(self, text: str) -> list[Mention]:
        """``reference_mentions`` with ConText run only on the sentences a mention can come
        from, and the sentences read from the doc's arrays: the same mentions, in the same
        order (tests/unit/test_harm_fast.py compares the two on the whole corpus)."""
        if not text or not text.strip():
            return []
        if not self._targets_independent:
            return self.reference_mentions(text)
        doc = self._targets(text)
        every = list(doc.spans.get(self.GROUP, []))
        found: list[Mention] = []
        if every:
            sentences = _Sentences(doc, text)
            spans = _without_idioms(every)
            # a sentence with only outcomes and settings reports nothing, whatever ConText
            # says of them (they complete a cue or place a harm): ConText is not run on it
            reported = {sentences.of(span)[0] for span in spans
                        if span.label_.split(_LABEL_SEP)[0] not in _SUPPORTING}
            # a sentence around a cue's with an outcome in it may complete the cue
            # (``_complete_across``), so ConText reads it too
            outcomes = {sentences.of(span)[0] for span in spans if _is_outcome(span)}
            for span in spans:
                if outcomes and span.label_.startswith("cue" + _LABEL_SEP):
                    n = sentences.index(span.start)
                    reported.update(outcomes.intersection(
                        sentences.starts[max(0, n - OUTCOME_SENTENCES_BEFORE):
                                         n + 1 + OUTCOME_SENTENCES_AFTER]))
            if reported:
                return self._judged(text, doc, every, spans, reported, sentences)
        if self.model is not None:  # no sentence can report a harm: the model reads each
            for sent in doc.sents:
                found.extend(self._second_opinion(text, sent, []))
        return _dedupe(found)

    def _judged(self, text: str, doc: Any, every: list[Any], spans: list[Any],
                reported: set[int], sentences: _Sentences) -> list[Mention]:
        """The mentions of a piece some of whose sentences (``reported``) may report a harm:
        ConText on those, each judged, the model on the sentences that assert nothing."""
        # every span of those sentences, idioms too: a span shares its modifiers with any
        # span of the same characters (spaCy keys them by offsets)
        self._context(doc, [span for span in every if sentences.of(span)[0] in reported],
                      sentences)
        found: list[Mention] = []
        by_sentence: dict[int, tuple[list[Any], list[str], int]] = {}
        for span in spans:
            start, end = sentences.of(span)
            if start in reported:
                group = by_sentence.setdefault(start, ([], [], end))
                group[0].append(span)
                group[1].append(sentences.evidence(start, end))
        judged_by_sentence = {start: _judge_sentence(text, sentence_spans, texts)
                              for start, (sentence_spans, texts, _) in by_sentence.items()}
        bounds = sentences.spans()
        checked_text = _complete_across(
            text, [start for start, _ in bounds], judged_by_sentence,
            {start: spans for start, (spans, _, _) in by_sentence.items()},
            lambda start: sentences.evidence(*sentences.bounds(sentences.index(start))),
            lambda start, later: text[sentences.idx[start]:sentences.idx[later]])
        for start, (_, _, end) in by_sentence.items():
            judged = judged_by_sentence[start]
            if self.model is not None:
                judged = self._checked(checked_text.get(start) or sentences.text(start, end),
                                       judged)
            judged_by_sentence[start] = judged
            found.extend(judged)
        if self.model is not None:
            for start, end in bounds:
                judged = judged_by_sentence.get(start, [])
                if _unhedged(judged):
                    found.extend(self._opinion(sentences.text(start, end), judged))
        return _dedupe(found)

    def _context(self, doc: Any, targets: list[Any], sentences: _Sentences) -> None:
        """medspaCy's ConText (``ConText.__call__``) on ``targets``: its own matcher, modifiers,
        ``limit_scope`` and ``modifies``, in its order, with the calls that cannot change
        anything left out. A modifier's scope lies in its sentence (the component has no
        window), so when no modifier runs over a sentence break, two modifiers in different
        sentences never limit each other's scope (they meet at most at an empty edge, which
        moves neither), and a modifier modifies no target outside its sentence: each pair is
        tried within a sentence only. A modifier over a break: every pair, as medspaCy does."""
        from medspacy.context import ConTextGraph, ConTextModifier

        strings = self.nlp.vocab.strings
        rule_map = self._context_matcher.rule_map
        modifiers: list[Any] = []
        sentence_of: list[int] = []
        crossing = False
        for match_id, start, end in self._context_matcher(doc):
            rule = rule_map[strings[match_id]]
            first, last = sentences.index(start), sentences.index(end - 1)
            crossing = crossing or first != last
            scope = _scope(rule, start, end, *sentences.bounds(first))
            modifiers.append(ConTextModifier(rule, start, end, doc, scope_start=scope[0],
                                             scope_end=scope[1], max_scope=None))
            sentence_of.append(first)
        graph = ConTextGraph(prune_on_modifier_overlap=False)
        graph.targets, graph.modifiers = targets, modifiers
        if crossing:
            graph.update_scopes()
            graph.apply_modifiers()
        else:
            by_sentence: dict[int, list[Any]] = {}
            for modifier, n in zip(modifiers, sentence_of, strict=True):
                by_sentence.setdefault(n, []).append(modifier)
            for group in by_sentence.values():  # ConTextGraph.update_scopes, within a sentence
                for i in range(len(group) - 1):
                    for j in range(i + 1, len(group)):
                        group[i].limit_scope(group[j])
                        group[j].limit_scope(group[i])
            for target in targets:  # ConTextGraph.apply_modifiers, within a sentence
                for n in range(sentences.index(target.start),
                               sentences.index(max(target.end - 1, target.start)) + 1):
                    for modifier in by_sentence.get(n, ()):
                        if modifier.modifies(target):
                            modifier.modify(target)
            edges = []
            for modifier in modifiers:
                modifier.reduce_targets()
                edges += [(target, modifier) for target in modifier._targets]
            graph.edges = edges
        for target, modifier in graph.edges:
            target._.modifiers += (modifier,)
        doc._.context_graph = graph

    def reference_mentions(self, text: str) -> list[Mention]:
        """The mentions of one piece as the pipeline is written: every stage on every span
        (ConText on the whole doc, spaCy's own sentence spans). ``_mentions`` is this, faster;
        the equivalence tests hold the two to the same output."""
        if not text or not text.strip():
            return []
        doc = self.doc(text)
        spans = _without_idioms(list(doc.spans.get(self.GROUP, [])))
        found: list[Mention] = []
        by_sentence: dict[int, list[Any]] = {}
        for span in spans:
            by_sentence.setdefault(span.sent.start, []).append(span)
        judged_by_sentence = {
            start: _judge_sentence(text, sentence_spans,
                                   [_sentence_text(text, span) for span in sentence_spans])
            for start, sentence_spans in by_sentence.items()}
        sents = {sent.start: sent for sent in doc.sents}
        checked_text = _complete_across(
            text, list(sents), judged_by_sentence, by_sentence,
            lambda start: _sentence_text(text, sents[start]),
            lambda start, later: text[sents[start].start_char:sents[later].start_char])
        for start, sentence_spans in by_sentence.items():
            judged = judged_by_sentence[start]
            if self.model is not None:
                sent = sentence_spans[0].sent
                judged = self._checked(
                    checked_text.get(start) or text[sent.start_char:sent.end_char].strip(),
                    judged)
            judged_by_sentence[start] = judged
            found.extend(judged)
        if self.model is not None:
            for sent in doc.sents:
                judged = judged_by_sentence.get(sent.start, [])
                if _unhedged(judged):
                    found.extend(self._second_opinion(text, sent, judged))
        return _dedupe(found)

    def _checked(self, sentence: str, judged: list[Mention]) -> list[Mention]:
        """The rules' serious findings of a sentence the model reads as ordinary feedback
        (harm score under ``veto``) are kept for the quality team's review: possible, the
        score beside the rules' own context. A phrase the lexicon has not learnt in everyday
        wording ("we dropped the baby off", "my bank card was declined") is the usual false
        serious finding on ordinary text, and the model, trained on ordinary feedback as well
        as on harm, reads those sentences as what they are (tools/harm_model.py)."""
        model = self.model
        if model is None or model.veto <= 0 or all(m.tier != SERIOUS for m in judged):
            return judged
        harm = harm_of_finding(model, sentence, judged, enough=model.veto)
        if harm >= model.veto:
            return judged
        return [replace(m, tier=POSSIBLE, context=f"{m.context}; {VETO_CONTEXT}, score"
                        f" {harm:.2f}") if m.tier == SERIOUS else m for m in judged]

    def _second_opinion(self, original: str, sent: Any, judged: list[Mention]) -> list[Mention]:
        """``_opinion`` of a spaCy sentence span."""
        return self._opinion(original[sent.start_char:sent.end_char].strip(), judged)

    def _opinion(self, sentence: str, judged: list[Mention]) -> list[Mention]:
        """A sentence the rules make no serious finding of, read by the model: serious when
        it scores it a serious harm at ``serious_threshold`` or more and names its category
        with ``category_confidence`` or more (the rules found nothing, or only a possible term
        with no hedge: "unqualified term", "no outcome stated"); otherwise, when the rules
        found nothing, possible at ``threshold`` or more. The evidence: the words that weighed
        most, the category, the scores."""
        model = self.model
        assert model is not None
        if not sentence:
            return []
        harm, serious = model.scores(sentence)
        promoted: Opinion | None = None
        if serious >= model.serious_threshold:
            promoted = model.serious_opinion(sentence)
            if promoted.category_probability < model.category_confidence:
                promoted = None
        if promoted is None and (judged or harm < model.threshold):
            return []
        if len(sentence) > MAX_SENTENCE_EVIDENCE:
            sentence = sentence[:MAX_SENTENCE_EVIDENCE - 1] + "\u2026"
        if promoted is not None:
            terms = ", ".join(f"'{term}'" for term in promoted.terms)
            rules = ("; the rules: " + ", ".join(f"{m.category} '{m.phrase}' ({m.context})"
                                                  for m in judged)) if judged else ""
            return [Mention(f"{SERIOUS_CONTEXT} ({terms})" if terms else SERIOUS_CONTEXT,
                            promoted.category,
                            f"{SERIOUS_CONTEXT}, score {promoted.score:.2f}, {promoted.category}"
                            f" {promoted.category_probability:.2f} (no rule found it serious"
                            f"{rules})", sentence, SERIOUS)]
        opinion = model.opinion(sentence)
        terms = ", ".join(f"'{term}'" for term in opinion.terms)
        return [Mention(f"{MODEL_CONTEXT} ({terms})" if terms else MODEL_CONTEXT,
                        opinion.category, f"{MODEL_CONTEXT}, score {opinion.score:.2f}"
                        " (no rule matched)", sentence, POSSIBLE)]


# labels of the spans that only support a mention: an outcome completes a cue, a setting
# places a harm; alone they report nothing
_SUPPORTING = ("outcome", "setting")


class _Sentences:
    """The sentences of a doc read from its arrays: the start of each (what ``Span.sent``
    finds by walking the tokens) and the characters of each, for a span's sentence."""

    def __init__(self, doc: Any, original: str) -> None:
        from spacy.attrs import IDX, LENGTH, SENT_START

        array = doc.to_array([SENT_START, IDX, LENGTH])
        self.starts: list[int] = (array[:, 0] == 1).nonzero()[0].tolist()
        if not self.starts or self.starts[0] != 0:
            self.starts.insert(0, 0)
        self.idx: list[int] = array[:, 1].tolist()
        self.length: list[int] = array[:, 2].tolist()
        self.size = len(doc)
        self.original = original
        self._evidence: dict[tuple[int, int], str] = {}

    def of(self, span: Any) -> tuple[int, int]:
        """(start, end) of ``span.sent``: the sentence the span starts in (a span over a
        sentence break has the first sentence only, as spaCy gives it)."""
        starts = self.starts
        after = bisect_right(starts, span.start)
        return starts[after - 1], starts[after] if after < len(starts) else self.size

    def index(self, token: int) -> int:
        """The number of the sentence a token is in."""
        return bisect_right(self.starts, token) - 1

    def bounds(self, n: int) -> tuple[int, int]:
        """(start, end) of sentence ``n``."""
        starts = self.starts
        return starts[n], starts[n + 1] if n + 1 < len(starts) else self.size

    def text(self, start: int, end: int) -> str:
        """The sentence's text, stripped (``original[sent.start_char:sent.end_char]``)."""
        last = end - 1
        return self.original[self.idx[start]:self.idx[last] + self.length[last]].strip()

    def evidence(self, start: int, end: int) -> str:
        """``_sentence_text`` of a span whose sentence is (start, end)."""
        key = (start, end)
        text = self._evidence.get(key)
        if text is None:
            text = self.text(start, end)
            if len(text) > MAX_SENTENCE_EVIDENCE:
                text = text[:MAX_SENTENCE_EVIDENCE - 1] + "\u2026"
            self._evidence[key] = text
        return text

    def spans(self) -> list[tuple[int, int]]:
        """(start, end) of each sentence, as ``doc.sents`` gives them."""
        starts = self.starts
        return [(start, starts[n + 1] if n + 1 < len(starts) else self.size)
                for n, start in enumerate(starts)]


_BULLETS = frozenset({"-", "*", "\u2022"})


def _scope(rule: Any, start: int, end: int, sent_start: int, sent_end: int) -> tuple[int, int]:
    """The scope medspaCy gives a modifier (``ConTextModifier.__set_scope`` with no window):
    its sentence, on its rule's side, cut to the rule's max_scope."""
    direction = rule.direction.lower()
    most = rule.max_scope
    if direction == "forward":
        scope_start, scope_end = end, sent_end
        if most is not None and scope_end - scope_start > most:
            scope_end = end + most
    elif direction == "backward":
        scope_start, scope_end = sent_start, start
        if most is not None and scope_end - scope_start > most:
            scope_start = start - most
    else:
        scope_start, scope_end = sent_start, sent_end
        if most is not None and start - scope_start > most:
            scope_start = start - most
        if most is not None and scope_end - end > most:
            scope_end = end + most
    return scope_start, scope_end


def _line_breaks(doc: Any) -> None:
    """A blank line, or a line break before a list item ("- ", "* ", "2. ", "2) "), ends a
    sentence as a full stop does (spaCy's sentencizer reads punctuation only): "My neighbour's
    dog died" and "Mum died on the ward" on lines of their own are two sentences. A single line
    break elsewhere is not (a pasted e-mail wraps its lines mid-sentence: "she did not" /
    "die")."""
    last = len(doc) - 1
    for token in doc:
        if token.i == last or not token.is_space or "\n" not in token.text:
            continue
        after = doc[token.i + 1]
        if (token.text.count("\n") >= 2 or after.text in _BULLETS
                or (after.is_digit and token.i + 2 <= last
                    and doc[token.i + 2].text in (".", ")"))):
            after.is_sent_start = True


CHUNK_CHARS = 800
# where a long text may be cut into pieces: after a full stop, or at a line break
_SENTENCE_END = re.compile(r"((?<=[.!?])\s+|\s*\n\s*)")


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """A long text in pieces of whole sentences of about ``size`` characters: ConText's work
    grows with the square of the modifiers in a piece, and each piece is a short hold of the
    GIL (or of the event loop). A sentence longer than ``size`` stays whole."""
    if len(text) <= size:
        return [text]
    pieces: list[str] = []
    current = ""
    parts = _SENTENCE_END.split(text)  # sentence, the break after it, sentence, ...
    for n in range(0, len(parts), 2):
        sentence = parts[n]
        if current and len(current) + len(sentence) + 1 > size:
            pieces.append(current)
            current = sentence
        else:  # the break kept: a blank line still ends the sentence inside the piece
            current = f"{current}{parts[n - 1]}{sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


def _without_idioms(spans: list[Any]) -> list[Any]:
    """An idiom hides the harm words inside it ("my phone died"), though not a concept of
    exactly its words ("hit her head" hides the abuse of "hit her", not the head injury that
    is the whole phrase); of the spans left, a span
    inside a longer one of the same category adds nothing ("never walk again" inside "will
    never walk again", whose "will" is then no hedge)."""
    idioms = [(s.start, s.end) for s in spans if s.label_ == "idiom"]
    kept = [(s, s.start, s.end, _kind(s)) for s in spans if s.label_ != "idiom"
            and not any(i <= s.start < j and (s.start, s.end) != (i, j) for i, j in idioms)]
    serious = {(s.start, s.end, k) for s, _, _, k in kept
               if s.label_.endswith(_LABEL_SEP + SERIOUS)}
    # a cue is kept inside a longer cue: a gapped cue ("given _{0,8} twice") may reach over
    # the outcome that completes a shorter one ("given instead of 1ml ... needed naloxone")
    return [s for s, start, end, kind in kept
            if s.label_.startswith("cue" + _LABEL_SEP)
            or not any(k == kind and o_start <= start and end <= o_end
                       and o_end - o_start > end - start
                       # a possible span does not hide a serious one it starts with ("operated
                       # on the wrong" in the possible "operated on the wrong side"); it does
                       # hide one it qualifies in front ("eclampsia" in "pre eclampsia")
                       and not (start == o_start and (start, end, kind) in serious
                                and (o_start, o_end, k) not in serious)
                       for _, o_start, o_end, k in kept)]


def _kind(span: Any) -> str:
    """The category of a target span ("death" of "death|serious", "neglect" of "cue|neglect")."""
    parts = span.label_.split(_LABEL_SEP)
    return parts[1] if parts[0] == "cue" else parts[0]


def _assertion(span: Any) -> tuple[str | None, str | None, list[tuple[int, int]]]:
    """(the dropping category and its words, or None; the doubting category and its words;
    where each dropping modifier is)."""
    drop: str | None = None
    doubt: str | None = None
    dropped_by: list[tuple[int, int]] = []
    for modifier in span._.modifiers:
        category = modifier.category.lower()
        start, end = modifier.modifier_span
        if span.start <= start and end <= span.end:
            continue  # inside the target ("never" in "was never achieved"): part of the concept
        words = span.doc[start:end].text
        if category in DROPPING:
            dropped_by.append((start, end))
            if drop is None:
                drop = f"{category}: {words!r}"
        elif category in DOUBTING and doubt is None:
            doubt = f"{category}: {words!r}"
    return drop, doubt, dropped_by


def _new_clause(between: Any) -> bool:
    """Whether the words between a cue and an outcome start a new clause (a comma, a
    semicolon, "and", "then")."""
    return any(t.is_punct or t.lower_ in ("and", "then", "so") for t in between)


def _sentence_text(original: str, span: Any) -> str:
    sent = span.sent
    text = original[sent.start_char:sent.end_char].strip()
    if len(text) > MAX_SENTENCE_EVIDENCE:
        text = text[:MAX_SENTENCE_EVIDENCE - 1] + "\u2026"
    return text


def _judge_sentence(original: str, spans: list[Any], sentences: list[str]) -> list[Mention]:
    """The mentions of one sentence's spans (``sentences``: each span's sentence text, as
    ``_sentence_text`` gives it)."""
    asserted: list[tuple[Any, str | None, str]] = []
    # outcomes denied only by words that a cue holds ("NEWS2 8 NOT escalated for 4h, pt
    # arrested": the "not" is the failure, not a denial of the arrest)
    denied_outcomes: list[tuple[Any, str | None, list[tuple[int, int]]]] = []
    for span, sentence in zip(spans, sentences, strict=True):
        drop, doubt, dropped_by = _assertion(span)
        if drop is None:
            asserted.append((span, doubt, sentence))
        elif _is_outcome(span):
            denied_outcomes.append((span, doubt, dropped_by))
    outcomes = [(s, d) for s, d, _ in asserted if _is_outcome(s)]
    settings = {s.label_.split(_LABEL_SEP)[1]: s for s, _, _ in asserted
                if s.label_.startswith("setting" + _LABEL_SEP)}
    found: list[Mention] = []
    for span, doubt, sentence in asserted:
        parts = span.label_.split(_LABEL_SEP)
        phrase = original[span.start_char:span.end_char]
        if parts[0] in _SUPPORTING:
            continue
        if parts[0] == "cue":
            category, weak = parts[1], parts[-1] == "weak"
            outcome = next((o for o in outcomes
                            if not (o[0].start < span.end and span.start < o[0].end)), None)
            if outcome is None:
                outcome = next(((o, d) for o, d, by in denied_outcomes
                                if o.start >= span.end and _new_clause(span.doc[span.end:o.start])
                                and all(span.start <= a and b <= span.end for a, b in by)), None)
            if outcome is not None:
                o_span, o_doubt = outcome
                doubt = doubt or o_doubt
                phrase = f"{phrase} \u2026 {original[o_span.start_char:o_span.end_char]}"
                tier = POSSIBLE if doubt else SERIOUS
            elif weak:
                continue
            else:
                tier, doubt = POSSIBLE, doubt or NO_OUTCOME
            found.append(Mention(phrase, category, doubt or "affirmed", sentence, tier))
            continue
        category, rule_tier = parts[0], parts[1]
        tier = POSSIBLE if (doubt or rule_tier == POSSIBLE) else SERIOUS
        context = doubt or ("affirmed" if rule_tier == SERIOUS else "unqualified term")
        found.append(Mention(phrase, category, context, sentence, tier))
        setting = settings.get("maternity")
        if setting is not None and category in ("death", "severe_harm", "deterioration"):
            where = original[setting.start_char:setting.end_char]
            found.append(Mention(f"{phrase} ({where})", "maternity", context, sentence, tier))
    return found


def _is_outcome(span: Any) -> bool:
    """An outcome span, or a serious harm (which completes a cue as an outcome does)."""
    return span.label_ == "outcome" or span.label_.endswith(_LABEL_SEP + SERIOUS)


def _complete_across(original: str, order: list[int], judged: dict[int, list[Mention]],
                     spans: dict[int, list[Any]], evidence: Callable[[int], str],
                     between: Callable[[int, int], str]) -> dict[int, str]:
    """Cues left without an outcome in their sentence (``NO_OUTCOME``) completed by an asserted
    outcome in one of the next ``OUTCOME_SENTENCES_AFTER`` sentences, or else in one of the
    ``OUTCOME_SENTENCES_BEFORE`` before: the mention becomes the cue and the outcome, its
    sentence the sentences from the cue's to the outcome's (or the outcome's to the cue's),
    serious (possible when ConText doubts the outcome). ``order``: the start of each sentence
    of the piece, in order; ``judged`` and ``spans`` by sentence start, ``evidence`` the text
    of the sentence starting at a token (``_sentence_text``), ``between`` the original text
    from one sentence's start to another's. Not over a line break: a blank line or a list
    item is another point (``_line_breaks``). Changes
    ``judged`` in place; returns, for each sentence with a mention so completed, the text the
    model's check reads (``_checked``): those sentences together."""
    def outcome_in(other: int) -> tuple[int, Any, str | None] | None:
        return next(((other, span, doubt) for span in spans.get(other, []) if _is_outcome(span)
                     for drop, doubt, _ in [_assertion(span)] if drop is None), None)

    completed: dict[int, str] = {}
    for n, start in enumerate(order):
        mentions = judged.get(start)
        if not mentions or all(m.context != NO_OUTCOME for m in mentions):
            continue
        completing = None
        for after in order[n + 1:n + 1 + OUTCOME_SENTENCES_AFTER]:
            if "\n" in between(start, after):
                break
            if (completing := outcome_in(after)) is not None:
                break
        for before in reversed(order[max(0, n - OUTCOME_SENTENCES_BEFORE):n]):
            if completing is not None or "\n" in between(before, start):
                break
            completing = outcome_in(before)
        if completing is None:
            continue
        other, o_span, o_doubt = completing
        first, last = sorted((n, order.index(other)))
        told = " ".join(evidence(s) for s in order[first:last + 1])
        outcome = original[o_span.start_char:o_span.end_char]
        judged[start] = [
            Mention(f"{m.phrase} \u2026 {outcome}", m.category, o_doubt or "affirmed", told,
                    POSSIBLE if o_doubt else SERIOUS)
            if m.context == NO_OUTCOME else m for m in mentions]
        completed[start] = told
    return completed


# a sentence of fewer words is not checked: a few words' weights are too little for the model
# to overrule the rules ("Mum was assaulted on the ward." scored 0.05: the corpus's hard
# negatives hold many a staff member "assaulted" or "punched")
VETO_MIN_WORDS = 8
_CLAUSE_BREAK = re.compile(r"[,;:()]|\s(?:and|but|then|so|when|after|before|until)\s", re.I)


def harm_of_finding(model: Any, sentence: str, judged: list[Mention],
                    enough: float | None = None) -> float:
    """The model's harm score of a sentence with a serious finding of the rules: the higher
    of the whole sentence's and of each serious phrase's clause (the words between the breaks
    around it: commas, "and", "but", "when" ...), so that a harm told as one clause among
    grievances ("... the parking, the food and the noise, and on the Friday she broke her
    hip") is read in its own words, not drowned by the others. 1.0 (no check) for a sentence
    of fewer than ``VETO_MIN_WORDS`` words. With ``enough``, the whole sentence's score once it
    reaches that (the clauses cannot lower the higher of the two)."""
    if len(model_words(sentence)) < VETO_MIN_WORDS:
        return 1.0
    scores = [model.scores(sentence)[0]]
    if enough is not None and scores[0] >= enough:
        return scores[0]
    for m in judged:
        if m.tier != SERIOUS:
            continue
        first = m.phrase.split(" \u2026 ")[0].split(" (")[0]
        at = sentence.find(first)
        if at < 0:
            continue
        starts = [b.end() for b in _CLAUSE_BREAK.finditer(sentence, 0, at)]
        ends = [b.start() for b in _CLAUSE_BREAK.finditer(sentence, at + len(first))]
        clause = sentence[starts[-1] if starts else 0:ends[0] if ends else len(sentence)]
        scores.append(model.scores(clause)[0])
    return max(scores)


def _unhedged(judged: list[Mention]) -> bool:
    """The model reads a sentence the rules found nothing in, or only possible terms with no
    hedge ("unqualified term", "no outcome stated"): a serious or hedged finding stands."""
    return all(m.tier == POSSIBLE and m.context in UNHEDGED for m in judged)


def _dedupe(mentions: list[Mention]) -> list[Mention]:
    seen: set[tuple[str, str, str]] = set()
    out: list[Mention] = []
    for m in mentions:
        key = (m.category, m.phrase.lower(), m.tier)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


@lru_cache(maxsize=1)
def analyser() -> Analyser:
    """The process's one pipeline (building it takes about 3 s of CPU). Its millions of objects
    (rules, matchers, vocabulary) live as long as the process: they are moved out of the
    garbage collector's reach (``gc.freeze``), or each full collection walked them all and
    held the event loop for 0.5 to 1.2 s (measured in ``tools.bench --only harm``)."""
    _quiet_pyrush()
    built = Analyser()
    gc.collect()
    gc.freeze()
    return built


def _quiet_pyrush() -> None:
    """medspaCy imports PyRuSH, which logs through loguru at DEBUG; its sentence splitter is
    not used here, and loguru must not print anything (a sentence would be in it)."""
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover - loguru comes with medspaCy
        return
    logger.remove()


def mentions(text: str) -> list[Mention]:
    """The harms the text reports (see ``Analyser.mentions``)."""
    return analyser().mentions(text)


def tier_of(found: list[Mention]) -> str | None:
    """The strongest tier of the mentions: serious, possible or None."""
    if any(m.tier == SERIOUS for m in found):
        return SERIOUS
    if found:
        return POSSIBLE
    return None


# -- off the event loop -----------------------------------------------------------------------
# A field is read a piece (``chunks``: whole sentences, about 800 characters) at a time, the
# event loop getting a turn between pieces: a long text never holds the loop for more than one
# piece. ``tools/bench.py --only harm`` compares this with a thread and a process pool.
async def read_harm(text: str) -> list[Mention]:
    """``mentions(text)`` without holding the event loop for more than one piece."""
    pipeline = analyser()
    pieces = chunks(text)
    found: list[Mention] = []
    for n, piece in enumerate(pieces):
        if n:
            await asyncio.sleep(0)
        found.extend(pipeline._mentions(piece))
    return _dedupe(found)
