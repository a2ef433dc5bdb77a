"""A report as plain data: sections of paragraphs, tables and charts. Pure, no I/O.

Every renderer (PDF, HTML, CSV, XLSX) draws the same :class:`Report`, so a figure in the PDF
is the figure in the spreadsheet. :func:`sanitised` runs intake's redaction again over every
text a report holds (personal data never reaches a report, even when a feed slipped it past
intake in a form intake did not know then); :func:`small` suppresses the small numbers of
published counts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from services.intake.redaction import redact

Cell = str | int | float | None
SUPPRESSED = "*"  # NHS England's mark for a figure of 1-4, withheld so no one is identified
SUPPRESS_BELOW = 5


@dataclass(frozen=True)
class Table:
    """A table, also written as one CSV file and one XLSX sheet named ``name``."""

    name: str  # a file and sheet name: lower case, digits and underscores
    caption: str
    columns: list[str]
    rows: list[list[Cell]]


@dataclass(frozen=True)
class Chart:
    """An SVG chart with the text that says what it shows (for screen readers and PDFs)."""

    name: str
    svg: str
    description: str


@dataclass(frozen=True)
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    kind: str  # cqrm_pack, quality_performance, you_said_we_did
    scope: str  # the provider's ODS code, or "all"
    period: str  # YYYY-MM (a month) or YYYY-Qn (a quarter)
    title: str
    subtitle: str
    sections: list[Section]
    audience: str = "committee"  # or "public"

    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """A fingerprint of everything the report says: the same data, the same digest.
        Charts are left out (drawn from the same figures; their SVG carries random ids)."""
        doc = self.as_dict()
        for s in doc["sections"]:
            s["charts"] = [c["name"] for c in s["charts"]]
        body = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(body).hexdigest()


def small(n: int) -> Cell:
    """A count as it may be published: 1-4 are suppressed (``*``); 0 and 5+ are shown."""
    return SUPPRESSED if 0 < n < SUPPRESS_BELOW else n


def clean(text: str) -> str:
    """One text as a report may show it: personal data redacted, whitespace tidied."""
    return " ".join(redact(text).text.split())


def _cell(value: Cell) -> Cell:
    return clean(value) if isinstance(value, str) else value


def sanitised(report: Report) -> Report:
    """The report with every text redacted again: titles, paragraphs, captions, column
    names, cells and chart descriptions (chart SVGs are drawn from figures, never free
    text: their titles are provider names and measures)."""
    return replace(
        report, title=clean(report.title), subtitle=clean(report.subtitle),
        sections=[Section(
            heading=clean(s.heading), paragraphs=[clean(p) for p in s.paragraphs],
            tables=[Table(t.name, clean(t.caption), [clean(c) for c in t.columns],
                          [[_cell(v) for v in row] for row in t.rows]) for t in s.tables],
            charts=[Chart(c.name, c.svg, clean(c.description)) for c in s.charts])
            for s in report.sections])


def texts(report: Report) -> list[str]:
    """Every text of a report (for tests and checks)."""
    out = [report.title, report.subtitle]
    for s in report.sections:
        out += [s.heading, *s.paragraphs]
        for t in s.tables:
            out += [t.caption, *t.columns, *(str(v) for row in t.rows for v in row)]
        out += [c.description for c in s.charts]
    return out
