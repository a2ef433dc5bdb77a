"""A concern as escalation knows it, and what changed when quality-monitor announces it again.
Pure functions.

``concern.raised`` and ``concern.updated`` travel on different queues, so with several
replicas they can be handled in either order. Merging is therefore order-free: severity only
rises, evidence is the union, and the newer reason wins (the rule in shared/concern_merge.py,
the same one quality-monitor applies to the concerns it owns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared import concern_merge
from shared.events import ConcernRaised, Evidence, Severity


@dataclass(frozen=True)
class Change:
    """What an announcement added to the concern escalation already knew."""

    severity: Severity
    previous_severity: Severity | None  # None: escalation had not seen the concern before
    new_evidence: list[Evidence] = field(default_factory=list)

    @property
    def is_new(self) -> bool:
        return self.previous_severity is None

    @property
    def severity_rose(self) -> bool:
        return self.previous_severity is not None and self.severity.rank > self.previous_severity.rank

    @property
    def changed(self) -> bool:
        return self.is_new or self.severity_rose or bool(self.new_evidence)

    def describe(self) -> str:
        if self.is_new:
            return f"new {self.severity} concern"
        parts = []
        if self.severity_rose:
            parts.append(f"severity rose from {self.previous_severity} to {self.severity}")
        if self.new_evidence:
            parts.append(f"{len(self.new_evidence)} new piece(s) of evidence")
        return "; ".join(parts) or "no change"


def merge(known: ConcernRaised | None, incoming: ConcernRaised) -> tuple[ConcernRaised, Change]:
    """The concern after ``incoming``, and what it changed."""
    if known is None:
        return incoming, Change(incoming.severity, None, list(incoming.evidence))
    m = concern_merge.merge(known.severity, known.evidence, incoming.severity, incoming.evidence,
                            key=lambda e: e.feedback_id)
    merged = known.model_copy(update={
        "severity": m.severity,
        "evidence": m.evidence,
        "reason": incoming.reason if m.newer else known.reason,
        "figures": incoming.figures if m.newer else known.figures,
        "raised_at": min(known.raised_at, incoming.raised_at),
    })
    return merged, Change(m.severity, known.severity, m.new_evidence)


def agenda(concern: ConcernRaised) -> list[str]:
    """The meeting's agenda: the concern, why it was raised, and the evidence."""
    items = [f"The concern: {concern.reason}",
             f"Rule {concern.rule} on theme '{concern.theme}', severity {concern.severity}."]
    for e in concern.evidence:
        matched = f' (matched: "{e.matched}")' if e.matched else ""
        items.append(f"Evidence: {e.kind} {e.feedback_id} of {e.occurred_on}{matched}")
    items.append("Remedial actions requested and the provider's response.")
    return items


def agenda_item(concern: ConcernRaised) -> str:
    """One line for a CQRM agenda or the watch list."""
    return (f"{concern.provider.name}: {concern.theme} ({concern.severity}): {concern.reason}"
            f" [{len(concern.evidence)} piece(s) of evidence]")


def meeting_title(concern: ConcernRaised) -> str:
    return (f"Remedial action meeting: {concern.provider.name} - {concern.theme}"
            f" ({concern.severity})")
