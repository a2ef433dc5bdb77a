"""A :class:`Report` as PDF (Typst, from PyPI: no browser, no system packages), HTML, CSV
(one file per table, in a zip) and XLSX (one sheet per table).

The Typst source is a fixed template that reads the report as JSON, so no text of a report
is ever parsed as markup; the HTML is autoescaped by Jinja2 and draws each chart as an
``<img>`` of its SVG.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import jinja2
import typst
from openpyxl import Workbook

from services.quality_monitor.reports.document import Cell, Report
from services.quality_monitor.reports.periods import LONDON

TEMPLATES = Path(__file__).parent / "templates"
NOTICE = ("Contains no personal data: free text is redacted and small numbers (1 to 4) are"
          " shown as *.")
PUBLIC_NOTICE = ("Contains no personal data: free text is redacted and numbers from 1 to 4 are"
                 " shown as 'fewer than 5'.")


def notice(report: Report) -> str:
    return PUBLIC_NOTICE if report.audience == "public" else NOTICE


@dataclass(frozen=True)
class Rendered:
    pdf: bytes
    html: str
    csv_zip: bytes
    xlsx: bytes


@dataclass(frozen=True)
class Stamp:
    """What a rendering adds to the report's data: its version and when it was made."""

    version: int
    generated_at: datetime
    organisation: str

    def shown(self) -> str:
        return self.generated_at.astimezone(LONDON).strftime("%d %B %Y %H:%M %Z").lstrip("0")


def render(report: Report, stamp: Stamp) -> Rendered:
    return Rendered(pdf(report, stamp), html(report, stamp), csv_zip(report), xlsx(report))


@cache
def _typst_source() -> bytes:
    return (TEMPLATES / "report.typ").read_bytes()


def pdf(report: Report, stamp: Stamp) -> bytes:
    data = report.as_dict()
    files: dict[str, bytes] = {"main.typ": _typst_source()}
    for s, section in enumerate(data["sections"]):
        for c, chart in enumerate(section["charts"]):
            name = f"chart-{s}-{c}.svg"
            files[name] = chart.pop("svg").encode()
            chart["file"] = name
    data.update(version=stamp.version, generated_at=stamp.shown(),
                organisation=stamp.organisation, notice=notice(report))
    files["report.json"] = json.dumps(data, default=str).encode()
    # A dict of files (main.typ, report.json, the charts) is documented input; the stubs
    # know only paths and bytes.
    out = typst.compile(files, format="pdf",  # type: ignore[call-overload]
                        timestamp=stamp.generated_at.replace(microsecond=0))
    assert isinstance(out, bytes)
    return out


@cache
def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["b64"] = lambda svg: base64.b64encode(svg.encode()).decode()
    return env


def html(report: Report, stamp: Stamp) -> str:
    return _jinja().get_template("report.html.j2").render(
        report=report, version=stamp.version, generated_at=stamp.shown(),
        notice=notice(report))


_FORMULA = re.compile(r"^[=+\-@\t\r]")


def _safe(value: Cell) -> Cell:
    """A text cell that a spreadsheet would read as a formula starts with ' instead."""
    return f"'{value}" if isinstance(value, str) and _FORMULA.match(value) else value


def csv_zip(report: Report) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for t in report.tables():
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\r\n")
            writer.writerow(t.columns)
            writer.writerows([[_safe(v) for v in row] for row in t.rows])
            z.writestr(f"{t.name}.csv", text.getvalue())
    return buf.getvalue()


def xlsx(report: Report) -> bytes:
    wb = Workbook(write_only=False)
    wb.remove(wb.active)  # type: ignore[arg-type]
    used: set[str] = set()
    for t in report.tables():
        title = t.name[:31]
        n = 2
        while title in used:
            title = f"{t.name[:28]}_{n}"
            n += 1
        used.add(title)
        ws = wb.create_sheet(title)
        ws.append(t.columns)
        for r, row in enumerate(t.rows, start=2):
            for c, value in enumerate(row, start=1):
                cell = ws.cell(row=r, column=c, value=value)
                if isinstance(value, str):
                    cell.data_type = "s"  # never a formula, whatever the text starts with
    if not wb.worksheets:
        wb.create_sheet("report").append(["This report has no tables."])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
