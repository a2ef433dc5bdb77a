"""The clinical-text harm pipeline (services/quality_monitor/harm): its pattern syntax, each
ConText assertion, the two tiers, the evidence it gives, and the corpus it is measured on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from services.quality_monitor.harm import pipeline
from services.quality_monitor.harm.pipeline import (
    NO_OUTCOME,
    POSSIBLE,
    SERIOUS,
    expand,
    joined,
    mentions,
    normalise,
    positions,
    read_harm,
    shapes,
    tier_of,
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "harm"
TEST_SET_SHA256 = "34551f468899f4a852cbbf7f88565840b6082ad924f5cef6797a1fcab72bfa7e"


def found(text: str) -> set[tuple[str, str]]:
    return {(m.category, m.tier) for m in mentions(text)}


# -- the pattern syntax ------------------------------------------------------------------------

def tokenize(text: str) -> list[object]:
    class Token:
        def __init__(self, t: str) -> None:
            self.lower_ = t.lower()
    return [Token(t) for t in text.replace("n't", " n't").split()]


def test_alternatives_optional_tokens_gaps_and_macros_expand() -> None:
    macros = {"POSS": "his|her"}
    assert expand("broke $POSS hip|arm", macros, tokenize) == [
        ["broke", "his", "hip"], ["broke", "his", "arm"],
        ["broke", "her", "hip"], ["broke", "her", "arm"]]
    assert expand("found? dead", macros, tokenize) == [["found", "dead"], ["dead"]]
    assert expand("left _{0,3} floor", macros, tokenize) == [["left", (0, 3), "floor"]]
    assert expand("did+not survive", macros, tokenize) == [["did", "not", "survive"]]


def test_a_line_keeps_its_alternatives_together_and_each_optional_position_present_or_not(
        ) -> None:
    macros = {"POSS": "his|her"}
    assert shapes("left? $POSS _{0,3} floor", macros, tokenize) == [
        [(("left",),), (("his",), ("her",)), (0, 3), (("floor",),)],
        [(("his",), ("her",)), (0, 3), (("floor",),)]]
    assert shapes("did+not survive", macros, tokenize) == [
        [(("did", "not"),), (("survive",),)]]
    assert positions([(1, 1), (("dead",),), (0, 2), (0, 1), (("in", "bed"),), (2, 2)]) == (
        [(("dead",),), (("in", "bed"),)], [(0, 3)])
    assert positions([(("found",),), (("dead",),)]) == ([(("found",),), (("dead",),)], [(0, 0)])


def test_positions_side_by_side_join_into_one_run_while_it_stays_small() -> None:
    found, dead, poss = (("found",),), (("dead",), ("cold",)), (("his",), ("her",))
    assert joined([found, dead, poss], [(0, 0), (0, 2)]) == (
        [(("found", "dead"), ("found", "cold")), poss], [(0, 2)])
    many = tuple((f"w{i}",) for i in range(pipeline.RUN_UP_TO))
    assert joined([dead, many], [(0, 0)]) == ([dead, many], [(0, 0)])


def _as_runs(words_and_gaps: Sequence[object]) -> tuple[object, ...]:
    """A variant as its runs of words and the gaps between them (leading and trailing gaps
    dropped, gaps side by side added): what a match of it is."""
    out: list[object] = []
    run: list[str] = []
    gap = (0, 0)
    for item in words_and_gaps:
        if isinstance(item, str):
            if not run and out:
                out.append(gap)
            run.append(item)
            gap = (0, 0)
        else:
            if run:
                out.append(tuple(run))
                run = []
            gap = (gap[0] + item[0], gap[1] + item[1])  # type: ignore[index]
    if run:
        out.append(tuple(run))
    return tuple(out)


def test_every_concept_line_as_shapes_stands_for_exactly_its_expanded_variants() -> None:
    """The matcher keeps each line as shapes of word sets (``shapes``, ``positions``,
    ``joined``): every line of concepts.yaml as it is, expanded back, gives the very variants
    ``expand`` gives, so the two match the same texts."""
    import itertools

    import yaml

    concepts = yaml.safe_load(pipeline.CONCEPTS_FILE.read_text())
    macros = concepts.get("macros", {})
    real = pipeline.analyser().nlp.tokenizer
    lines = [line for spec in concepts["categories"].values()
             for kind in ("serious", "possible", "cue") for line in spec.get(kind) or []]
    lines += concepts.get("outcome") or []
    lines += [line for setting in (concepts.get("setting") or {}).values() for line in setting]
    lines += concepts.get("idiom") or []
    assert len(lines) > 500
    gapped = 0
    for line in lines:
        text = line.removeprefix("~ ")
        expected = {_as_runs(v) for v in expand(text, macros, real)}
        got: set[tuple[object, ...]] = set()
        for shape in shapes(text, macros, real):
            sets, gaps = joined(*positions(shape))
            gapped += len(sets) > 1
            for choice in itertools.product(*sets):
                items: list[object] = list(choice[0]) if choice else []
                for words, gap in zip(choice[1:], gaps, strict=True):
                    items += [gap, *words] if gap != (0, 0) else list(words)
                if items:
                    got.add(_as_runs(items))
        assert got == expected, line
    assert gapped > 100


def test_normalising_keeps_offsets() -> None:
    text = "She self-harmed \u2019again\u2019 \u2013 twice"
    assert len(normalise(text)) == len(text)
    assert "self harmed" in normalise(text) and "'again'" in normalise(text)


def test_the_pipeline_is_built_once_per_process() -> None:
    assert pipeline.analyser() is pipeline.analyser()
    assert pipeline.analyser().rule_count > 1_000


def test_the_direct_target_match_is_medspacys_own() -> None:
    """``Analyser.doc`` calls medspaCy's PhraseMatcher itself and skips ConText on a doc with
    no target: the same spans in the same order, and the same modifiers on each, as
    medspaCy's target matcher and ConText run on every doc."""
    analyser = pipeline.analyser()
    texts = [json.loads(line)["text"] for name in ("dev.jsonl", "dev_ordinary.jsonl")
             for line in (CORPUS / name).read_text().splitlines()[::4]]

    def spans(doc: object) -> list[tuple[int, int, str, list[tuple[str, int, int]]]]:
        return [(s.start, s.end, s.label_,
                 [(m.category, *m.modifier_span) for m in s._.modifiers])
                for s in doc.spans.get(analyser.GROUP, [])]  # type: ignore[attr-defined]

    without_target = 0
    for text in texts:
        doc = analyser.nlp.make_doc(normalise(text))
        doc = analyser._sentencizer(analyser._matcher(doc))
        analyser.gapped(doc, analyser.GROUP)
        assert spans(analyser.doc(text)) == spans(analyser.context(doc)), text
        without_target += not spans(doc)
    assert 0 < without_target < len(texts)


