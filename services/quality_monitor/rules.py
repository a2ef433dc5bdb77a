"""Rules on one piece of accepted feedback: immediate serious risk (possible risk for review),
visit ratings and service change notices. Pure functions.

Every finding says which rule fired, why, on what figures and which phrase matched, so the
quality team can see exactly why a concern exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from services.quality_monitor.config import ServiceChangeRules, VisitRules
from services.quality_monitor.harm import pipeline
from services.quality_monitor.harm.pipeline import Mention
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
    review: bool = False  # a possible risk, pending the quality team's review


def npsa_band(score: int) -> Severity:
    """NPSA 5x5 risk matrix bands: 1-3 low, 4-6 moderate, 8-12 high, 15-25 serious."""
    if score >= 15:
        return Severity.SERIOUS
    if score >= 8:
        return Severity.HIGH
    if score >= 4:
        return Severity.MODERATE
    return Severity.LOW


def harm_mentions(text: str) -> list[Mention]:
    """The harms the free text reports, read by the clinical-text pipeline
    (services/quality_monitor/harm): serious and possible mentions, each with its phrase,
    category, assertion context and sentence. Measured by ``make eval``."""
    return pipeline.mentions(text)


def free_text(feedback: FeedbackAccepted) -> str:
    """The free text of a piece of feedback that the harm pipeline reads."""
    text = feedback.content.get("description") or feedback.content.get("comment") or ""
    return text if isinstance(text, str) else ""


IMMEDIATE_RULE = "immediate_serious_risk"
POSSIBLE_RULE = "possible_serious_risk"
MAX_EVIDENCE_MENTIONS = 10


def immediate_serious_risk(feedback: FeedbackAccepted,
                           risk_threshold: int = RISK_SCORE_THRESHOLD,
                           mentions: list[Mention] | None = None) -> Finding | None:
    """The serious risk one piece of feedback carries on its own, if any.

    One finding per item, whatever the number of triggers (safeguarding, an NPSA score at or
    above the threshold, harm reported in the free text): each trigger is in the figures.
    ``mentions`` are the harm pipeline's reading of the free text (read here when not given).

    Serious: a trigger, or a harm the text clearly reports (``immediate_serious_risk``, the
    meeting follows). Possible only (a hedge, an unqualified term, an uncertain experiencer):
    a ``high`` finding of its own rule, ``possible_serious_risk``, with ``review: pending``
    for the quality team to confirm (it becomes serious) or dismiss.
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
    if mentions is None:
        mentions = harm_mentions(free_text(feedback))
    serious = [m for m in mentions if m.tier == pipeline.SERIOUS]
    possible = [m for m in mentions if m.tier == pipeline.POSSIBLE]
    if serious:
        triggers.append("harm_in_text")
        reasons.append(_reported("reports", serious))
        matched = "; ".join(m.phrase for m in serious[:5])
    if mentions:
        figures["harm_in_text"] = _harm_figures(serious, possible)
    if not triggers:
        return _possible_risk(feedback, possible) if possible else None
    figures["triggers"] = triggers
    kind = feedback.kind.replace("_", " ")
    return Finding(
        rule=IMMEDIATE_RULE, theme=feedback.theme or feedback.kind, severity=Severity.SERIOUS,
        reason=f"Immediate serious risk at {feedback.provider.name}: {kind} "
               + "; ".join(reasons),
        figures=figures, matched=matched)


def _reported(verb: str, mentions: list[Mention]) -> str:
    categories = sorted({m.category.replace("_", " ") for m in mentions})
    return (f"free text {verb} {', '.join(categories)} ("
            + ", ".join(f'"{m.phrase}"' for m in mentions[:5]) + ")")


def _harm_figures(serious: list[Mention], possible: list[Mention]) -> dict[str, Any]:
    """The evidence a clinician checks: each mention's phrase, category, assertion context,
    tier and (redacted) sentence."""
    return {"categories": sorted({m.category for m in serious}),
            "possible_categories": sorted({m.category for m in possible}),
            "mentions": [m.as_json() for m in (serious + possible)[:MAX_EVIDENCE_MENTIONS]]}


def _possible_risk(feedback: FeedbackAccepted, possible: list[Mention]) -> Finding:
    kind = feedback.kind.replace("_", " ")
    return Finding(
        rule=POSSIBLE_RULE, theme=feedback.theme or feedback.kind, severity=Severity.HIGH,
        reason=f"Possible serious risk at {feedback.provider.name}, for the quality team to"
               f" review: {kind} " + _reported("may report", possible),
        figures={"triggers": ["possible_harm_in_text"], "review": "pending",
                 "harm_in_text": _harm_figures([], possible)},
        matched="; ".join(m.phrase for m in possible[:5]), review=True)


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
