"""Bulk files into submission bodies, streamed one record at a time. Pure functions (reading
the file aside): the loader in ``submit.py`` sends what they produce through intake.

Formats:
- ``jsonl``: one submission (JSON object) per line, sent byte for byte.
- ``fft-csv``: the FFT monthly layout NHS England publishes, one row per organisation, site,
  setting and month (see ``FFT_COLUMNS``).
- ``fft-responses-csv``: an FFT vendor's export of individual responses, one row per response
  (``FFT_RESPONSE_COLUMNS``): quality-monitor aggregates them into the monthly series.
- ``complaints-csv``: a complaints system's export, one row per complaint (``COMPLAINT_COLUMNS``).

CSV headers are matched without regard to case, spaces or punctuation ("Org code",
``org_code`` and "ORG CODE" are one column), and each kind's JSON field names are accepted
too. Columns the loader does not know (names, regions, totals it recomputes) are ignored.
A value that cannot be converted is passed on as written, so that intake rejects the row
with a reason rather than the loader guessing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.clock import utc_now

FORMATS = ("jsonl", "fft-csv", "fft-responses-csv", "complaints-csv")


@dataclass(frozen=True)
class Record:
    """One record of a bulk file: its number (1 = the first record after any header), the
    submission body to send, and the line of the file it starts on (what people are told)."""

    number: int
    body: bytes
    line: int = 0


def header_key(name: str) -> str:
    """ "Don't know" -> ``dont_know``, "Org Code" -> ``org_code``."""
    name = name.strip().lower().replace("'", "").replace("\u2019", "").replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


# Field of the submission -> the header keys that name it.
FFT_COLUMNS: dict[str, tuple[str, ...]] = {
    "ods_code": ("ods_code", "org_code", "organisation_code", "provider_code", "trust_code"),
    "site_code": ("site_code", "site"),
    "period": ("period", "month", "reporting_period", "period_name"),
    "setting": ("setting", "fft_setting", "collection"),
    "very_good": ("very_good",),
    "good": ("good",),
    "neither_good_nor_poor": ("neither_good_nor_poor", "neither"),
    "poor": ("poor",),
    "very_poor": ("very_poor",),
    "dont_know": ("dont_know", "do_not_know"),
    "total_eligible": ("total_eligible", "eligible", "number_eligible"),
    "record_id": ("record_id",),
}
FFT_COUNTS = ("very_good", "good", "neither_good_nor_poor", "poor", "very_poor", "dont_know")
FFT_REQUIRED = ("ods_code", "period", *FFT_COUNTS)

FFT_RESPONSE_COLUMNS: dict[str, tuple[str, ...]] = {
    "record_id": ("record_id", "response_id", "response_reference", "survey_response_id",
                  "id"),
    "ods_code": ("ods_code", "org_code", "organisation_code", "provider_code", "trust_code"),
    "site_code": ("site_code", "site"),
    "responded_on": ("responded_on", "response_date", "date_of_response", "date"),
    "setting": ("setting", "fft_setting", "collection"),
    "answer": ("answer", "fft_answer", "response", "rating", "overall_experience"),
    "comment": ("comment", "comments", "free_text", "why", "what_was_good",
                "what_could_be_improved"),
}
FFT_RESPONSE_REQUIRED = ("record_id", "responded_on", "answer")

COMPLAINT_COLUMNS: dict[str, tuple[str, ...]] = {
    "record_id": ("record_id", "reference", "complaint_reference", "complaint_ref",
                  "complaint_id", "datix_id", "case_reference"),
    "ods_code": ("ods_code", "org_code", "organisation_code", "provider_code"),
    "site_code": ("site_code", "site"),
    "received_on": ("received_on", "date_received", "received_date", "received"),
    "subject_area": ("subject_area", "ko41a_subject_area", "ko41a_subject", "subject"),
    "description": ("description", "details", "complaint_details", "summary"),
    "risk.consequence": ("risk_consequence", "consequence"),
    "risk.likelihood": ("risk_likelihood", "likelihood"),
    "acknowledged_on": ("acknowledged_on", "date_acknowledged", "acknowledged"),
    "responded_on": ("responded_on", "date_responded", "response_date", "responded"),
    "outcome": ("outcome",),
    "closed_on": ("closed_on", "date_closed", "closed"),
}
COMPLAINT_REQUIRED = ("record_id", "received_on", "subject_area", "description")

# The headers of the published layouts (as the intake README lists them), for messages.
FFT_HEADERS = {"period": "Period", "ods_code": "Org code", "site_code": "Site code",
               "setting": "Setting", "very_good": "Very good", "good": "Good",
               "neither_good_nor_poor": "Neither good nor poor", "poor": "Poor",
               "very_poor": "Very poor", "dont_know": "Don't know",
               "total_eligible": "Total eligible"}
FFT_RESPONSE_HEADERS = {"record_id": "Response ID", "ods_code": "Org code",
                        "site_code": "Site code", "responded_on": "Response date",
                        "setting": "Setting", "answer": "Answer", "comment": "Comment"}
COMPLAINT_HEADERS = {"record_id": "Complaint reference", "ods_code": "Org code",
                     "received_on": "Date received", "subject_area": "Subject",
                     "description": "Details", "risk.consequence": "Consequence",
                     "risk.likelihood": "Likelihood"}

_SETTINGS = {
    "inpatient": "inpatient", "inpatients": "inpatient", "ip": "inpatient",
    "day_case": "day_case", "daycase": "day_case",
    "a_and_e": "a_and_e", "ae": "a_and_e", "a_e": "a_and_e", "aande": "a_and_e",
    "accident_and_emergency": "a_and_e", "emergency_department": "a_and_e",
    "outpatient": "outpatient", "outpatients": "outpatient", "op": "outpatient",
    "maternity": "maternity", "mental_health": "mental_health", "mh": "mental_health",
    "community": "community", "community_health": "community", "ambulance": "ambulance",
    "gp": "gp", "general_practice": "gp", "dental": "dental",
}
# The answer as the FFT question's options are written, or as the 1-6 code vendors export
# (NHS England's order: 1 very good ... 5 very poor, 6 don't know).
_ANSWERS = {
    "very_good": "very_good", "good": "good", "neither_good_nor_poor": "neither_good_nor_poor",
    "neither_good_or_poor": "neither_good_nor_poor", "neither": "neither_good_nor_poor",
    "poor": "poor", "very_poor": "very_poor", "dont_know": "dont_know",
    "do_not_know": "dont_know",
    "1": "very_good", "2": "good", "3": "neither_good_nor_poor", "4": "poor", "5": "very_poor",
    "6": "dont_know",
}
_OUTCOMES = {"upheld": "upheld", "partly_upheld": "partly_upheld",
             "partially_upheld": "partly_upheld", "not_upheld": "not_upheld",
             "withdrawn": "withdrawn"}
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")


# -- value conversions (pure) -------------------------------------------------------------------
def fft_period(value: str) -> str:
    """``YYYY-MM`` from the ways a month is written in published files: 2026-10,
    2026-10-01, 10/2026, Oct-26, OCT-2026, October 2026. Anything else is returned as is."""
    v = value.strip()
    if m := re.fullmatch(r"(\d{4})-(\d{1,2})(?:-\d{1,2})?", v):
        return f"{m[1]}-{int(m[2]):02d}"
    if m := re.fullmatch(r"(\d{1,2})/(\d{4})", v):
        return f"{m[2]}-{int(m[1]):02d}"
    if m := re.fullmatch(r"([A-Za-z]{3,9})\.?[\s\-/]+(\d{2}|\d{4})", v):
        name = m[1].lower()
        months = [n for n, full in enumerate(_MONTHS, 1) if full.startswith(name)
                  or (name == "sept" and n == 9)]
        if len(months) == 1:
            year = int(m[2]) + (2000 if len(m[2]) == 2 else 0)
            return f"{year}-{months[0]:02d}"
    return v


def uk_date(value: str) -> str:
    """ISO ``YYYY-MM-DD`` from dd/mm/yyyy (the usual UK export) or ISO; else as written."""
    v = value.strip()
    if m := re.fullmatch(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})", v):
        return f"{m[3]}-{int(m[2]):02d}-{int(m[1]):02d}"
    if m := re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:[T ].*)?", v):
        return m[1]
    return v


def count(value: str) -> int | str:
    """An integer count ("1,234" -> 1234); a suppressed or odd value ("*") as written."""
    v = value.strip().replace(",", "")
    return int(v) if v.isdecimal() else value.strip()


def _lookup(table: dict[str, str], value: str) -> str:
    return table.get(header_key(value), value.strip())


def column_map(header: list[str], columns: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Field -> index of the column holding it (the first that matches)."""
    keys = [header_key(h) for h in header]
    found: dict[str, int] = {}
    for target, names in columns.items():
        for name in names:
            if name in keys:
                found[target] = keys.index(name)
                break
    return found