# -- a clear event of harm to the patient: serious ---------------------------------------------

@pytest.mark.parametrize("text, category", [
    ("My father died on the ward two days after his operation.", "death"),
    ("He was not revived despite 40 minutes of CPR.", "death"),
    ("Mum fell on the ward and fractured her hip.", "severe_harm"),
    ("A carer slapped my mother across the face.", "abuse"),
    ("Dad was left lying on the floor for four hours.", "neglect"),
    ("The nasogastric tube was placed in the lung and feed was started.", "never_event"),
    ("He tied a ligature around his neck in the ward bathroom.", "self_harm"),
    ("The GP said it was a virus; two days later he was in ITU with sepsis.", "missed_diagnosis"),
    ("Baby was transferred for therapeutic cooling after a difficult delivery.", "maternity"),
    ("His NEWS was 9 for hours and nobody called the outreach team; he arrested.",
     "deterioration"),
    ("The nurse gave her twice the dose of morphine and she stopped breathing.",
     "medication_error"),
])
def test_an_affirmed_harm_is_serious_and_named(text: str, category: str) -> None:
    assert (category, SERIOUS) in found(text)


@pytest.mark.parametrize("text, category", [
    # deaths without "died"
    ("They tried for forty minutes but couldn't get his heart going again.", "death"),
    ("Pt found unresponsive, not for CPR, life pronounced extinct by the night doctor.",
     "death"),
    # harm named by its consequence
    ("He will need to be fed through a tube for the rest of his life.", "severe_harm"),
    # abuse named by what was done
    ("Her nephew has emptied her savings account since he became her appointee.", "abuse"),
    ("The night staff took away his walking frame so he couldn't get up.", "abuse"),
    # neglect by its signs
    ("His lunch was left on the table where he couldn't reach it.", "neglect"),
    # never events in clinical words
    ("Oxygen tubing was attached to the air flowmeter in the bay.", "never_event"),
    # self-harm by method
    ("She swallowed two packets of paracetamol on the ward.", "self_harm"),
    # a missed diagnosis by condition and outcome ("never spotted" is no prevention)
    ("They never spotted the melanoma and it has now spread to his liver.", "missed_diagnosis"),
    ("The GP put her headaches down to stress and the tumour was too big to remove.",
     "missed_diagnosis"),
    # a medication error whose outcome is "could not be woken" (no negation of the outcome)
    ("They gave Dad his morphine twice in one night and he couldn't be woken.",
     "medication_error"),
])
def test_a_harm_in_other_words_is_serious_and_named(text: str, category: str) -> None:
    assert (category, SERIOUS) in found(text)


