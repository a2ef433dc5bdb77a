"""The provider registry's files: carewatch's own CSV, and the ODS data files as NHS England
publishes them. Pure functions over the files' rows (reading the file aside).

Formats:
- ``carewatch``: a CSV with a header, the columns of data/providers.csv (``ods_code``,
  ``name``, ``provider_type``, ``quality_contact_email`` required; ``region``, ``icb_code``,
  ``icb_name``, ``network_code``, ``network_name``, ``cqc_location_id`` optional).
- ``epraccur`` (GP practices) and ``etr`` (NHS trusts), and any other ODS file in the same
  layout (``ods``, with ``--type``): the ODS standard layout, 27 columns and no header row.
  The columns read (1-based, as ODS numbers them): 1 organisation code, 2 name, 4 high level
  health geography (the ICB code), 10 postcode, 11 open date, 12 close date (YYYYMMDD),
  13 status code (A active, C closed, D dormant, P proposed; epraccur), 15 commissioner
  (the sub-ICB location; epraccur) and 26 prescribing setting (4 = GP practice; epraccur).
  Closed, dormant and proposed organisations, and epraccur's other prescribing settings
  (walk-in centres, out of hours, prisons...), are skipped and counted.

ODS files name no quality contact: a provider new to the registry gets ``contact`` (by default
the commissioner's quality team) until one is set; a known provider keeps its own.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROVIDER_TYPES = ("acute", "mental_health", "community", "ambulance", "specialist",
                  "gp_practice", "care_home", "voluntary")
REQUIRED = ("ods_code", "name", "provider_type", "quality_contact_email")
OPTIONAL = ("region", "icb_code", "icb_name", "network_code", "network_name", "cqc_location_id")
FORMATS = ("auto", "carewatch", "epraccur", "etr", "ods")
ODS_COLUMNS = 27
GP_PRACTICE_SETTING = "4"  # epraccur column 26: the prescribing setting of a GP practice

# The ODS standard layout, 0-based.
CODE, NAME, ICB, POSTCODE, OPENED, CLOSED, STATUS, COMMISSIONER, SETTING = \
    0, 1, 3, 9, 10, 11, 12, 14, 25

SAMPLE_ICBS = Path(__file__).resolve().parents[2] / "data" / "icbs.csv"


class RegistryFileError(ValueError):
    """The file is not a registry file in the format asked for."""


@dataclass
class Loaded:
    """The providers read from a file, and what was skipped and why."""

    rows: list[dict[str, str | None]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def detect_format(path: Path, first: list[str]) -> str:
    """``carewatch`` for a CSV with carewatch's header; else the ODS file its name or its
    prescribing-setting column says."""
    if {"ods_code", "name"} <= {c.strip().lower() for c in first}:
        return "carewatch"
    if len(first) != ODS_COLUMNS:
        raise RegistryFileError(
            f"{path}: neither carewatch's provider CSV (a header with {', '.join(REQUIRED)})"
            f" nor an ODS file ({ODS_COLUMNS} columns, no header): the first row has"
            f" {len(first)} column(s)")
    name = path.name.lower()
    for fmt in ("epraccur", "etr"):
        if name.startswith(fmt):
            return fmt
    return "epraccur" if first[SETTING].strip() else "ods"


def from_carewatch_csv(rows: Iterable[dict[str, str]], path: Path) -> Loaded:
    loaded = Loaded()
    for number, row in enumerate(rows, 2):
        missing = [c for c in REQUIRED if not (row.get(c) or "").strip()]
        if missing:
            raise RegistryFileError(f"{path}, line {number}: no {', '.join(missing)}")
        out: dict[str, str | None] = {c: row[c].strip() for c in REQUIRED}
        out["ods_code"] = (out["ods_code"] or "").upper()
        out.update({c: (row.get(c) or "").strip() or None for c in OPTIONAL})
        check_type(out["provider_type"] or "", f"{path}, line {number}")
        loaded.rows.append(out)
    return loaded


def from_ods_rows(rows: Iterable[list[str]], fmt: str, path: Path, *,
                  provider_type: str | None = None, icb: str | None = None,
                  icb_names: Mapping[str, str] | None = None,
                  networks: Mapping[str, tuple[str, str]] | None = None) -> Loaded:
    """Providers from an ODS file's rows: active ones only, of ``icb`` when given."""
    kind = provider_type or {"epraccur": "gp_practice", "etr": "acute"}.get(fmt)
    if kind is None:
        raise RegistryFileError(f"{path}: say which kind of provider it lists (--type"
                                f" {'|'.join(PROVIDER_TYPES)})")
    check_type(kind, str(path))
    loaded = Loaded()
    for number, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != ODS_COLUMNS:
            raise RegistryFileError(f"{path}, line {number}: {len(row)} columns; the ODS"
                                    f" layout has {ODS_COLUMNS}")
        cells = [cell.strip() for cell in row]
        code = cells[CODE].upper()
        if cells[CLOSED] or cells[STATUS] in ("C", "D", "P"):
            loaded.skipped["closed, dormant or proposed"] += 1
            continue
        if fmt == "epraccur" and cells[SETTING] != GP_PRACTICE_SETTING:
            loaded.skipped["not a GP practice (another prescribing setting)"] += 1
            continue
        icb_code = cells[ICB].upper() or None
        if icb and icb_code != icb.upper():
            loaded.skipped[f"not in ICB {icb.upper()}"] += 1
            continue
        network = (networks or {}).get(code)
        loaded.rows.append({
            "ods_code": code, "name": ods_name(cells[NAME]), "provider_type": kind,
            "quality_contact_email": None, "region": None, "icb_code": icb_code,
            "icb_name": (icb_names or {}).get(icb_code or ""),
            "network_code": network[0] if network else None,
            "network_name": ods_name(network[1]) if network else None, "cqc_location_id": None,
            # etr lists acute, mental-health, community and ambulance trusts alike: without
            # --type, a trust already registered keeps its type.
            "keep_type": "yes" if provider_type is None and fmt != "epraccur" else None})
    return loaded