def _filled(cells: dict[str, str]) -> dict[str, str]:
    """The row's non-empty cells, stripped."""
    return {k: v.strip() for k, v in cells.items() if v is not None and v.strip()}


def _at_site(kind: str, get: dict[str, str], ods_code: str | None) -> dict[str, Any]:
    """A body of ``kind`` with its organisation (the row's, else ``ods_code``) and site."""
    body: dict[str, Any] = {"kind": kind, "version": 1}
    body["ods_code"] = get.get("ods_code", ods_code or "").upper()
    if "site_code" in get:
        body["site_code"] = get["site_code"].upper()
    return body


def fft_body(cells: dict[str, str], *, setting: str | None = None,
             ods_code: str | None = None) -> dict[str, Any]:
    """One FFT monthly submission from a row (field -> cell); empty cells are left out."""
    get = _filled(cells)
    body = _at_site("fft_monthly", get, ods_code)
    body["period"] = fft_period(get.get("period", ""))
    body["setting"] = _lookup(_SETTINGS, get.get("setting", setting or ""))
    for name in FFT_COUNTS:
        body[name] = count(get.get(name, ""))
    if "total_eligible" in get:
        body["total_eligible"] = count(get["total_eligible"])
    body["record_id"] = get.get("record_id") or (
        f"FFT-{body['ods_code']}-{body.get('site_code', '-')}-{body['setting']}-{body['period']}")
    return body


