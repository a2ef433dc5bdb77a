"""intake's operator commands: providers, feeds, quarantine, and ``submit`` (bulk files)."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import click
import typer

from services.cli.common import JsonOption, fail, print_record, print_rows, run_async, with_db
from services.intake import bulk, store
from services.intake.admission import Admission, Admissions, Incoming
from services.intake.credentials import api_key_hash, new_api_key
from services.intake.validation import MAX_BODY_BYTES
from shared.settings import get_settings

T = TypeVar("T")

providers_app = typer.Typer(help="The provider registry.", no_args_is_help=True)
feeds_app = typer.Typer(help="Provider feeds: what each may submit, and their API keys.",
                        no_args_is_help=True)
quarantine_app = typer.Typer(help="Rejected submissions: inspect, correct and resubmit.",
                             no_args_is_help=True)
COMMAND_GROUPS = {"providers": providers_app, "feeds": feeds_app, "quarantine": quarantine_app}


# -- providers --------------------------------------------------------------------------------
@providers_app.command("import")
def providers_import(file: Path) -> None:
    """Load or update providers from a CSV (ods_code,name,provider_type,quality_contact_email,region)."""
    try:
        rows = store.read_providers_csv(file)
    except (OSError, ValueError, KeyError) as exc:
        raise fail(str(exc)) from exc

    async def work(conn: asyncpg.Connection) -> int:
        return await store.upsert_providers(conn, rows)

    typer.echo(f"providers: {with_db(work)} loaded from {file}")


@providers_app.command("list")
def providers_list(as_json: JsonOption = False) -> None:
    """List the registered providers."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_providers(conn)]

    print_rows(with_db(work), as_json, ["ods_code", "name", "provider_type", "quality_contact_email"])


# -- feeds ------------------------------------------------------------------------------------
@feeds_app.command("create")
def feeds_create(
    feed_user: Annotated[str, typer.Argument(help="The feed's name: its RabbitMQ user name"
                                             " for AMQP feeds.")],
    ods: Annotated[list[str], typer.Option("--ods", help="An ODS code it may submit for"
                                           " (repeatable).")],
    description: str = "",
    api_key: Annotated[bool, typer.Option(
        "--api-key", help="Also issue an API key for the HTTP API, printed once (replaces"
        " the feed's previous key).")] = False,
) -> None:
    """Register a feed for the given ODS codes (re-enables a revoked feed, adds codes)."""
    key = new_api_key() if api_key else None

    async def work(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await store.register_feed(conn, feed_user, [c.strip().upper() for c in ods],
                                      description)
            if key:
                await store.set_api_key(conn, feed_user, api_key_hash(key))

    try:
        with_db(work)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"feed {feed_user!r} may submit for {', '.join(c.upper() for c in ods)}")
    if key:
        typer.echo("API key (shown once; intake keeps only its SHA-256):", err=True)
        typer.echo(key)


@feeds_app.command("revoke")
def feeds_revoke(feed_user: str) -> None:
    """Refuse a feed's submissions from now on (AMQP and HTTP); its API key is deleted."""
    async def work(conn: asyncpg.Connection) -> bool:
        return await store.revoke_feed(conn, feed_user)

    if not with_db(work):
        raise fail(f"no active feed {feed_user!r}", 1)
    typer.echo(f"feed {feed_user!r} revoked")


@feeds_app.command("list")
def feeds_list(as_json: JsonOption = False) -> None:
    """Every feed: its ODS codes, whether it has an API key, whether it is revoked."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_feeds(conn)]

    rows = with_db(work)
    if not as_json:
        for r in rows:
            r["ods_codes"] = ",".join(r["ods_codes"])
            r["status"] = "revoked" if r["revoked_at"] else "active"
    print_rows(rows, as_json, ["feed_user", "status", "api_key", "ods_codes", "description"])


# -- quarantine -------------------------------------------------------------------------------
@quarantine_app.command("list")
def quarantine_list(as_json: JsonOption = False, limit: int = 50,
                    status: Annotated[str, typer.Option(
                        help="open, resubmitted or discarded")] = "open",
                    feed: Annotated[str | None, typer.Option(help="Only this feed.")] = None,
                    ) -> None:
    """Rejected submissions, newest first, with their reasons."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_quarantine(conn, status, limit, feed)]

    rows = with_db(work)
    if not as_json:
        for r in rows:
            r["reasons"] = "; ".join(f"{x['loc'] or '<message>'}: {x['msg']}" for x in r["reasons"])
    print_rows(rows, as_json, ["submission_id", "received_at", "feed_user", "reasons"], width=90)