@pytest.mark.parametrize("text, category", [
    # Care Act psychological abuse: a threat told to the patient as a condition is the threat
    # made, not a feared harm (the "if" is inside it)
    ("The carer warned him that unless he stopped complaining he would be locked in his room.",
     "abuse"),
    ("The night staff told mum if she pressed the buzzer again they would leave her till"
     " morning.", "abuse"),
    # humiliation: a person called by a degrading label
    ("Nurses were heard referring to her as a bed blocker while she was in the room.", "abuse"),
    # neglect: an aid to daily living lost, with what its loss did stated
    ("His dentures were thrown away with a lunch tray and he couldn't eat solid food for ten"
     " days.", "neglect"),
    ("Her hearing aid was lost during the transfer and she became withdrawn.", "neglect"),
    # an unsafe discharge with the harm it did
    ("They sent her home in the middle of the night with no one there and she was readmitted"
     " two days later.", "neglect"),
    ("Discharged at midnight with nobody at home, he fell in the hall.", "neglect"),
])
def test_a_threat_a_degrading_label_a_lost_aid_or_an_unsafe_discharge_with_harm_is_serious(
        text: str, category: str) -> None:
    assert (category, SERIOUS) in found(text)


@pytest.mark.parametrize("text", [
    # advice given as a condition is no threat
    "The nurse told her that if the pain got worse she should ring the bell straight away.",
    "They told mum that if she fell again she could be hurt badly, so to use the frame.",
    "We were told that if the doors were locked at night we should ring the bell.",
    # a name asked for, not a label
    "The staff call her by her first name, as she asked.",
    # an aid lost without a stated consequence stays an unqualified term (possible, below)
    "Mum's dentures were lost but the home replaced them within a week.",
    "Her glasses were lost but she could not tell us which room she had left them in.",
    # a late discharge without harm
    "Mum was discharged home at night but my sister was there and she settled well.",
])
def test_advice_a_chosen_name_a_lost_aid_or_a_late_discharge_alone_is_not_serious(
        text: str) -> None:
    assert tier_of(mentions(text)) != SERIOUS


def test_an_idiom_hides_the_words_inside_it_but_not_a_concept_of_exactly_its_words() -> None:
    assert found("She fell and hit her head on the bedside table.") == {
        ("severe_harm", POSSIBLE)}
    assert ("abuse", SERIOUS) in found("A carer hit her on the arm.")


# -- the hard negatives: no finding ------------------------------------------------------------