def fft_response_body(cells: dict[str, str], *, setting: str | None = None,
                      ods_code: str | None = None) -> dict[str, Any]:
    """One FFT response submission from a vendor export row; empty cells are left out."""
    get = _filled(cells)
    body = _at_site("fft_response", get, ods_code)
    body["record_id"] = get.get("record_id", "")
    body["responded_on"] = uk_date(get.get("responded_on", ""))
    body["setting"] = _lookup(_SETTINGS, get.get("setting", setting or ""))
    body["answer"] = _lookup(_ANSWERS, get.get("answer", ""))
    if "comment" in get:
        body["comment"] = get["comment"]
    return body


def complaint_body(cells: dict[str, str], *, ods_code: str | None = None) -> dict[str, Any]:
    """One complaint submission from a complaints export row; empty cells are left out."""
    get = _filled(cells)
    body: dict[str, Any] = {"kind": "complaint", "version": 1}
    body["ods_code"] = get.get("ods_code", ods_code or "").upper()
    for name in ("site_code", "record_id", "subject_area", "description"):
        if name in get:
            body[name] = get[name].upper() if name == "site_code" else get[name]
    for name in ("received_on", "acknowledged_on", "responded_on", "closed_on"):
        if name in get:
            body[name] = uk_date(get[name])
    if "outcome" in get:
        body["outcome"] = _lookup(_OUTCOMES, get["outcome"])
    risk = {part: count(get[f"risk.{part}"]) for part in ("consequence", "likelihood")
            if f"risk.{part}" in get}
    if risk:
        body["risk"] = risk
    return body


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- files ----------------------------------------------------------------------------------------
# Each CSV format: its columns, the fields it needs (besides "ods_code" and "setting", which
# options may give), the headers people are told.
LAYOUTS: dict[str, tuple[dict[str, tuple[str, ...]], tuple[str, ...], dict[str, str]]] = {
    "fft-csv": (FFT_COLUMNS, FFT_REQUIRED, FFT_HEADERS),
    "fft-responses-csv": (FFT_RESPONSE_COLUMNS, FFT_RESPONSE_REQUIRED, FFT_RESPONSE_HEADERS),
    "complaints-csv": (COMPLAINT_COLUMNS, COMPLAINT_REQUIRED, COMPLAINT_HEADERS),
}


class BulkFileError(ValueError):
    """The file cannot be loaded as asked (unknown format, missing columns)."""


