"""A concern as escalation knows it, and what changed when quality-monitor announces it again.
Pure functions.

``concern.raised`` and ``concern.updated`` travel on different queues, so with several
replicas they can be handled in either order. Merging is therefore order-free: severity only
rises, evidence is the union, and the newer reason wins (the rule in shared/concern_merge.py,
the same one quality-monitor applies to the concerns it owns).

Escalation keeps a concern's evidence in a table of its own (``store.add_evidence``): an
update adds its new items there, set-based, and says which were new, so handling it never
loads the evidence the concern already holds. A concern in memory (``KnownConcern``) holds
only its latest items, enough for an agenda, and how many it has in all; agendas list at most
``listed`` items, then "and K more (total T)".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import Field

from shared import concern_merge
from shared.events import ConcernRaised, Evidence, Severity

# How many evidence items an agenda lists by default (Settings.evidence_listed).
EVIDENCE_LISTED = 10


class KnownConcern(ConcernRaised):
    """A concern as escalation holds it: ``evidence`` its latest items only (as many as an
    agenda lists), ``evidence_count`` every item it holds. Never published."""

    evidence_count: int = Field(default=0, ge=0)


def with_evidence(concern: ConcernRaised, latest: list[Evidence], count: int) -> KnownConcern:
    """``concern`` holding its ``latest`` items of evidence, of ``count`` in all."""
    fields = {f: getattr(concern, f) for f in ConcernRaised.model_fields if f != "evidence"}
    return KnownConcern(**fields, evidence=latest, evidence_count=count)


def evidence_total(concern: ConcernRaised) -> int:
    """How many items the concern holds: its count where ``evidence`` is only a part (a
    ``KnownConcern``, a ``concern.updated.v2``), else the length of ``evidence``."""
    return max(getattr(concern, "evidence_count", 0), len(concern.evidence))


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


def merge(known: ConcernRaised | None, incoming: ConcernRaised,
          added: Sequence[Evidence] | None = None) -> tuple[ConcernRaised, Change]:
    """The concern after ``incoming``, and what it changed. ``added``: the items of
    ``incoming`` the store did not hold (it took the union itself, ``store.add_evidence``);
    None: the union is taken here, of ``known.evidence`` and ``incoming.evidence``. Either way
    the evidence of the result is the known items, then the new ones."""
    if known is None:
        return incoming, Change(incoming.severity, None,
                                list(incoming.evidence if added is None else added))
    if added is None:
        m = concern_merge.merge(known.severity, known.evidence, incoming.severity,
                                incoming.evidence, key=lambda e: e.feedback_id)
        evidence = m.evidence
    else:
        m = concern_merge.settle(known.severity, incoming.severity, added)
        evidence = [*known.evidence, *m.new_evidence]
    update = {
        "severity": m.severity,
        "evidence": evidence,
        "reason": incoming.reason if m.newer else known.reason,
        "figures": incoming.figures if m.newer else known.figures,
        "raised_at": min(known.raised_at, incoming.raised_at),
    }
    if isinstance(known, KnownConcern):
        update["evidence_count"] = known.evidence_count + len(m.new_evidence)
    merged = known.model_copy(update=update)
    return merged, Change(m.severity, known.severity, m.new_evidence)


def evidence_lines(concern: ConcernRaised, listed: int = EVIDENCE_LISTED) -> list[str]:
    """The latest ``listed`` items of evidence, one line each (oldest of them first), and
    "and K more (total T)" when the concern holds more."""
    shown = concern.evidence[-listed:] if listed > 0 else []
    lines = []
    for e in shown:
        matched = f' (matched: "{e.matched}")' if e.matched else ""
        lines.append(f"Evidence: {e.kind} {e.feedback_id} of {e.occurred_on}{matched}")
    total = evidence_total(concern)
    if total > len(shown):
        lines.append(f"Evidence: and {total - len(shown)} more (total {total})")
    return lines


def agenda(concern: ConcernRaised, listed: int = EVIDENCE_LISTED) -> list[str]:
    """The meeting's agenda: the concern, why it was raised, and the latest evidence."""
    return [f"The concern: {concern.reason}",
            f"Rule {concern.rule} on theme '{concern.theme}', severity {concern.severity}.",
            *evidence_lines(concern, listed),
            "Remedial actions requested and the provider's response."]


def agenda_item(concern: ConcernRaised) -> str:
    """One line for a CQRM agenda or the watch list."""
    return (f"{concern.provider.name}: {concern.theme} ({concern.severity}): {concern.reason}"
            f" [{evidence_total(concern)} piece(s) of evidence]")


def meeting_title(concern: ConcernRaised) -> str:
    return (f"Remedial action meeting: {concern.provider.name} - {concern.theme}"
            f" ({concern.severity})")
