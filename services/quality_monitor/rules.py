"""Rules on one piece of accepted feedback: immediate serious risk, visit ratings and service
change notices. Pure functions.

Every finding says which rule fired, why, on what figures and which phrase matched, so the
quality team can see exactly why a concern exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from services.quality_monitor.config import ServiceChangeRules, VisitRules
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
# Measured on tests/unit/harm_corpus.jsonl (see tests/unit/test_harm_corpus.py).
_PERSON = (r"(?:him|her|them|me|us|a (?:resident|patient|man|woman|child)|the (?:resident|patient)"
           r"|my (?:mother|father|mum|dad|son|daughter|wife|husband|brother|sister|grandmother"
           r"|grandfather|nan|partner))")
_BONE = r"(?:hip|skull|neck|femur|wrist|pelvis|arm|leg|ankle|spine|neck of femur|ribs?|shoulder)"
HARM_PATTERNS: dict[str, str] = {
    "death": r"\b(?:died|dies|death|passed away|fatal(?:ly|ity)?|deceased|killed|stillborn"
             r"|stillbirth|(?:found|pronounced|declared|confirmed|certified) dead|(?:he|she|they"
             r"|patient|resident|baby|father|mother|mum|dad|husband|wife|son|daughter|brother"
             r"|sister) (?:was|is|were) dead"
             r"|dead on arrival|lost (?:his|her|their) li(?:fe|ves))\b",
    "serious harm": r"\b(?:serious(?:ly)? (?:harm(?:ed)?|injur(?:y|ies|ed))|harmed seriously"
                    r"|severe(?:ly)? (?:harm(?:ed)?|injur(?:y|ies|ed))|permanent(?:ly)? (?:harm"
                    r"(?:ed)?|damage)|permanent \w+ damage|life[- ]threatening|life[- ]changing"
                    r"|brain (?:damage|injury)|head injury|bleed on the brain|brain (?:bleed"
                    r"|haemorrhage)|cardiac arrest|paralysed|amputation|septic shock"
                    r"|(?:developed|contracted|went into) (?:severe )?sepsis"
                    rf"|fractured? (?:(?:his|her|their) )?{_BONE}|broke (?:his|her|their|a) {_BONE}"
                    rf"|broken (?:(?:his|her|their) )?{_BONE}|(?:suffered|sustained) a fracture"
                    r"|(?:ended up|admitted|taken|rushed|transferred) (?:in|to) (?:intensive care"
                    r"|ICU|ITU|HDU)"
                    r"|(?:given|administered|received) an overdose|overdose of (?:insulin|morphine"
                    r"|opioids?|paracetamol|digoxin|potassium)|hypoglycaemic coma)\b",
    "abuse": r"\b(?:abus(?:e|ed|ive)|assault(?:ed)?|slapped|punched|attacked|raped"
             r"|sexual(?:ly)? (?:assault(?:ed)?|abus(?:e|ed))|touched (?:her|him) inappropriately"
             r"|(?:hit(?:ting)?|kick(?:ed|ing)|punch(?:ing)?|slap(?:ping)?|push(?:ed|ing)"
             rf"|shov(?:ed|ing)|grabb(?:ed|ing)|swore at|spat at) {_PERSON}(?! head)"
             r"|(?:hit|kicked|punched|slapped|pushed|attacked) by (?:a |the |another )?(?:member"
             r" of staff|carer|nurse|staff|security guard|guard|patient|resident|worker"
             r"|healthcare assistant)|took money from|stole (?:money )?from)\b",
    "neglect": r"\b(?:neglect(?:ed|ful)?|(?:left (?:lying |sitting )?|lay |lying |sat |sitting )in"
               r" (?:a )?(?:soiled|wet|dirty|urine|faeces|excrement)"
               r"|left (?:lying |sitting )?on the floor"
               r"|left to die|left without (?:food|water|fluids|drinks?)|dehydrat(?:ed|ion)"
               r"|malnourish(?:ed|ment)|(?:grade|category|stage) [34] pressure (?:ulcer|sore)s?"
               r"|pressure (?:ulcer|sore) (?:of )?(?:grade|category|stage) [34])\b",
    "never event": r"\b(?:never events?|wrong[- ]site (?:surgery|procedure|block|operation)"
                   r"|operated on the wrong \w+|wrong (?:\w+ )?(?:was |were )?operated on"
                   r"|wrong (?:tooth|teeth|implant|prosthesis|route)"
                   r"|wrong (?:knee|hip|eye|leg|arm|side|limb|kidney|patient) (?:was |were )?"
                   r"(?:operated|removed|amputated|extracted)"
                   r"|retained (?:swab|instrument|guidewire|foreign object|\w+ swab)"
                   r"|(?:swab|instrument|guidewire) was (?:retained|left inside)"
                   r"|(?:nasogastric|orogastric|naso-gastric|NG) tube was misplaced"
                   r"|misplaced (?:nasogastric|orogastric|NG) tube"
                   r"|ABO[- ]incompatible|scalded|air flowmeter|oesophageal intubation)\b",
    "self-harm": r"\b(?:self[- ]harm(?:ed|ing)?|suicide|took an overdose|overdosed"
                 r"|t(?:ook|ake|aken) (?:his|her|their) own life|(?:tried|attempted) to (?:kill"
                 r"|hang|harm) (?:himself|herself|themselves)|(?:tried|attempted) to take"
                 r" (?:his|her|their) own life|cut (?:himself|herself|themselves)"
                 r"|(?:jumped|threw (?:himself|herself)) (?:from|off))\b",
    "missed diagnosis with harm": r"\b(?:missed (?:\w+ )?(?:diagnosis|cancer|fracture|sepsis"
                                  r"|stroke|heart attack|appendicitis|meningitis|bleed)"
                                  r"|misdiagnos(?:ed|is)|delayed diagnosis|late diagnosis"
                                  r"|not diagnosed|undiagnosed|fail(?:ed|ure) to diagnose"
                                  r"|(?:fracture|cancer|tumour|stroke|sepsis|bleed|infection"
                                  r"|diagnosis) (?:was|were) missed)\b",
}
_HARM_RE = {k: re.compile(v, re.IGNORECASE) for k, v in HARM_PATTERNS.items()}

# A negator or hedge in the few words before a harm denies or doubts it, unless a clause
# boundary comes between them ("did not receive his insulin AND died", "did not notice HE
# WAS dehydrated"). The strong negators ("no evidence that", "denied") reach over "that" and a
# new subject, not over a conjunction.
_NEGATORS = re.compile(
    r"\b(?:no|not|never|nobody|no one|none|nothing|without|nor|neither|didn't|did not"
    r"|wasn't|was not|weren't|isn't|prevented|avoided|free (?:of|from))\b|n't\b",
    re.IGNORECASE)
_STRONG_NEGATORS = re.compile(
    r"\b(?:no (?:evidence|sign|signs|indication|suggestion|allegation)|denie[sd]|ruled out"
    r"|not true|unfounded)\b", re.IGNORECASE)
_HEDGES = re.compile(
    r"\b(?:could|might|may|would|should|nearly|almost|risk of|at risk|risks of|worried|afraid"
    r"|feared|fear|fears|concerned|in case|if|whether|potential(?:ly)?|near miss|possible"
    r"|possibly|going to|thought|felt like|as if|prevent|prevention|avoid|history of"
    r"|(?:checked|screened|assessed|looked|tested|monitored) for|how to|training on"
    r"|leaflet|policy on|accused of|allegation of|recognis(?:e|ing)|identify|spot(?:ting)?)\b",
    re.IGNORECASE)
_HARD_BREAK = re.compile(
    r"\b(?:and|but|so|then|after|because|until|when|while|before|which|who|where|since"
    r"|although|though)\b", re.IGNORECASE)
_SOFT_BREAK = re.compile(
    r"\b(?:that|(?:he|she|they|i|we|it|you|staff|mum|dad|patient)\s+(?:was|were|had|has|is"
    r"|did|got|became|went|would|could))\b", re.IGNORECASE)
# What follows a harm that denies it or makes it a topic, not an event.
_AFTER = re.compile(
    r"^\W*(?:(?:was|were|has been|had been|is|being)\s+)?(?:not\s+(?:found|substantiated"
    r"|confirmed|proven|evidenced|identified|seen)|ruled out|excluded|unfounded"
    r"|unsubstantiated)\b|^\W*(?:risks?|risk assessments?|policy|policies|training|awareness"
    r"|prevention|procedures?|protocols?|leads?|teams?|services?|screening|rates?|statistics"
    r"|figures|leaflets?|champions?|plans?|down)\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r"[.!?;\n]+|,\s*(?:but|however|although)\b|\bbut\b", re.IGNORECASE)
_LOOKBACK_WORDS = 8
_NEVER_EVENT = re.compile(r"\bnever events?\b", re.IGNORECASE)


_NOUN = re.compile(r"^(?:death|abuse|neglect|dehydration|malnourishment|self[- ]harm|suicide"
                   r"|never events?)$", re.IGNORECASE)
_TRAILING_AND = re.compile(r"\s+(?:and|or)\s*$", re.IGNORECASE)


def _denied(before: str, harm: str) -> bool:
    """Whether the words before a harm (in its clause) deny or doubt it."""
    words = " ".join(before.split()[-_LOOKBACK_WORDS:])
    words = _NEVER_EVENT.sub(" ", words)  # "never event" is a term, not a negation
    if _NOUN.match(harm):  # "no abuse and neglect": the denial covers both nouns
        words = _TRAILING_AND.sub("", words)
    # A negator is cut off by a conjunction or a new subject ("did not notice he was
    # dehydrated"); a hedge ("whether", "worried that") governs the clause that follows it.
    for pattern, breaks in ((_STRONG_NEGATORS, (_HARD_BREAK,)),
                            (_NEGATORS, (_HARD_BREAK, _SOFT_BREAK)),
                            (_HEDGES, (_HARD_BREAK,))):
        matches = list(pattern.finditer(words))
        last = matches[-1] if matches else None
        if last is not None and not any(b.search(words[last.end():]) for b in breaks):
            return True
    return False


def harm_mentions(text: str) -> list[tuple[str, str]]:
    """(category, phrase) for each harm the text asserts; negated or hedged ones are skipped."""
    found: list[tuple[str, str]] = []
    for clause in _CLAUSE_SPLIT.split(text):
        for category, pattern in _HARM_RE.items():
            for m in pattern.finditer(clause):
                if _denied(clause[: m.start()], m.group()) or _AFTER.search(clause[m.end():]):
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


VISIT_RULE = "visit_rating"
_VISIT_NAMES = {"insight_visit": "Insight visit", "enter_and_view": "Healthwatch Enter and View visit"}


def visit_rating(feedback: FeedbackAccepted, rules: VisitRules) -> Finding | None:
    """An insight visit or Enter and View rated inadequate or requires improvement.

    Inadequate is ``high`` by default: escalation then books a remedial meeting within 10
    working days (``serious`` is kept for an immediate risk to patients); requires
    improvement is ``moderate``: an item on the next CQRM agenda.
    """
    content = feedback.content
    rating = content.get("rating")
    severity = {"inadequate": rules.inadequate,
                "requires_improvement": rules.requires_improvement}.get(str(rating))
    if feedback.kind != "insight_visit" or severity is None:
        return None
    visit = _VISIT_NAMES.get(str(content.get("visit_type")), "Visit")
    service = content.get("service") or "the service"
    words = str(rating).replace("_", " ")
    return Finding(
        rule=VISIT_RULE, theme=feedback.theme or f"visit: {service}", severity=severity,
        reason=f"{visit} to {service} at {feedback.provider.name} on {feedback.occurred_on}"
               f" rated {words}",
        figures={"rating": rating, "visit_type": content.get("visit_type"), "service": service,
                 "visited_on": feedback.occurred_on.isoformat()},
        matched=f"rated {words}")


SERVICE_CHANGE_RULE = "service_change"


def service_change_failings(content: dict[str, Any], rules: ServiceChangeRules) -> list[str]:
    """What a service change notice lacks, in plain words (empty: nothing)."""
    failings: list[str] = []
    if not content.get("engagement_plan"):
        failings.append("no engagement plan")
    if not content.get("eia_done"):
        failings.append("no equality impact assessment (EIA)")
    if not content.get("qia_done"):
        failings.append("no quality impact assessment (QIA)")
    start, end = content.get("consultation_start"), content.get("consultation_end")
    minimum = rules.minimum_consultation_weeks
    if minimum > 0:
        if not start or not end:
            failings.append(f"no consultation period (minimum {minimum} weeks)")
        else:
            days = (date.fromisoformat(str(end)) - date.fromisoformat(str(start))).days
            if days < 7 * minimum:
                failings.append(f"consultation of {days / 7:.1f} weeks, shorter than the"
                                f" minimum {minimum} weeks")
    informed = set(content.get("informed") or [])
    for body in rules.must_inform:
        if body not in informed:
            failings.append(f"{_BODIES[body]} not informed")
    return failings


_BODIES = {"healthwatch": "Healthwatch", "scrutiny": "overview and scrutiny committee",
           "patients": "patients"}


def service_change(feedback: FeedbackAccepted, rules: ServiceChangeRules) -> Finding | None:
    """A service change notice with no engagement plan, EIA or QIA, a consultation shorter
    than the minimum, or Healthwatch / scrutiny not informed."""
    if feedback.kind != "service_change_notice":
        return None
    failings = service_change_failings(feedback.content, rules)
    if not failings:
        return None
    service = feedback.content.get("service") or "a service"
    return Finding(
        rule=SERVICE_CHANGE_RULE, theme=feedback.theme or f"service change: {service}",
        severity=rules.severity,
        reason=f"Service change to {service} at {feedback.provider.name} (notified"
               f" {feedback.occurred_on}): " + "; ".join(failings),
        figures={"failings": failings, "service": service,
                 "effective_from": feedback.content.get("effective_from"),
                 "consultation_start": feedback.content.get("consultation_start"),
                 "consultation_end": feedback.content.get("consultation_end"),
                 "informed": feedback.content.get("informed") or []},
        matched="; ".join(failings))