def detect_format(path: Path) -> str:
    """``jsonl`` by extension; for a CSV, FFT or complaints by its header."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".txt"):
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            header = next(csv.reader(f), [])
        cols = set(column_map(header, FFT_COLUMNS))
        if set(FFT_COUNTS) & cols:
            return "fft-csv"
        if {"answer", "responded_on"} <= set(column_map(header, FFT_RESPONSE_COLUMNS)):
            return "fft-responses-csv"
        if {"received_on", "subject_area"} & set(column_map(header, COMPLAINT_COLUMNS)):
            return "complaints-csv"
        raise BulkFileError(f"{path}: the header is neither the FFT monthly layout, an FFT"
                            " responses export nor a complaints export; pass --format")
    raise BulkFileError(f"{path}: unknown file type; pass --format ({', '.join(FORMATS)})")


def check_columns(path: Path, fmt: str, *, setting: str | None = None,
                  ods_code: str | None = None) -> list[str]:
    """Fail early on a CSV missing a required column; return the columns to be ignored."""
    if fmt == "jsonl":
        return []
    columns, required, _ = LAYOUTS[fmt]
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f), [])
    found = column_map(header, columns)
    given = {"setting": setting, "ods_code": ods_code}
    missing = [c for c in (*required, *(("setting",) if fmt != "complaints-csv" else ()))
               if c not in found and not given.get(c)]
    if "ods_code" not in found and not ods_code:
        missing.append("ods_code")
    if missing:
        raise BulkFileError(missing_columns_message(path, fmt, list(dict.fromkeys(missing))))
    used = set(found.values())
    return [h for i, h in enumerate(header) if i not in used]


def missing_columns_message(path: Path, fmt: str, missing: list[str]) -> str:
    """Which columns a CSV lacks, by their published headers, and the layout it needs."""
    _, needs, headers = LAYOUTS[fmt]
    required = (*needs, "ods_code", *(("setting",) if fmt != "complaints-csv" else ()))
    options = {"setting": " (or --setting)", "ods_code": " (or --ods)"}

    def named(field: str) -> str:
        return f'"{headers[field]}"' + (options.get(field, "") if field in missing else "")

    layout = {"fft-csv": "an FFT monthly CSV", "fft-responses-csv": "an FFT responses export",
              "complaints-csv": "a complaints export"}[fmt]
    needed = ", ".join('"' + headers[f] + '"' for f in headers if f in required)
    return (f"{path}: missing column(s) {', '.join(named(f) for f in missing)}; {layout} needs"
            f" {needed}"
            " (see the intake README; case, spaces and punctuation do not matter)")


def records(path: Path, fmt: str, *, start_after: int = 0, setting: str | None = None,
            ods_code: str | None = None) -> Iterator[Record]:
    """The file's records from number ``start_after + 1`` on, one at a time."""
    if fmt == "jsonl":
        yield from _jsonl_records(path, start_after)
        return
    columns = LAYOUTS[fmt][0]
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        found = column_map(next(reader, []), columns)
        number, line = 0, reader.line_num + 1
        for row in reader:
            start, line = line, reader.line_num + 1  # a quoted cell may span lines
            if not any(cell.strip() for cell in row):
                continue
            number += 1
            if number <= start_after:
                continue
            cells = {name: row[i] if i < len(row) else "" for name, i in found.items()}
            body = (fft_body(cells, setting=setting, ods_code=ods_code) if fmt == "fft-csv"
                    else fft_response_body(cells, setting=setting, ods_code=ods_code)
                    if fmt == "fft-responses-csv"
                    else complaint_body(cells, ods_code=ods_code))
            yield Record(number, _encode(body), start)


def _jsonl_records(path: Path, start_after: int) -> Iterator[Record]:
    number = 0
    with path.open("rb") as f:
        for line_number, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            number += 1
            if number > start_after:
                yield Record(number, line, line_number)


def count_records(path: Path, fmt: str) -> int:
    """How many records the file holds (for the progress bar)."""
    if fmt == "jsonl":
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        next(reader, None)
        return sum(1 for row in reader if any(cell.strip() for cell in row))


def fingerprint(path: Path) -> str:
    """Identifies the file's content for resuming: its size and the hash of its start."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    return f"{path.stat().st_size}:{hashlib.sha256(head).hexdigest()[:32]}"


# -- checkpoint -----------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """Where a load stands, kept next to the input so that an interrupted load resumes.

    ``done``: records 1..done have their outcome counted in ``counts``. ``sent``: records
    up to this number may have reached intake (the resumed load asks for their outcome before
    sending them again). ``run_id`` keeps the message ids, hence the submission ids, of the
    resumed load the same as before the interruption."""

    file: str
    fingerprint: str
    format: str
    feed: str
    run_id: str
    done: int = 0
    sent: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {
        "accepted": 0, "duplicate": 0, "rejected": 0})
    updated_at: str = ""

    def save(self, path: Path) -> None:
        """Write atomically: a crash never leaves half a checkpoint."""
        self.updated_at = utc_now().isoformat(timespec="seconds")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise BulkFileError(f"{path}: not a checkpoint ({exc}); remove it or pass"
                                " --restart") from exc


def checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + ".checkpoint.json")


def rejections_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejected.jsonl")
