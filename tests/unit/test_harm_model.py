"""The harm pipeline's statistical second opinion (services/quality_monitor/harm/model.py): what
it raises, the evidence it gives, what it never does, and the data it was (not) trained on."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from services.quality_monitor.harm import model as harm_model_module
from services.quality_monitor.harm.model import (
    MODEL_CONTEXT,
    SERIOUS_CONTEXT,
    VETO_CONTEXT,
    HarmModel,
    features,
    harm_model,
)
from services.quality_monitor.harm.pipeline import (
    CATEGORIES,
    POSSIBLE,
    SERIOUS,
    Analyser,
    analyser,
    harm_of_finding,
    mentions,
)
from tools import harm_model as build_tool

CORPUS = Path(__file__).resolve().parent.parent / "data" / "harm"
# the rules find nothing here (no lexicon names wandering off or a canal); the model does
MISSED_BY_THE_RULES = ("They let her wander out of the unit at 3am and the police found her"
                       " in the canal.")
# written for these tests (in no corpus file): the rules find nothing in the first and only a
# weaker term stated plainly ("cannot walk": possible) in the second; the model reads both as
# a serious harm and names the category
NOTHING_FOUND = ("His catheter bag was full to bursting, his water jug was empty and he had been"
                 " left in the same chair since breakfast.")
WEAKER_TERM = ("The home kept her in bed for weeks so she couldn't wander and now she cannot"
               " walk at all.")


@lru_cache(maxsize=1)
def rules_alone() -> Analyser:
    """The rules without the model, built once for the module (a build takes seconds)."""
    return Analyser(model=False)


@contextmanager
def reading_with(model: HarmModel) -> Iterator[Analyser]:
    """The rules of ``rules_alone()`` with ``model`` as their second opinion, for a while."""
    pipeline = rules_alone()
    pipeline.model = model
    try:
        yield pipeline
    finally:
        pipeline.model = None


def test_features_are_words_word_pairs_and_character_grams_of_each_word() -> None:
    got = features("Pt's NG-tube")
    assert {"w pt's", "w ng", "w tube", "w pt's ng", "w ng tube"} <= set(got)
    assert {" n", "ng", "g ", " ng", "ng ", " ng "} <= set(got)
    assert " tu" in got and "ube " in got
    assert not any(" " in g.strip() and not g.startswith("w ") for g in got), \
        "a character n-gram never crosses words"


def test_a_sentence_the_rules_pass_over_is_raised_for_review_with_its_evidence() -> None:
    assert rules_alone().mentions(MISSED_BY_THE_RULES) == []
    model = harm_model()
    # the model reads it as a serious harm but is not sure of the category (neglect or
    # abuse?): a serious finding must name its category, so it stays for review
    assert model.serious_score(MISSED_BY_THE_RULES) >= model.serious_threshold
    assert model.serious_opinion(MISSED_BY_THE_RULES).category_probability < \
        model.category_confidence
    [m] = mentions(MISSED_BY_THE_RULES)
    assert m.tier == POSSIBLE
    assert m.category in CATEGORIES
    assert m.sentence == MISSED_BY_THE_RULES
    assert m.phrase.startswith(MODEL_CONTEXT) and "wander" in m.phrase  # the words that weighed
    found = re.fullmatch(rf"{MODEL_CONTEXT}, score ([01]\.[0-9][0-9]) \(no rule matched\)",
                         m.context)
    assert found, m.context
    score = float(found[1])
    assert score >= harm_model().threshold


def test_a_sentence_the_rules_pass_over_is_serious_when_the_model_is_sure_of_harm_and_category(
) -> None:
    assert rules_alone().mentions(NOTHING_FOUND) == []
    [m] = mentions(NOTHING_FOUND)
    assert (m.tier, m.category, m.sentence) == (SERIOUS, "neglect", NOTHING_FOUND)
    assert m.phrase.startswith(SERIOUS_CONTEXT) and "bursting" in m.phrase  # its words
    # "model: serious harm wording, score 0.92, neglect 0.98 (no rule found it serious)"
    found = re.fullmatch(rf"{SERIOUS_CONTEXT}, score ([0-9.]+), (\w+) ([0-9.]+)"
                         r" \(no rule found it serious\)", m.context)
    assert found, m.context
    model = harm_model()
    assert float(found[1]) >= model.serious_threshold
    assert found[2] == "neglect" and float(found[3]) >= model.category_confidence


def test_a_weaker_term_stated_plainly_is_serious_when_the_model_is_sure() -> None:
    rules = rules_alone().mentions(WEAKER_TERM)
    assert rules and {(m.tier, m.context) for m in rules} == {(POSSIBLE, "unqualified term")}
    got = mentions(WEAKER_TERM)
    [m] = [m for m in got if m.tier == SERIOUS]
    assert m.category == "neglect" and m.phrase.startswith(SERIOUS_CONTEXT)
    assert "the rules: " in m.context and "'cannot walk' (unqualified term)" in m.context
    assert set(rules) <= set(got), "the rules' own mentions are kept beside it"


def test_a_hedged_rule_mention_is_never_made_serious_by_the_model() -> None:
    hedged = "The nurse said he may have been given his insulin twice and was found unresponsive."
    rules = rules_alone().mentions(hedged)
    assert rules and all(m.tier == POSSIBLE for m in rules)
    assert "possible: 'may have'" in {m.context for m in rules}
    # a model that would promote it (threshold lowered below its score) still does not: the
    # rules' hedge stands
    spec = json.loads(harm_model_module.MODEL_FILE.read_text())
    eager = HarmModel(dict(spec, serious_threshold=0.5))
    assert eager.serious_score(hedged) >= 0.5
    assert eager.serious_opinion(hedged).category_probability >= eager.category_confidence
    with reading_with(eager) as pipeline:
        assert pipeline.mentions(hedged) == rules


def test_with_the_serious_threshold_out_of_reach_the_model_only_raises_for_review() -> None:
    spec = json.loads(harm_model_module.MODEL_FILE.read_text())
    rules = rules_alone().mentions(WEAKER_TERM)
    with reading_with(HarmModel(dict(spec, serious_threshold=2.0))) as pipeline:
        [m] = pipeline.mentions(NOTHING_FOUND)
        assert (m.tier, m.phrase.startswith(MODEL_CONTEXT)) == (POSSIBLE, True)
        assert pipeline.mentions(WEAKER_TERM) == rules


def test_both_scores_come_from_one_walk_and_match_each_alone() -> None:
    model = harm_model()
    for text in (NOTHING_FOUND, WEAKER_TERM, MISSED_BY_THE_RULES, "The car park was full."):
        harm, serious = model.scores(text)
        assert harm == model.score(text) and serious == model.serious_score(text)
        assert abs(model.opinion(text).score - harm) < 1e-9
        assert abs(model.serious_opinion(text).score - serious) < 1e-9
    assert model.serious_score(NOTHING_FOUND) > model.serious_score("The car park was full.")


def test_only_the_sentence_the_rules_pass_over_is_read_by_the_model() -> None:
    text = f"She died on the trolley. {MISSED_BY_THE_RULES} The car park was full."
    got = mentions(text)
    assert [(m.tier, m.sentence) for m in got if m.context.startswith(MODEL_CONTEXT)] == [
        (POSSIBLE, MISSED_BY_THE_RULES)]
    assert ("death", SERIOUS) in {(m.category, m.tier) for m in got}
    assert rules_alone().mentions("She died on the trolley.") == mentions("She died on the trolley.")


def test_ordinary_feedback_raises_nothing() -> None:
    for text in ("The physiotherapist was friendly and helpful.",
                 "Parking was difficult and the café closed early.",
                 "My appointment letter arrived late but the clinic fitted me in."):
        assert mentions(text) == [], text


def test_the_scores_are_probabilities_and_harm_scores_above_ordinary_text() -> None:
    model = harm_model()
    harm = model.score(MISSED_BY_THE_RULES)
    ordinary = model.score("The physiotherapist was friendly and helpful.")
    assert 0.0 < ordinary < model.threshold <= harm < 1.0


def test_the_pipeline_holds_one_model_per_process() -> None:
    assert analyser().model is harm_model()
    assert rules_alone().model is None


def test_the_model_never_trained_on_the_test_set_or_the_held_out_passes() -> None:
    spec = json.loads(harm_model_module.MODEL_FILE.read_text())
    trained = {entry["file"] for entry in spec["trained_on"]}
    assert trained == set(build_tool.TRAINING)
    held_out = {"test.jsonl", "dev_pass17.jsonl", "dev_pass20.jsonl", "dev_pass26.jsonl",
                "dev_pass31.jsonl", "dev_pass35.jsonl", "dev_ordinary4.jsonl"}
    assert held_out <= set(build_tool.HELD_OUT) and not trained & held_out
    for entry in spec["trained_on"]:  # a changed training file asks for a rebuild
        assert hashlib.sha256((CORPUS / entry["file"]).read_bytes()).hexdigest() == \
            entry["sha256"], f"{entry['file']} changed: python -m tools.harm_model"


def test_cross_validation_measures_no_held_out_file() -> None:
    names = build_tool.cv_files()
    assert set(build_tool.TRAINING) <= set(names)
    assert not set(names) & set(build_tool.HELD_OUT)
    assert set(build_tool.FIRST_MET) <= set(names), "each first-met pass is measured"


def test_cross_validation_decides_as_the_pipeline_does() -> None:
    """``Record.tiers``: the rules' tiers, serious when the model is sure of a serious harm
    and its category, possible when the rules found nothing and it scores harm high."""
    read = build_tool.Record
    assert read("serious", {"possible"}, [(0.99, 0.95, "neglect", 0.9, True)]).tiers(
        0.7, 0.9, 0.5) == {"possible", "serious"}
    assert read("none", set(), [(0.99, 0.95, "neglect", 0.4, False)]).tiers(
        0.7, 0.9, 0.5) == {"possible"}, "a category not named: for review"
    assert read("none", {"possible"}, [(0.99, 0.5, "neglect", 0.9, True)]).tiers(
        0.7, 0.9, 0.5) == {"possible"}, "the rules' term: the model adds no review of its own"
    assert read("none", set(), [(0.6, 0.5, "neglect", 0.9, False)]).tiers(0.7, 0.9, 0.5) == set()


def test_model_json_is_what_the_documented_command_builds() -> None:
    built = build_tool.build()
    assert build_tool.close(json.loads(harm_model_module.MODEL_FILE.read_text()), built), \
        "python -m tools.harm_model"


def _with_veto(veto: float) -> HarmModel:
    spec = json.loads(harm_model_module.MODEL_FILE.read_text())
    spec["veto"] = veto
    return HarmModel(spec)


# written for these tests: a serious harm the rules name ("broke her hip"), told as the last
# clause of a sentence of grievances about other things
BURIED = ("I was worried about the parking, the food, the noise, the heat and the visiting hours"
          " that week and on the Friday she broke her hip.")


def test_a_serious_finding_in_a_sentence_the_model_reads_as_ordinary_is_kept_for_review(
        ) -> None:
    """``veto``: a rules' serious finding stays serious when the model's harm score of the
    sentence (or of the finding's clause) reaches it, and is kept for the quality team's review
    (possible, the score in its context) when it does not. Shown with the real model and the
    veto set out of reach either way."""
    text = "She fell and broke her hip on the ward."
    rules = [m for m in rules_alone().mentions(text) if m.tier == SERIOUS]
    assert rules
    with reading_with(_with_veto(0.0)) as pipeline:
        assert {(m.category, m.tier) for m in pipeline.mentions(text)} >= {
            (m.category, SERIOUS) for m in rules}
    with reading_with(_with_veto(1.01)) as pipeline:  # every sentence "reads as ordinary"
        got = [m for m in pipeline.mentions(text) if m.phrase in {r.phrase for r in rules}]
        assert got and all(m.tier == POSSIBLE for m in got)
        assert all(re.search(rf"; {VETO_CONTEXT}, score [01]\.\d\d$", m.context) for m in got)
        assert pipeline.mentions(text) == pipeline.reference_mentions(text)


def test_a_harm_told_among_grievances_is_read_in_its_own_clause() -> None:
    model = harm_model()
    [m] = [m for m in rules_alone().mentions(BURIED) if m.tier == SERIOUS]
    whole = model.scores(BURIED)[0]
    assert harm_of_finding(model, BURIED, [m]) > whole  # the clause "she broke her hip"
    assert model.veto > 0
    assert (m.category, SERIOUS) in {(f.category, f.tier) for f in mentions(BURIED)}


def test_the_veto_was_chosen_by_cross_validation_and_is_in_model_json() -> None:
    spec = json.loads(harm_model_module.MODEL_FILE.read_text())
    assert spec["veto"] == build_tool.VETO == harm_model().veto
    assert 0 < build_tool.VETO < build_tool.THRESHOLD


# written for these tests: short, plain reports of a serious harm, each a serious finding of the
# rules; the model's check must leave them serious (a few words are too little for it to judge:
# "Mum was assaulted on the ward." scored 0.05)
PLAIN_SERIOUS = [
    "He was assaulted.", "Mum was assaulted on the ward.", "Dad was punched by another resident.",
    "A carer slapped my mother.", "She was sexually assaulted by a member of staff.",
    "He was kicked by a staff member.", "My son was restrained face down.", "She died.",
    "Dad passed away on the ward.", "He broke his hip.", "Mum fractured her wrist in a fall.",
    "He took an overdose.", "She cut her wrists.", "The resident was found hanging.",
    "They operated on the wrong leg.", "He was given ten times the dose.",
    "She was left in soiled sheets all night.", "Mum developed a grade 4 pressure ulcer.",
    "The baby was stillborn.", "My wife had a massive haemorrhage after the birth.",
    "He had a cardiac arrest on the ward.", "The carer stole her money.",
    "They took her pension.", "He was strangled.", "She was raped on the unit.",
    "The patient was scalded in the bath.", "A swab was left inside her.",
    "He was given penicillin despite his allergy and went into anaphylaxis.",
    "He choked to death.", "Mum was assaulted on the ward by another patient last night.",
    "A carer slapped my mother across the face when she would not eat.",
]


def test_a_plain_short_report_of_serious_harm_stays_serious_under_the_check() -> None:
    assert harm_model().veto > 0
    for text in PLAIN_SERIOUS:
        assert SERIOUS in {m.tier for m in rules_alone().mentions(text)}, text
        assert SERIOUS in {m.tier for m in mentions(text)}, text