def check_type(kind: str, where: str) -> None:
    if kind not in PROVIDER_TYPES:
        raise RegistryFileError(f"{where}: provider type {kind!r} is not one of"
                                f" {', '.join(PROVIDER_TYPES)}")


_KEEP_UPPER = {"NHS", "GP", "PCN", "ICB", "CIC", "UK", "LLP", "MH", "CCG", "HIV", "A&E"}
_SMALL = {"and", "of", "the", "for", "in", "on", "at", "&"}


def ods_name(name: str) -> str:
    """ODS keeps names in capitals: "GUY'S AND ST THOMAS' NHS FOUNDATION TRUST" -> "Guy's and
    St Thomas' NHS Foundation Trust" (NHS, GP, PCN and the like stay as they are)."""
    words = []
    for n, word in enumerate(name.split()):
        if word in _KEEP_UPPER or not word.isupper():
            words.append(word)
        elif n and word.lower() in _SMALL:
            words.append(word.lower())
        else:
            words.append("-".join(part.capitalize() for part in word.split("-")))
    return " ".join(words)


def read_icb_names(path: Path) -> dict[str, str]:
    """ICB code -> name, from a CSV with ``icb_code`` and ``icb_name`` columns."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        return {r["icb_code"].strip().upper(): r["icb_name"].strip() for r in csv.DictReader(f)
                if (r.get("icb_code") or "").strip()}


def read_networks(path: Path) -> dict[str, tuple[str, str]]:
    """Practice code -> (PCN code, PCN name), from the PCN membership list NHS England
    publishes (ePCN's "PCN Core Partner Details", saved as CSV: ``Partner Organisation
    Code``, ``PCN Code``, ``PCN Name``; practices that left a PCN have an end date)."""
    def key(name: str) -> str:
        return "".join(ch for ch in name.lower() if ch.isalnum())

    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [key(h) for h in next(reader, [])]
        try:
            code, pcn, pcn_name = (header.index(k) for k in
                                   ("partnerorganisationcode", "pcncode", "pcnname"))
        except ValueError as exc:
            raise RegistryFileError(f"{path}: expected the columns Partner Organisation Code,"
                                    " PCN Code and PCN Name") from exc
        ended = next((i for i, h in enumerate(header) if "enddate" in h), None)
        return {row[code].strip().upper(): (row[pcn].strip().upper(), row[pcn_name].strip())
                for row in reader if len(row) > max(code, pcn, pcn_name)
                and (ended is None or ended >= len(row) or not row[ended].strip())}


def read_registry(path: Path, fmt: str = "auto", *, provider_type: str | None = None,
                  icb: str | None = None, icb_names: Mapping[str, str] | None = None,
                  networks: Mapping[str, tuple[str, str]] | None = None) -> tuple[str, Loaded]:
    """The format read and the providers in ``path``."""
    if fmt not in FORMATS:
        raise RegistryFileError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        first = next(csv.reader(f), [])
    if fmt == "auto":
        fmt = detect_format(path, first)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        if fmt == "carewatch":
            loaded = from_carewatch_csv(csv.DictReader(f), path)
            for row in loaded.rows:
                if row["icb_code"] and not row["icb_name"]:
                    row["icb_name"] = (icb_names or {}).get(row["icb_code"] or "")
        else:
            loaded = from_ods_rows(csv.reader(f), fmt, path, provider_type=provider_type,
                                   icb=icb, icb_names=icb_names, networks=networks)
    return fmt, loaded