@pytest.mark.parametrize("text, why", [
    ("She did not die, thankfully.", "negated"),
    ("There is no evidence that she had been neglected.", "denied over a new clause"),
    ("If the ambulance had been later she would have died.", "hypothetical"),
    ("I'm scared dad will fall and break his hip.", "feared"),
    ("The pharmacist spotted the dose error before it was given.", "prevented"),
    ("She broke her hip in 2019 and now uses a frame.", "historical"),
    ("His dog died last week and he is very low.", "an animal"),
    ("A character in the soap she watches was killed and it upset her.", "fiction"),
    ("The porter hurt his back lifting a patient.", "staff"),
    ("A nurse was assaulted by a patient in the waiting room.", "staff as the victim"),
    ("My phone died so I could not ring the ward.", "idiom"),
    ("The call system died halfway through the night.", "idiom"),
    ("The abuse policy was updated in March.", "topic"),
    ("All staff completed safeguarding training on recognising abuse.", "topic"),
    ("The GP asked about domestic abuse as part of the routine questions.", "topic"),
    ("There was no never event.", "a negated term holding a negation"),
])
def test_what_is_not_harm_to_the_patient_gives_nothing(text: str, why: str) -> None:
    assert mentions(text) == [], why


def test_a_negation_stops_at_a_new_clause() -> None:
    assert ("neglect", SERIOUS) in found("Staff did not notice he was dehydrated.")
    assert ("death", SERIOUS) in found("He did not get his antibiotics and died.")


# -- a modifier's scope ends with its sentence -------------------------------------------------

@pytest.mark.parametrize("first, second, why", [
    # a modifier in the sentence before (forward scopes)
    ("My neighbour's dog died.", "Mum died on the ward.", "someone else's death"),
    ("My father died years ago.", "My mother was left on the floor for hours.", "historical"),
    ("I worried about the new home.", "She fell and broke her hip.", "a fear"),
    ("We were not told.", "She took an overdose on the ward.", "a negation"),
    ("If only we had known.", "She took an overdose on the ward.", "a condition"),
    # a modifier in the sentence after (backward and two-way scopes)
    ("He fractured his hip on the ward.", "No harm came to the other residents.", "no harm"),
    ("Mum died on the ward.", "The complaint about the parking was unfounded.", "unfounded"),
    ("The nurse gave him ten times the dose of morphine.",
     "Nothing serious came of the other complaint.", "nothing serious"),
    # "A&E." ends its sentence (spaCy read it as one token, an abbreviation)
    ("My husband was worried about going to A&E.", "She died two days later.", "after A&E."),
])
def test_a_modifier_leaves_the_other_sentences_of_a_field_alone(
        first: str, second: str, why: str) -> None:
    """A field of several sentences gives what its sentences give one by one: a negation,
    fear, other experiencer or past in one sentence neither drops nor downgrades a harm in
    the next (context.yaml: scopes stop at the sentence end)."""
    assert any(tier == SERIOUS for _, tier in found(first) | found(second)), why
    assert found(f"{first} {second}") == found(first) | found(second), why


@pytest.mark.parametrize("text", [
    "My neighbour's dog died\n\nMum died on the ward",        # a blank line
    "My neighbour's dog died \r\n \r\nMum died on the ward",   # with spaces, Windows ends
    "- my neighbour's dog died\n- mum died on the ward",       # list items
    "* my neighbour's dog died\n* mum died on the ward",
    "\u2022 my neighbour's dog died\n\u2022 mum died on the ward",
    "1) my neighbour's dog died\n2) mum died on the ward",
])
def test_a_blank_line_or_a_list_item_ends_a_sentence(text: str) -> None:
    assert found(text) == {("death", SERIOUS)}
    # in a long text, read in pieces, the break is kept inside its piece
    assert ("death", SERIOUS) in found("The patient waited for a bed. " * 40 + text)