@quarantine_app.command("show")
def quarantine_show(submission_id: uuid.UUID) -> None:
    """One rejected submission: its reasons and the body as received."""
    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        row = await store.get_quarantined(conn, submission_id)
        return dict(row) if row else None

    row = with_db(work)
    if row is None:
        raise fail(f"no quarantined submission {submission_id}", 1)
    row["body"] = row["body"].decode("utf-8", errors="replace")
    print_record(row)


def corrected_body(text: bytes) -> bytes:
    """A corrected submission from a file: the body itself, or a message file (as in
    examples/submissions/) whose ``body`` is taken."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict) and "body" in value and "routing_key" in value:
        body = value["body"]
        return body.encode() if isinstance(body, str) else \
            json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return text


async def _with_admissions(work: Callable[[asyncpg.Connection, Admissions], Awaitable[T]]) -> T:
    """Admit from the CLI through intake's own Admissions: the events land in intake's
    outbox, published by the running intake's relay (or at its next start)."""
    from services.intake.app import build
    from shared.db import create_pool

    settings = get_settings()
    runtime = build(settings)
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        admissions = Admissions(lambda: pool, runtime.outbox, settings.namespace,
                                keep_body_bytes=MAX_BODY_BYTES)
        async with pool.acquire() as conn:
            return await work(conn, admissions)
    finally:
        await pool.close()


@quarantine_app.command("resubmit")
def quarantine_resubmit(
    submission_id: uuid.UUID,
    file: Annotated[Path | None, typer.Option(
        "--file", help="The corrected body (JSON), or a message file with a `body`.")] = None,
    edit: Annotated[bool, typer.Option(
        "--edit", help="Correct the stored body in $EDITOR first.")] = False,
    by: Annotated[str, typer.Option(help="Who resubmits (kept on the row).")] = getpass.getuser(),
) -> None:
    """Run a rejected submission through intake again, as its feed, after correction (or as
    stored, once the cause is fixed elsewhere: a feed registered, a provider added). The row
    is marked resubmitted; a new rejection is a new quarantine row linked to this one."""
    async def work(conn: asyncpg.Connection, admissions: Admissions) -> Admission:
        row = await store.get_quarantined(conn, submission_id)
        if row is None:
            raise fail(f"no quarantined submission {submission_id}", 1)
        if row["status"] != "open":
            raise fail(f"submission {submission_id} is {row['status']}, not open", 1)
        body = bytes(row["body"])
        if file is not None:
            body = corrected_body(file.read_bytes())
        elif (row["body_size"] or len(body)) > len(body):
            raise fail("only the beginning of this oversized body was kept: pass --file", 2)
        if edit:
            edited = click.edit(body.decode("utf-8", errors="replace"), extension=".json")
            if edited is None:
                raise fail("not resubmitted: the editor was closed without saving", 1)
            body = edited.encode()
        admission = await admissions.admit(Incoming(
            body=body, feed_user=row["feed_user"], message_id=f"resubmission:{submission_id}",
            routing_key=row["routing_key"], content_type="application/json",
            resubmission_of=submission_id))
        await store.resolve_quarantined(conn, submission_id, "resubmitted", by,
                                        admission.submission_id)
        return admission

    admission = run_async(_with_admissions(work))
    typer.echo(json.dumps(admission.as_json(), indent=2))
    if admission.outcome == "rejected":
        typer.secho("rejected again: see the reasons above; the new quarantine row is"
                    f" {admission.submission_id}", fg="yellow", err=True)
        raise typer.Exit(3)


@quarantine_app.command("discard")
def quarantine_discard(submission_id: uuid.UUID,
                       by: Annotated[str, typer.Option(help="Who discards.")] = getpass.getuser(),
                       ) -> None:
    """Close a rejected submission without resubmitting it."""
    async def work(conn: asyncpg.Connection) -> bool:
        return await store.resolve_quarantined(conn, submission_id, "discarded", by)

    if not with_db(work):
        raise fail(f"no open quarantined submission {submission_id}", 1)
    typer.echo(f"{submission_id} discarded")


