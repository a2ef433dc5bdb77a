"""Immediate serious-risk rules (services/quality_monitor/rules.py)."""

from __future__ import annotations

from typing import Any

import pytest

from services.quality_monitor.rules import (
    IMMEDIATE_RULE,
    POSSIBLE_RULE,
    RISK_SCORE_THRESHOLD,
    fingerprint,
    harm_mentions,
    immediate_serious_risk,
    npsa_band,
)
from shared.events import Severity
from tests.unit.builders import feedback

QUIET = "The patient waited four hours for a bed and the ward was noisy at night."


# -- npsa_band ---------------------------------------------------------------------------------

@pytest.mark.parametrize("score, band", [
    (1, Severity.LOW), (2, Severity.LOW), (3, Severity.LOW),
    (4, Severity.MODERATE), (5, Severity.MODERATE), (6, Severity.MODERATE),
    (8, Severity.HIGH), (9, Severity.HIGH), (10, Severity.HIGH), (12, Severity.HIGH),
    (15, Severity.SERIOUS), (16, Severity.SERIOUS), (20, Severity.SERIOUS), (25, Severity.SERIOUS),
])
def test_npsa_band(score: int, band: Severity) -> None:
    assert npsa_band(score) is band


def test_every_product_of_the_5x5_matrix_has_a_band_that_never_decreases() -> None:
    scores = sorted({c * lk for c in range(1, 6) for lk in range(1, 6)})
    ranks = [npsa_band(s).rank for s in scores]
    assert ranks == sorted(ranks)
    assert npsa_band(RISK_SCORE_THRESHOLD) is Severity.SERIOUS


# -- immediate_serious_risk --------------------------------------------------------------------

def test_safeguarding_concern_triggers_on_its_own() -> None:
    f = immediate_serious_risk(feedback("safeguarding_concern", theme="safeguarding: financial",
                                        category="financial", about="adult", description=QUIET))
    assert f is not None
    assert f.rule == IMMEDIATE_RULE
    assert f.severity is Severity.SERIOUS
    assert f.theme == "safeguarding: financial"
    assert f.figures["triggers"] == ["safeguarding"]
    assert f.figures["safeguarding"] == {"category": "financial", "about": "adult"}
    assert "financial" in f.reason
    assert f.matched is None


@pytest.mark.parametrize("consequence, likelihood", [(5, 3), (3, 5), (4, 4), (5, 5)])
def test_risk_score_of_15_or_more_triggers(consequence: int, likelihood: int) -> None:
    f = immediate_serious_risk(feedback(description=QUIET,
                                        risk={"consequence": consequence, "likelihood": likelihood}))
    assert f is not None
    assert f.figures["triggers"] == ["risk_score"]
    assert f.figures["risk_score"] == {"consequence": consequence, "likelihood": likelihood,
                                       "score": consequence * likelihood,
                                       "threshold": RISK_SCORE_THRESHOLD}
    assert str(consequence * likelihood) in f.reason


@pytest.mark.parametrize("consequence, likelihood", [(4, 3), (3, 4), (2, 5), (1, 1)])
def test_risk_score_below_15_does_not_trigger(consequence: int, likelihood: int) -> None:
    fb = feedback(description=QUIET, risk={"consequence": consequence, "likelihood": likelihood})
    assert immediate_serious_risk(fb) is None


def test_risk_threshold_can_be_lowered() -> None:
    fb = feedback(description=QUIET, risk={"consequence": 4, "likelihood": 3})
    f = immediate_serious_risk(fb, risk_threshold=12)
    assert f is not None and f.figures["risk_score"]["threshold"] == 12


def test_harm_in_the_description_triggers_and_says_what_matched() -> None:
    f = immediate_serious_risk(feedback(
        description="She fell at night and suffered a fractured hip; she died a week later.",
        risk={"consequence": 2, "likelihood": 2}))
    assert f is not None
    assert f.rule == IMMEDIATE_RULE and f.severity is Severity.SERIOUS
    assert f.figures["triggers"] == ["harm_in_text"]
    harm = f.figures["harm_in_text"]
    assert harm["categories"] == ["death", "severe_harm"]
    assert {(m["category"], m["phrase"]) for m in harm["mentions"]} >= {
        ("severe_harm", "fractured hip"), ("death", "died")}
    for m in harm["mentions"]:  # the evidence a clinician checks
        assert set(m) == {"phrase", "category", "context", "sentence", "tier"}
        assert m["sentence"] in ("She fell at night and suffered a fractured hip;"
                                 " she died a week later.")
    assert "fractured hip" in (f.matched or "") and "died" in (f.matched or "")
    assert '"died"' in f.reason