@pytest.mark.parametrize("separator", [" ", "\n\n", "\n- "])
def test_a_field_of_development_sentences_gives_what_they_give_one_by_one(separator: str) -> None:
    """Fields of two to four development sentences at random (never the test set's): a
    field's findings are the union of its sentences' (joined after a full stop, by a blank
    line, or as list items without their stops), but for a cue left without an outcome in its
    sentence, which an outcome in one of the next two sentences or the one before completes
    (after a full stop only: a blank line or a list item is another point)."""
    rows = [str(row["text"]).strip() for row in load("dev.jsonl") + load("dev_extra.jsonl")]
    if separator != " ":
        rows = [text.rstrip(".!?") for text in rows]
    else:
        rows = [text if text[-1] in ".!?" else f"{text}." for text in rows]
    pick = random.Random(15)
    differ = []
    for _ in range(150):
        texts = pick.sample(rows, pick.randint(2, 4))
        union = set().union(*(found(text) for text in texts))
        field = found(separator.join(texts))
        cues = {m.category for text in texts for m in mentions(text)
                if m.context == NO_OUTCOME} if separator == " " else set()
        if not (field - union <= {(c, SERIOUS) for c in cues}
                and union - field <= {(c, POSSIBLE) for c in cues}):
            differ.append(texts)
    assert differ == []


@pytest.mark.parametrize(("text", "completed"), [
    ("EPU scan didn't pick up the ectopic. I came back with it ruptured and lost a tube.", True),
    ("The GP missed the diagnosis. She ended up on ITU.", True),
    # two sentences between: still the same account
    ("The GP missed the diagnosis. We complained twice. She ended up on ITU.", True),
    # or, else, in the sentence just before
    ("She ended up on ITU. The GP had missed the diagnosis.", True),
    # the outcome denied, someone else's, too far on, or after a blank line: not completed
    ("The GP missed the diagnosis. Thankfully she never needed ITU.", False),
    ("The GP missed the diagnosis. Her sister ended up on ITU last year.", False),
    ("The GP missed the diagnosis. We complained. We wrote. We rang. She ended up on ITU.",
     False),
    ("The GP missed the diagnosis.\n\nShe ended up on ITU.", False),
    ("She did not need ITU. The GP missed the diagnosis.", False),
    ("She ended up on ITU. We complained. The GP missed the diagnosis.", False),
    ("She ended up on ITU.\n\nThe GP missed the diagnosis.", False),
])
def test_an_outcome_in_a_later_sentence_completes_a_cue(text: str, completed: bool) -> None:
    """A failure told in one sentence and its outcome in the next ("... didn't pick up the
    ectopic. I came back with it ruptured") or the one before: serious, the evidence every
    sentence from the one to the other."""
    found_here = [m for m in mentions(text) if m.category == "missed_diagnosis"]
    assert found_here
    if completed:
        serious = [m for m in found_here if m.tier == SERIOUS]
        assert serious and all("\u2026" in m.phrase for m in serious)
        assert all(m.sentence == text for m in serious)
    else:
        assert {m.tier for m in found_here} == {POSSIBLE}
        assert {m.context for m in found_here} == {NO_OUTCOME}


def test_a_single_line_break_does_not_end_a_sentence() -> None:
    """A pasted e-mail wraps its lines mid-sentence: the negation reaches over the break."""
    assert found("She did not\ndie on the ward.") == set()


def test_inside_its_sentence_a_scope_still_ends_after_max_scope_tokens() -> None:
    assert ("severe_harm", SERIOUS) in found(
        "I was worried about the parking, the food, the noise, the heat and the visiting hours"
        " that week and on the Friday she broke her hip.")


def test_a_stop_after_a_and_e_ends_the_sentence_and_leaves_the_word_to_the_rules() -> None:
    [m] = [m for m in mentions("She was sent home from A+E. She died two days later.")
           if m.category == "death"]
    assert m.sentence == "She died two days later."
    assert [t.text for t in pipeline.analyser().nlp.make_doc("seen in A&E.")] == [
        "seen", "in", "A&E", "."]


# -- weaker evidence: possible -----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "I think a carer may have hit mum but she cannot tell us.",           # a hedge
    "Possible fracture of the wrist after a fall, not yet confirmed.",     # a hedge
    "Concerns raised about abuse at the home.",                            # an unqualified term
    "Someone on the ward self harmed last night.",                         # uncertain experiencer
    "Delayed diagnosis of cancer; she has now started treatment.",        # a miss, no outcome
    # the hedged complaint of tests/integration/test_harm_review.py: abuse by what was done
    # ("pushed by one of the carers"), hedged, and bruises nobody can explain
    "We think mum may have been pushed by one of the carers, she has bruises on her arms"
    " that nobody can explain.",
])
def test_weaker_evidence_is_possible_not_serious(text: str) -> None:
    assert tier_of(mentions(text)) == POSSIBLE


