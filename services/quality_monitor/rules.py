"""Immediate serious-risk rules: pure functions over one piece of accepted feedback.

Every finding says which rule fired, why, on what figures and which phrase matched, so the
quality team can see exactly why a concern exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shared.events import FeedbackAccepted, Severity

RISK_SCORE_THRESHOLD = 15  # NPSA 5x5: 15-25 is the "extreme" band


@dataclass(frozen=True)
class Finding:
    rule: str
    theme: str
    severity: Severity
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    matched: str | None = None


def npsa_band(score: int) -> Severity:
    """NPSA 5x5 risk matrix bands: 1-3 low, 4-6 moderate, 8-12 high, 15-25 serious."""
    if score >= 15:
        return Severity.SERIOUS
    if score >= 8:
        return Severity.HIGH
    if score >= 4:
        return Severity.MODERATE
    return Severity.LOW


# Harm the free text may report, by category; each pattern is matched case-insensitively.
HARM_PATTERNS: dict[str, str] = {
    "death": r"\b(?:died|dies|die|death|dead|passed away|fatal(?:ity)?|deceased"
             r"|lost (?:his|her|their) life)\b",
    "serious harm": r"\b(?:serious(?:ly)? (?:harm(?:ed)?|injur(?:y|ies|ed))|severe harm"
                    r"|permanent harm|life[- ]threatening|brain damage|fractured? (?:hip|skull|neck)"
                    r"|broke (?:his|her|their) (?:hip|leg|arm|neck))\b",
    "abuse": r"\b(?:abus(?:e|ed|ive)|assault(?:ed)?|slapped|punched|sexual(?:ly)? "
             r"(?:assault(?:ed)?|abus(?:e|ed)))\b",
    "neglect": r"\b(?:neglect(?:ed|ful)?|left (?:lying )?in (?:soiled|wet|dirty)|dehydrat(?:ed|ion)"
               r"|malnourish(?:ed|ment)|grade [34] pressure (?:ulcer|sore)s?)\b",
    "never event": r"\b(?:never event|wrong[- ]site surgery|wrong (?:patient|limb|side|site)"
                   r"|retained (?:swab|instrument|foreign object)|wrong route)\b",
    "self-harm": r"\b(?:self[- ]harm(?:ed|ing)?|suicid(?:e|al)|overdos(?:e|ed)"
                 r"|took (?:his|her|their) own life)\b",
    "missed diagnosis with harm": r"\b(?:missed (?:diagnosis|cancer|fracture|sepsis|stroke)"
                                  r"|misdiagnos(?:ed|is)|delayed diagnosis|not diagnosed)\b",
}
_HARM_RE = {k: re.compile(v, re.IGNORECASE) for k, v in HARM_PATTERNS.items()}
_NEGATORS = re.compile(
    r"\b(?:no|not|never|nobody|no one|none|nothing|without|nor|denies|denied|didn't|did not|wasn't|was not|weren't"
    r"|isn't|no evidence of|ruled out|free (?:of|from)|prevented|avoided)\b|n't\b",
    re.IGNORECASE)
_HEDGES = re.compile(
    r"\b(?:could have|might have|may have|would have|nearly|almost|risk of|at risk|worried"
    r"|afraid|feared|fear|in case|if|whether|potential(?:ly)?|near miss)\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r"[.!?;\n]+|,\s*(?:but|however|although)\b|\bbut\b", re.IGNORECASE)
_LOOKBACK_WORDS = 6
_NEVER_EVENT = re.compile(r"\bnever events?\b", re.IGNORECASE)


def harm_mentions(text: str) -> list[tuple[str, str]]:
    """(category, phrase) for each harm the text asserts; negated or hedged ones are skipped."""
    found: list[tuple[str, str]] = []
    for clause in _CLAUSE_SPLIT.split(text):
        for category, pattern in _HARM_RE.items():
            for m in pattern.finditer(clause):
                before = " ".join(clause[: m.start()].split()[-_LOOKBACK_WORDS:])
                # "never event" is a term, not a negation of what follows it.
                before = _NEVER_EVENT.sub(" ", before)
                if _NEGATORS.search(before) or _HEDGES.search(before):
                    continue
                found.append((category, m.group()))
    return found


IMMEDIATE_RULE = "immediate_serious_risk"


def immediate_serious_risk(feedback: FeedbackAccepted,
                           risk_threshold: int = RISK_SCORE_THRESHOLD) -> Finding | None:
    """The serious risk one piece of feedback carries on its own, if any.

    One finding per item, whatever the number of triggers (safeguarding, an NPSA score at or
    above the threshold, harm reported in the free text): each trigger is in the figures.
    """
    content = feedback.content
    triggers: list[str] = []
    reasons: list[str] = []
    figures: dict[str, Any] = {}
    matched: str | None = None
    if feedback.kind == "safeguarding_concern":
        triggers.append("safeguarding")
        reasons.append(f"safeguarding concern ({content.get('category', 'unspecified')})")
        figures["safeguarding"] = {"category": content.get("category"),
                                   "about": content.get("about")}
    risk = content.get("risk")
    if isinstance(risk, dict) and "consequence" in risk and "likelihood" in risk:
        score = int(risk["consequence"]) * int(risk["likelihood"])
        if score >= risk_threshold:
            triggers.append("risk_score")
            reasons.append(f"rated {score} on the NPSA 5x5 matrix (consequence"
                           f" {risk['consequence']} x likelihood {risk['likelihood']};"
                           f" threshold {risk_threshold})")
            figures["risk_score"] = {"consequence": risk["consequence"],
                                     "likelihood": risk["likelihood"], "score": score,
                                     "threshold": risk_threshold}
    text = content.get("description") or content.get("comment") or ""
    mentions = harm_mentions(text) if isinstance(text, str) else []
    if mentions:
        categories = sorted({c for c, _ in mentions})
        matched = "; ".join(p for _, p in mentions[:5])
        triggers.append("harm_in_text")
        reasons.append(f"free text reports {', '.join(categories)} (" + ", ".join(
            f'"{p}"' for _, p in mentions[:5]) + ")")
        figures["harm_in_text"] = {"categories": categories}
    if not triggers:
        return None
    figures["triggers"] = triggers
    kind = feedback.kind.replace("_", " ")
    return Finding(
        rule=IMMEDIATE_RULE, theme=feedback.theme or feedback.kind, severity=Severity.SERIOUS,
        reason=f"Immediate serious risk at {feedback.provider.name}: {kind} "
               + "; ".join(reasons),
        figures=figures, matched=matched)


def fingerprint(ods_code: str, rule: str, theme: str) -> str:
    """Concern identity: provider + rule + theme."""
    return f"{ods_code}|{rule}|{theme.lower()}"