def test_harm_in_a_comment_field_is_read_when_there_is_no_description() -> None:
    f = immediate_serious_risk(feedback("patient_survey", theme=None,
                                        comment="My mother was left in soiled sheets all night."))
    assert f is not None
    assert f.figures["harm_in_text"]["categories"] == ["neglect"]
    assert f.theme == "patient_survey"  # no theme: the kind stands in


def test_a_possible_harm_alone_is_a_high_concern_for_review() -> None:
    f = immediate_serious_risk(feedback(
        description="We think mum may have been hit by a carer but she gets confused."))
    assert f is not None
    assert f.rule == POSSIBLE_RULE and f.severity is Severity.HIGH and f.review
    assert f.figures["review"] == "pending"
    assert f.figures["harm_in_text"]["possible_categories"] == ["abuse"]
    assert "review" in f.reason


def test_a_possible_harm_with_a_serious_trigger_is_serious() -> None:
    f = immediate_serious_risk(feedback(
        "safeguarding_concern", theme="safeguarding: physical", category="physical",
        about="adult", description="She may have been pushed by a carer."))
    assert f is not None and f.rule == IMMEDIATE_RULE and not f.review
    assert f.figures["harm_in_text"]["possible_categories"] == ["abuse"]


@pytest.mark.parametrize("content", [
    {"description": QUIET},
    {"description": QUIET, "risk": {"consequence": 3, "likelihood": 4}},
    {"description": "No harm came to the patient and she did not fall."},
    {"description": "He could have died if his wife had not called 999."},
    {},
    {"description": None},
    {"risk": {"consequence": 5}},  # incomplete rating: no score
])
def test_no_trigger_gives_none(content: dict[str, Any]) -> None:
    assert immediate_serious_risk(feedback(**content)) is None


def test_all_triggers_combine_into_one_finding() -> None:
    f = immediate_serious_risk(feedback(
        "safeguarding_concern", theme="safeguarding: neglect", category="neglect", about="adult",
        risk={"consequence": 5, "likelihood": 4},
        description="He was found dehydrated with a grade 4 pressure ulcer."))
    assert f is not None
    assert f.figures["triggers"] == ["safeguarding", "risk_score", "harm_in_text"]
    assert set(f.figures) == {"triggers", "safeguarding", "risk_score", "harm_in_text"}
    assert f.figures["harm_in_text"]["categories"] == ["neglect"]
    assert f.reason.startswith("Immediate serious risk at Guy's and St Thomas' NHS Foundation"
                               " Trust: safeguarding concern ")
    assert "20" in f.reason and "dehydrated" in f.reason


# -- harm_mentions -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The patient died on the ward.", ("death", "died")),
    ("Staff did not notice he was dehydrated.", ("neglect", "dehydrated")),
    ("The call bell was not answered and she was assaulted.", ("abuse", "assaulted")),
])
def test_negation_of_another_verb_does_not_hide_harm(text: str,
                                                     expected: tuple[str, str]) -> None:
    assert expected in {(m.category, m.phrase) for m in harm_mentions(text)
                        if m.tier == "serious"}


def test_fractured_her_hip_is_severe_harm() -> None:
    assert ("severe_harm", "fractured her hip") in {
        (m.category, m.phrase) for m in harm_mentions("She fell and fractured her hip.")}


# -- fingerprint -------------------------------------------------------------------------------

def test_fingerprint_is_provider_rule_and_theme() -> None:
    assert fingerprint("RJ1", IMMEDIATE_RULE, "Clinical treatment") == \
        "RJ1|immediate_serious_risk|clinical treatment"


def test_fingerprint_ignores_theme_case_only() -> None:
    base = fingerprint("RJ1", IMMEDIATE_RULE, "Clinical treatment")
    assert fingerprint("RJ1", IMMEDIATE_RULE, "CLINICAL TREATMENT") == base
    assert fingerprint("RAL", IMMEDIATE_RULE, "Clinical treatment") != base
    assert fingerprint("RJ1", "spc_shift", "Clinical treatment") != base
    assert fingerprint("RJ1", IMMEDIATE_RULE, "Appointments") != base


def test_finding_theme_feeds_the_fingerprint() -> None:
    a = immediate_serious_risk(feedback(theme="Clinical treatment", description="She died."))
    b = immediate_serious_risk(feedback(theme="Clinical treatment", description="He was assaulted."))
    assert a is not None and b is not None
    assert fingerprint("RJ1", a.rule, a.theme) == fingerprint("RJ1", b.rule, b.theme)