def test_each_mention_carries_the_evidence_a_clinician_checks() -> None:
    text = "The ward was busy. The carer pushed him back into his chair by his chest."
    [m] = [m for m in mentions(text) if m.category == "abuse"]
    assert m.as_json() == {
        "phrase": "pushed him", "category": "abuse", "context": "affirmed", "tier": SERIOUS,
        "sentence": "The carer pushed him back into his chair by his chest."}
    hedged = mentions("We think mum may have been neglected.")[0]
    assert hedged.tier == POSSIBLE and hedged.context.startswith("possible:")


async def test_a_long_text_is_read_off_the_event_loop() -> None:
    text = "The patient waited for a bed. " * 200 + "She died on the trolley."
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    result = await read_harm(text)
    ticker.cancel()
    assert ("death", SERIOUS) in {(m.category, m.tier) for m in result}
    assert ticks > 1, "the loop ran while the text was read"
    assert await read_harm("She died.") == mentions("She died.")


# -- the corpus --------------------------------------------------------------------------------

def load(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (CORPUS / name).read_text().splitlines() if line]


def in_test_set(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 2 == 0


def test_the_test_set_is_the_one_committed_before_tuning() -> None:
    assert hashlib.sha256((CORPUS / "test.jsonl").read_bytes()).hexdigest() == TEST_SET_SHA256


def test_the_corpus_is_large_labelled_split_by_hash_and_covers_every_category() -> None:
    dev, test = load("dev.jsonl"), load("test.jsonl")
    rows = dev + test
    assert len(rows) >= 1_000
    assert len({r["text"] for r in rows}) == len(rows), "duplicate sentences"
    assert all(not in_test_set(str(r["text"])) for r in dev)
    assert all(in_test_set(str(r["text"])) for r in test)
    for r in rows:
        assert {"text", "tier", "category", "subtype", "context", "pass"} == set(r)
        assert r["tier"] in ("serious", "possible", "none")
    positives = Counter(r["category"] for r in rows if r["tier"] != "none")
    assert set(positives) == set(pipeline.CATEGORIES)
    assert min(positives.values()) >= 60, positives
    negatives = Counter(r["context"] for r in rows if r["tier"] == "none")
    for context in ("negated", "hypothetical", "prevented", "historical", "other_experiencer",
                    "idiom", "topic"):
        assert negatives[context] >= 15, (context, negatives)
    abuse = Counter(r["subtype"] for r in rows if r["category"] == "abuse" and r["tier"] != "none")
    assert set(abuse) >= {"physical", "sexual", "financial", "psychological", "domestic",
                          "modern_slavery", "discriminatory", "organisational"}


def test_the_development_set_meets_the_targets() -> None:
    """The test set is measured by ``make eval``, not here: a unit test on it would invite
    tuning on it. The development sentences (the split's half and the later passes) must
    keep what tuning reached."""
    from tools.eval import dev_passes, evaluate

    later = [row for path in dev_passes() for row in load(path.name)]
    assert later, "the later development passes (dev_pass*.jsonl)"
    report = evaluate(load("dev.jsonl") + load("dev_extra.jsonl") + later)
    assert report.serious.recall >= 0.95 and report.serious.precision >= 0.90
    assert report.serious_caught.recall >= 0.97


def test_a_held_out_pass_is_not_among_the_development_sentences() -> None:
    """Passes 17, 20, 26, 31 and 35 are measured alone (``--corpus``), never tuned on: ``--dev`` and the
    targets above leave them out, so their misses are not printed where the rules are tuned."""
    from tools.eval import HELD_OUT_PASSES, dev_passes

    for name in ("dev_pass17.jsonl", "dev_pass20.jsonl", "dev_pass26.jsonl", "dev_pass31.jsonl",
                 "dev_pass35.jsonl"):
        assert (CORPUS / name).exists() and name in HELD_OUT_PASSES
    names = {path.name for path in dev_passes()}
    assert names and not names & set(HELD_OUT_PASSES)
