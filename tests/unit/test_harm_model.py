"""The harm pipeline's statistical second opinion (services/quality_monitor/harm/model.py): what
it raises, the evidence it gives, what it never does, and the data it was (not) trained on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from services.quality_monitor.harm import model as harm_model_module
from services.quality_monitor.harm.model import MODEL_CONTEXT, features, harm_model
from services.quality_monitor.harm.pipeline import (
    CATEGORIES,
    POSSIBLE,
    SERIOUS,
    Analyser,
    analyser,
    mentions,
)
from tools import harm_model as build_tool

CORPUS = Path(__file__).resolve().parent.parent / "data" / "harm"
# the rules find nothing here (no lexicon names wandering off or a canal); the model does
MISSED_BY_THE_RULES = ("They let her wander out of the unit at night and the police found her"
                       " in the canal.")


def rules_alone() -> Analyser:
    return Analyser(model=False)


def test_features_are_words_word_pairs_and_character_grams_of_each_word() -> None:
    got = features("Pt's NG-tube")
    assert {"w pt's", "w ng", "w tube", "w pt's ng", "w ng tube"} <= set(got)
    assert {" n", "ng", "g ", " ng", "ng ", " ng "} <= set(got)
    assert " tu" in got and "ube " in got
    assert not any(" " in g.strip() and not g.startswith("w ") for g in got), \
        "a character n-gram never crosses words"


def test_a_sentence_the_rules_pass_over_is_raised_for_review_with_its_evidence() -> None:
    assert rules_alone().mentions(MISSED_BY_THE_RULES) == []
    [m] = mentions(MISSED_BY_THE_RULES)
    assert m.tier == POSSIBLE, "the model alone never makes a serious concern"
    assert m.category in CATEGORIES
    assert m.sentence == MISSED_BY_THE_RULES
    assert m.phrase.startswith(MODEL_CONTEXT) and "wander" in m.phrase  # the words that weighed
    assert m.context.startswith(f"{MODEL_CONTEXT}, score 0.")
    score = float(m.context.split("score ")[1].split()[0])
    assert score >= harm_model().threshold


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


def test_the_model_never_trained_on_the_test_set_or_pass_13_or_17() -> None:
    spec = json.loads(harm_model_module.MODEL_FILE.read_text())
    trained = {entry["file"] for entry in spec["trained_on"]}
    assert trained == set(build_tool.TRAINING)
    assert not trained & {"test.jsonl", "dev_pass13.jsonl", "dev_pass17.jsonl"}
    assert {"test.jsonl", "dev_pass13.jsonl", "dev_pass17.jsonl"} <= set(build_tool.HELD_OUT)
    for entry in spec["trained_on"]:  # a changed training file asks for a rebuild
        assert hashlib.sha256((CORPUS / entry["file"]).read_bytes()).hexdigest() == \
            entry["sha256"], f"{entry['file']} changed: python -m tools.harm_model"


def test_model_json_is_what_the_documented_command_builds() -> None:
    built = build_tool.build()
    assert build_tool.close(json.loads(harm_model_module.MODEL_FILE.read_text()), built), \
        "python -m tools.harm_model"
