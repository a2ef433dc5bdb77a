"""The archive of reports: every rendering a version of its own (``monitor.reports``,
append-only). A re-run whose report says exactly what the latest version says is not stored
again (it answers that version); anything else is the next version."""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.quality_monitor.reports.document import Report
from services.quality_monitor.reports.render import Rendered, Stamp, render

FORMATS = {"pdf": "application/pdf", "html": "text/html; charset=utf-8",
           "csv": "application/zip", "xlsx":
           "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
COLUMNS = {"pdf": "pdf", "html": "html", "csv": "csv_zip", "xlsx": "xlsx"}
SUFFIX = {"pdf": "pdf", "html": "html", "csv": "csv.zip", "xlsx": "xlsx"}


@dataclass(frozen=True)
class Stored:
    report_id: uuid.UUID
    kind: str
    scope: str
    period: str
    version: int
    title: str
    created: bool  # False: the latest version already said this
    rendered: Rendered | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"report_id": str(self.report_id), "kind": self.kind, "scope": self.scope,
                "period": self.period, "version": self.version, "title": self.title,
                "created": self.created}

    def file_name(self, fmt: str) -> str:
        return f"{self.kind}-{self.scope}-{self.period}-v{self.version}.{SUFFIX[fmt]}"


async def lock(conn: asyncpg.Connection, kind: str, scope: str, period: str) -> None:
    key = zlib.crc32(f"report:{kind}:{scope}:{period}".encode()) - 2**31
    await conn.execute("SELECT pg_advisory_xact_lock($1)", key)


async def latest(conn: asyncpg.Connection, kind: str, scope: str,
                 period: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT report_id, version, digest, title FROM monitor.reports WHERE kind = $1"
        " AND scope = $2 AND period = $3 ORDER BY version DESC LIMIT 1", kind, scope, period)


async def keep(conn: asyncpg.Connection, report: Report, *, at: datetime, actor: str,
               reason: str, organisation: str, only_if_new: bool = False,
               rendered: Rendered | None = None) -> Stored:
    """Store the report as its next version (in the caller's transaction), unless the latest
    version says the same; ``only_if_new``: unless any version exists (the schedule)."""
    await lock(conn, report.kind, report.scope, report.period)
    digest = report.digest()
    prior = await latest(conn, report.kind, report.scope, report.period)
    if prior is not None and (only_if_new or prior["digest"] == digest):
        return Stored(prior["report_id"], report.kind, report.scope, report.period,
                      prior["version"], prior["title"], created=False)
    version = 1 if prior is None else prior["version"] + 1
    out = rendered or render(report, Stamp(version, at, organisation))
    report_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO monitor.reports (report_id, kind, scope, period, version, title, digest,"
        " generated_at, generated_by, reason, document, pdf, html, csv_zip, xlsx) VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15)",
        report_id, report.kind, report.scope, report.period, version, report.title, digest,
        at, actor, reason, json.dumps(_without_svg(report.as_dict()), default=str),
        out.pdf, out.html, out.csv_zip, out.xlsx)
    return Stored(report_id, report.kind, report.scope, report.period, version, report.title,
                  created=True, rendered=out)


def _without_svg(doc: dict[str, Any]) -> dict[str, Any]:
    for s in doc["sections"]:
        for c in s["charts"]:
            c.pop("svg", None)
    return doc


async def listing(conn: asyncpg.Connection, kind: str | None = None, period: str | None = None,
                  scopes: list[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Versions kept, newest first (``scopes``: only these providers' and the 'all' ones)."""
    rows = await conn.fetch(
        "SELECT report_id, kind, scope, period, version, title, generated_at, generated_by,"
        " reason, length(pdf) AS pdf_bytes FROM monitor.reports"
        " WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR period = $2)"
        " AND ($3::text[] IS NULL OR scope = ANY($3))"
        " ORDER BY period DESC, kind, scope, version DESC LIMIT $4", kind, period, scopes, limit)
    return [dict(r) for r in rows]


async def fetch(conn: asyncpg.Connection, report_id: uuid.UUID,
                fmt: str) -> tuple[asyncpg.Record, bytes] | None:
    column = COLUMNS[fmt]
    row = await conn.fetchrow(
        f"SELECT report_id, kind, scope, period, version, title, {column} AS body"
        " FROM monitor.reports WHERE report_id = $1", report_id)
    if row is None:
        return None
    body = row["body"]
    return row, body.encode() if isinstance(body, str) else bytes(body)


async def find(conn: asyncpg.Connection, kind: str, scope: str, period: str,
               version: int | None = None) -> uuid.UUID | None:
    value = await conn.fetchval(
        "SELECT report_id FROM monitor.reports WHERE kind = $1 AND scope = $2 AND period = $3"
        " AND ($4::int IS NULL OR version = $4) ORDER BY version DESC LIMIT 1",
        kind, scope, period, version)
    return value if isinstance(value, uuid.UUID) else None