# -- submit -----------------------------------------------------------------------------------
def submit(
    file: Annotated[Path, typer.Argument(help="A CSV (FFT monthly layout, or a complaints"
                                         " export) or JSON lines (one submission a line).",
                                         exists=True, dir_okay=False, readable=True)],
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, fft-csv or"
                                     " complaints-csv.")] = "auto",
    setting: Annotated[str | None, typer.Option(
        help="FFT setting for a CSV without a setting column (inpatient, a_and_e, ...).")] = None,
    ods: Annotated[str | None, typer.Option(
        help="ODS code for a CSV without an organisation column.")] = None,
    amqp_url: Annotated[str | None, typer.Option(
        help="Publish as this feed (its RabbitMQ user); default CAREWATCH_AMQP_URL.")] = None,
    http: Annotated[str | None, typer.Option(
        help="Use intake's HTTP API at this base URL instead of AMQP.")] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="CAREWATCH_API_KEY", help="The feed's API key (with --http).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1000)] = 500,
    in_flight: Annotated[int, typer.Option(min=1, max=64, help="Batches in flight.")] = 8,
    restart: Annotated[bool, typer.Option(help="Ignore the checkpoint; load from the start"
                                          " (records already admitted become duplicates).")
                       ] = False,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds without an"
                                           " outcome (resumable).")] = 120.0,
) -> None:
    """Submit a bulk file through intake, with a progress bar and the accepted / duplicate /
    rejected counts. Interrupted, it resumes where it stopped (checkpoint FILE.checkpoint.json);
    rejected records and their reasons are written to FILE.rejected.jsonl."""
    from services.intake import submit as loader

    settings = get_settings()
    try:
        fmt = bulk.detect_format(file) if fmt == "auto" else fmt
        if fmt not in bulk.FORMATS:
            raise bulk.BulkFileError(f"unknown format {fmt!r}; expected {', '.join(bulk.FORMATS)}")
        ignored = bulk.check_columns(file, fmt, setting=setting, ods_code=ods)
    except (bulk.BulkFileError, OSError) as exc:
        raise fail(str(exc)) from exc
    if http and not api_key:
        raise fail("--http needs --api-key (or CAREWATCH_API_KEY)")
    if ignored:
        typer.echo(f"ignoring columns: {', '.join(ignored)}", err=True)
    url = amqp_url or settings.amqp_url
    feed = "http" if http else loader.url_user(url)
    cp_path, fingerprint = bulk.checkpoint_path(file), bulk.fingerprint(file)
    try:
        cp = None if restart else bulk.Checkpoint.load(cp_path)
    except bulk.BulkFileError as exc:
        raise fail(str(exc)) from exc
    if cp is not None and (cp.fingerprint, cp.format, cp.feed) != (fingerprint, fmt, feed):
        raise fail(f"{cp_path} is from a load of another file, format or feed: pass --restart")
    total = bulk.count_records(file, fmt)
    if cp is not None and cp.done >= total:
        typer.echo(f"{file}: already loaded ({_counts(cp.counts)}); --restart to load again")
        return
    if cp is None:
        cp = bulk.Checkpoint(str(file.resolve()), fingerprint, fmt, feed, loader.new_run_id())
    elif cp.done:
        typer.echo(f"resuming after record {cp.done:,} of {total:,}", err=True)

    async def work() -> bulk.Checkpoint:
        sender: loader.Sender
        if http:
            assert api_key is not None
            sender = loader.HttpSender(http, api_key, cp.run_id, timeout=timeout)
        else:
            amqp = loader.AmqpSender(settings, url, cp.run_id, stall_timeout=timeout)
            await amqp.open()
            sender = amqp
        reporter = loader.Reporter(total, cp.done, file.name)
        mode = "a" if cp.done or cp.sent else "w"
        try:
            with bulk.rejections_path(file).open(mode, encoding="utf-8") as rejections:
                return await loader.load(file, fmt, sender, cp, cp_path, reporter, rejections,
                                         batch_size=batch_size, in_flight=in_flight,
                                         setting=setting, ods_code=ods)
        finally:
            reporter.stop()
            await sender.close()
            elapsed = loader.time.monotonic() - reporter.started
            typer.echo(f"{file}: {cp.done:,} of {total:,} records: {_counts(cp.counts)}"
                       f" ({elapsed:.1f}s, {reporter.rate():,.0f} records/s)", err=True)

    try:
        done = asyncio.run(work())
    except loader.LoadError as exc:
        raise fail(f"{exc} (stopped after record {cp.done:,}; run again to resume)", 1) from exc
    except KeyboardInterrupt:
        typer.secho(f"interrupted after record {cp.done:,}; run again to resume", err=True)
        raise typer.Exit(130) from None
    except (OSError, asyncpg.PostgresError, loader.aio_pika.exceptions.AMQPError) as exc:
        raise fail(f"{type(exc).__name__}: {exc} (stopped after record {cp.done:,};"
                   " run again to resume)", 1) from exc
    typer.echo(json.dumps({"file": str(file), "records": total, **done.counts}))
    if done.counts.get("rejected"):
        typer.echo(f"reasons of rejected records: {bulk.rejections_path(file)}", err=True)
    sys.stdout.flush()


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{o} {counts.get(o, 0):,}" for o in ("accepted", "duplicate", "rejected"))


COMMANDS = {"submit": submit}
