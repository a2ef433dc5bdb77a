"""Concern severity: a module with no third-party imports, so that a command's options (the
CLI's ``--severity``) need not load the event models (pydantic) to name their choices.
``shared.events`` re-exports ``Severity``; events and rules import it from either."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    """Concern severity, following the NPSA 5x5 risk matrix bands."""

    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    SERIOUS = "serious"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.LOW: 1, Severity.MODERATE: 2, Severity.HIGH: 3, Severity.SERIOUS: 4}
