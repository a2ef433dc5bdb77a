"""The one concern-merge rule, shared by quality-monitor (which owns concerns) and escalation
(which keeps its own copy from the events). Pure functions over plain data.

When a concern is announced again: severity only rises (never silently falls), evidence is
the union (by feedback id, first seen kept, order kept), and what was new decides whether
the newer reason and figures win.

``merge`` takes the union of two lists in memory; ``settle`` is the same rule for a store
that takes the union itself, set-based (escalation's ``concern_evidence`` table adds an
update's items by key and says which were new), so that an update never loads the evidence
the concern already holds.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.events import Severity

E = TypeVar("E")


def highest(*severities: Severity) -> Severity:
    """The most severe of ``severities`` (the rule: severity only rises)."""
    return max(severities, key=lambda s: s.rank)


@dataclass(frozen=True)
class Merged(Generic[E]):
    """A known concern merged with an announcement."""

    severity: Severity          # the highest of the known and the incoming
    previous_severity: Severity
    new_evidence: list[E]       # incoming items not already known, in their order
    evidence: list[E]           # the union: known items first, then the new ones (``merge``
                                # only: after ``settle`` the store holds it, this is empty)

    @property
    def severity_rose(self) -> bool:
        return self.severity.rank > self.previous_severity.rank

    @property
    def newer(self) -> bool:
        """Did the announcement bring anything (new evidence or a higher severity)?"""
        return bool(self.new_evidence) or self.severity_rose


def settle(known_severity: Severity, incoming_severity: Severity,
           new_evidence: Sequence[E]) -> Merged[E]:
    """The rule when the store has already added the incoming items to the union by key:
    ``new_evidence`` is what it did not hold before."""
    return Merged(severity=highest(known_severity, incoming_severity),
                  previous_severity=known_severity, new_evidence=list(new_evidence),
                  evidence=[])


def merge(known_severity: Severity, known_evidence: Sequence[E],
          incoming_severity: Severity, incoming_evidence: Sequence[E],
          key: Callable[[E], object]) -> Merged[E]:
    """Merge an announcement into a known concern; ``key`` gives an evidence item's identity."""
    seen = {key(e) for e in known_evidence}
    new: list[E] = []
    for e in incoming_evidence:
        k = key(e)
        if k not in seen:
            seen.add(k)
            new.append(e)
    settled = settle(known_severity, incoming_severity, new)
    return Merged(severity=settled.severity, previous_severity=known_severity,
                  new_evidence=new, evidence=[*known_evidence, *new])
