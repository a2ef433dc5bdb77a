"""``carewatch reports``: make a report now (a new version if the data changed), list the
versions kept, and write one out as PDF, HTML, CSV (zip) or XLSX.

Role checks use the account of ``CAREWATCH_TOKEN``: making a report needs quality_team or
quality_lead; reading needs one of the commissioner's roles, or a provider user for its own
providers' reports (the "all providers" report is the commissioner's). Without a token the
command runs as the local operator (who holds the database's credentials anyway), recorded
as such.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import asyncpg
import typer

from services.cli.common import JsonOption, fail, print_record, print_rows, with_db
from shared.identity import (
    AccessDenied,
    Identity,
    identify,
    local_operator,
)
from shared.roles import READERS, REPORT_MAKERS

reports_app = typer.Typer(help="Reports: the monthly CQRM pack, the quarterly Quality &"
                          " Performance report, \"you said, we did\"; versions kept.",
                          no_args_is_help=True)
COMMAND_GROUPS = {"reports": reports_app}


class Kind(StrEnum):
    cqrm = "cqrm"
    qp = "qp"
    yswd = "yswd"


KIND_NAMES = {"cqrm": "cqrm_pack", "qp": "quality_performance", "yswd": "you_said_we_did"}


class Format(StrEnum):
    pdf = "pdf"
    html = "html"
    csv = "csv"
    xlsx = "xlsx"


KindOpt = Annotated[Kind, typer.Option(
    "--kind", help="cqrm: a provider's monthly pack; qp: the quarterly Quality & Performance"
    " report (all providers); yswd: \"you said, we did\" (a provider, a quarter).")]
ProviderOpt = Annotated[str | None, typer.Option(
    "--provider", help="The provider's ODS code (cqrm, yswd).")]
PeriodOpt = Annotated[str, typer.Option(
    "--period", help="YYYY-MM for a CQRM pack, YYYY-Qn for the quarterly reports.")]


async def caller(conn: asyncpg.Connection, token: str | None, roles: tuple[str, ...]
                 ) -> Identity | None:
    """The token's identity, which must hold one of ``roles``; None: the local operator."""
    if not token:
        return None
    identity = await identify(conn, token)
    if not identity.has_any(roles):
        raise AccessDenied(403, f"{identity.actor} holds none of {', '.join(sorted(roles))}")
    return identity


def scope_of(kind: str, provider: str | None) -> str:
    if kind == "quality_performance":
        return "all"
    if not provider:
        raise fail("--provider is needed for this kind of report")
    return provider.strip().upper()


def _refused(identity: Identity | None, scope: str) -> bool:
    return identity is not None and identity.provider_scoped and \
        (scope == "all" or not identity.may_see(scope))


@reports_app.command("generate")
def generate(kind: KindOpt, period: PeriodOpt, provider: ProviderOpt = None,
             reason: Annotated[str, typer.Option(help="Why it is made now (kept with the"
                                                 " version).")] = "on demand",
             as_json: JsonOption = False) -> None:
    """Make a report now: a new version when the data changed since the latest (a re-run
    after late data), else the latest version is named."""
    from services.quality_monitor.reports.runtime import reports_for_cli

    name = KIND_NAMES[kind.value]
    scope = scope_of(name, provider)

    async def work(conn: asyncpg.Connection) -> dict[str, object]:
        reports, settings = reports_for_cli()
        identity = await caller(conn, settings.token, REPORT_MAKERS)
        if _refused(identity, scope):
            raise AccessDenied(403, "a provider user may not make reports")
        actor = identity.actor if identity else local_operator()
        from shared.db import create_pool

        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            stored = await reports.generate(pool, name, scope, period, actor=actor,
                                            reason=reason)
        finally:
            await pool.close()
        return stored.as_dict()

    try:
        result = with_db(work)
    except AccessDenied as exc:
        raise fail(exc.detail, 3) from exc
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print_record(result, True)
        return
    said = "made" if result["created"] else "unchanged since"
    typer.echo(f"{result['title']}: {said} version {result['version']} ({result['report_id']})")


@reports_app.command("list")
def list_reports(kind: Annotated[Kind | None, typer.Option("--kind")] = None,
                 period: Annotated[str | None, typer.Option("--period")] = None,
                 provider: ProviderOpt = None, as_json: JsonOption = False) -> None:
    """The versions kept, newest first."""
    from services.quality_monitor.reports import archive
    from shared.settings import get_settings

    async def work(conn: asyncpg.Connection) -> list[dict[str, object]]:
        identity = await caller(conn, get_settings().token, READERS)
        scopes = [provider.upper()] if provider else None
        if identity is not None and identity.provider_scoped:
            scopes = sorted(s for s in (scopes or identity.ods_codes) if identity.may_see(s))
        return await archive.listing(conn, KIND_NAMES[kind.value] if kind else None, period,
                                     scopes)

    try:
        rows = with_db(work)
    except AccessDenied as exc:
        raise fail(exc.detail, 3) from exc
    print_rows(rows, as_json, ["report_id", "kind", "scope", "period", "version",
                               "generated_at", "generated_by", "reason"])


@reports_app.command("get")
def get(out: Annotated[Path, typer.Option("--out", help="The file to write.")],
        report_id: Annotated[uuid.UUID | None, typer.Option("--id")] = None,
        kind: Annotated[Kind | None, typer.Option("--kind")] = None,
        period: Annotated[str | None, typer.Option("--period")] = None,
        provider: ProviderOpt = None,
        version: Annotated[int | None, typer.Option(help="Default: the latest.")] = None,
        fmt: Annotated[Format, typer.Option("--format")] = Format.pdf) -> None:
    """Write one version of a report (by --id, or by --kind --period [--provider]) as PDF,
    HTML, CSV (a zip of one file per table) or XLSX (a sheet per table)."""
    from services.quality_monitor.reports import archive
    from shared.settings import get_settings

    async def work(conn: asyncpg.Connection) -> tuple[str, bytes]:
        identity = await caller(conn, get_settings().token, READERS)
        rid = report_id
        if rid is None:
            if kind is None or period is None:
                raise fail("give --id, or --kind and --period (and --provider)")
            name = KIND_NAMES[kind.value]
            rid = await archive.find(conn, name, scope_of(name, provider), period, version)
        found = None if rid is None else await archive.fetch(conn, rid, fmt.value)
        if found is None or _refused(identity, found[0]["scope"]):
            raise fail("no such report", 1)
        row, body = found
        return (f"{row['title']}, version {row['version']}", body)

    try:
        title, body = with_db(work)
    except AccessDenied as exc:
        raise fail(exc.detail, 3) from exc
    out.write_bytes(body)
    typer.echo(f"{title}: {fmt.value} written to {out} ({len(body)} bytes)")
