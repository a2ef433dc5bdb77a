"""intake's operator commands: providers, feeds, quarantine, and ``submit`` (bulk files)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer

from services.cli.common import (
    JsonOption,
    Unreachable,
    acting,
    fail,
    joined,
    print_record,
    print_rows,
    run_async,
    with_db,
)
from services.cli.lazy import modules
from shared.roles import OPERATORS

# What the commands use loads when a command runs, not for `--help` (issue 20: the CLI
# starts in well under half a second).
if TYPE_CHECKING:
    import asyncpg

    from services.intake import bulk, credentials, store
    from services.intake.admission import Admission, Admissions
    from shared import settings as shared_settings
else:
    asyncpg, bulk, credentials, store, shared_settings = modules(
        "asyncpg", "services.intake.bulk", "services.intake.credentials",
        "services.intake.store", "shared.settings")

T = TypeVar("T")

providers_app = typer.Typer(help="The provider registry.", no_args_is_help=True)
feeds_app = typer.Typer(help="Provider feeds: what each may submit, and their API keys.",
                        no_args_is_help=True)
quarantine_app = typer.Typer(help="Rejected submissions: inspect, correct and resubmit (operators"
                             " only: the bodies are raw and may hold personal data; they are"
                             " deleted after CAREWATCH_QUARANTINE_RETENTION_DAYS).",
                             no_args_is_help=True)
COMMAND_GROUPS = {"providers": providers_app, "feeds": feeds_app, "quarantine": quarantine_app}


# -- providers --------------------------------------------------------------------------------
@providers_app.command("import")
def providers_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help=(
        "carewatch's provider CSV (as data/providers.csv), or an ODS data file as NHS"
        " England publishes it: epraccur (GP practices), etr (NHS trusts), or another file"
        " in the same 27-column layout with --type."))],
    fmt: Annotated[str, typer.Option("--format", help="auto, carewatch, epraccur, etr or ods"
                                     " (auto: by the header, else the file name).")] = "auto",
    provider_type: Annotated[str | None, typer.Option(
        "--type", help="The kind of provider an ODS file lists (default: gp_practice for"
        " epraccur, acute for etr).")] = None,
    icb: Annotated[str | None, typer.Option(
        help="Only the providers of this ICB (its ODS code, e.g. QKK).")] = None,
    pcn: Annotated[Path | None, typer.Option(
        help="The PCN membership list (ePCN's PCN Core Partner Details as CSV): each GP"
        " practice's primary care network.", exists=True, dir_okay=False)] = None,
    contact: Annotated[str | None, typer.Option(
        help="Quality contact of a provider new to the registry from an ODS file (ODS names"
        " none); default: CAREWATCH_QUALITY_TEAM_EMAIL.")] = None,
) -> None:
    """Load or update providers from carewatch's CSV or from an ODS data file."""
    from services.intake.registry import read_networks, read_registry

    try:
        networks = read_networks(pcn) if pcn else None
        fmt, loaded = read_registry(file, fmt, provider_type=provider_type, icb=icb,
                                    icb_names=store.icb_names(), networks=networks)
        for row in loaded.rows:
            store.check_provider(row)
    except (OSError, ValueError, KeyError) as exc:
        raise fail(str(exc)) from exc
    default_contact = contact or shared_settings.get_settings().quality_team_email

    async def work(conn: asyncpg.Connection) -> int:
        return await store.upsert_providers(conn, loaded.rows, default_contact)

    n = with_db(work)
    kinds = ", ".join(f"{c} {k}" for k, c in sorted(
        Counter(str(r["provider_type"]) for r in loaded.rows).items()))
    typer.echo(f"providers: {n} loaded from {file} ({fmt}){f': {kinds}' if n else ''}")
    for why, count in sorted(loaded.skipped.items()):
        typer.echo(f"  skipped {count}: {why}")


@providers_app.command("list")
def providers_list(as_json: JsonOption = False) -> None:
    """List the registered providers."""
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await store.list_providers(conn)]

    print_rows(with_db(work), as_json, ["ods_code", "name", "provider_type", "icb_name",
                                        "network_name", "quality_contact_email"], width=45)


# -- feeds ------------------------------------------------------------------------------------
@feeds_app.command("create")
def feeds_create(
    feed_user: Annotated[str, typer.Argument(help="The feed's name: its RabbitMQ user name"
                                             " for AMQP feeds.")],
    ods: Annotated[list[str] | None, typer.Option("--ods", help="An ODS code it may submit"
                                                  " for (repeatable).")] = None,
    description: str = "",
    api_key: Annotated[bool, typer.Option(
        "--api-key", help="Also issue an API key for the HTTP API, printed once (replaces"
        " the feed's previous key).")] = False,
    public: Annotated[bool, typer.Option(
        "--public", help="The public's door (the workspace's public feedback page): it may"
        " submit public_feedback for any registered provider, and nothing else.")] = False,
) -> None:
    """Register a feed for the given ODS codes (re-enables a revoked feed, adds codes), or
    the public's door (--public, no ODS codes)."""
    codes = [c.strip().upper() for c in ods or []]
    if public == bool(codes):
        raise fail("give --ods CODE (a provider feed) or --public (the public's door), not"
                   " both" if codes else "give at least one --ods CODE, or --public")
    key = credentials.new_api_key() if api_key else None

    async def work(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await store.register_feed(conn, feed_user, codes, description, public_door=public)
            if key:
                await store.set_api_key(conn, feed_user, credentials.api_key_hash(key))

    try:
        with_db(work)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"feed {feed_user!r} is the public's door: public feedback about any provider"
               if public else f"feed {feed_user!r} may submit for {', '.join(codes)}")
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
            if r["public_door"]:
                r["ods_codes"] = "(the public's door: any provider)"
    print_rows(rows, as_json, ["feed_user", "status", "api_key", "ods_codes", "description"])


# -- quarantine -------------------------------------------------------------------------------
class QuarantineStatus(StrEnum):
    open = "open"
    resubmitted = "resubmitted"
    discarded = "discarded"
    expired = "expired"


# The quarantine holds raw bodies (personal data): OPERATORS only. With CAREWATCH_TOKEN the
# account must be an operator and is recorded; without one, the local operator.
@quarantine_app.command("list")
def quarantine_list(as_json: JsonOption = False,
                    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
                    status: Annotated[QuarantineStatus, typer.Option(
                        help="Which rejected submissions.")] = QuarantineStatus.open,
                    feed: Annotated[str | None, typer.Option(help="Only this feed.")] = None,
                    ) -> None:
    """Rejected submissions, newest first, with their reasons."""
    async def work(conn: asyncpg.Connection) -> tuple[list[dict[str, Any]], int]:
        await acting(conn, OPERATORS)
        rows = [dict(r) for r in await store.list_quarantine(conn, status.value, limit, feed)]
        total = await conn.fetchval(
            "SELECT count(*) FROM intake.quarantine WHERE status = $1"
            " AND ($2::text IS NULL OR feed_user = $2)", status.value, feed)
        return rows, total

    rows, total = with_db(work)
    if not as_json:
        for r in rows:
            r["reasons"] = joined([f"{x['loc'] or '<message>'}: {x['msg']}" for x in r["reasons"]])
    print_rows(rows, as_json, ["submission_id", "received_at", "feed_user", "reasons"], width=110,
               total=total)


@quarantine_app.command("show")
def quarantine_show(submission_id: uuid.UUID, as_json: JsonOption = False) -> None:
    """OPERATORS ONLY: one rejected submission, its reasons and the body as received (raw,
    unredacted: it may hold personal data; deleted after the retention period)."""
    async def work(conn: asyncpg.Connection) -> dict[str, Any] | None:
        await acting(conn, OPERATORS)
        row = await store.get_quarantined(conn, submission_id)
        return dict(row) if row else None

    row = with_db(work)
    if row is None:
        raise fail(f"no quarantined submission {submission_id}", 1)
    row["body"] = (row["body"].decode("utf-8", errors="replace") if row["body"] is not None
                   else f"(deleted {row['body_deleted_at']:%Y-%m-%d})")
    if not as_json:
        row["reasons"] = [f"{x['loc'] or '<message>'}: {x['msg']} ({x['type']})"
                          for x in row["reasons"]]
    print_record(row, as_json)


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
    from services.intake.admission import Admissions
    from services.intake.app import build
    from services.intake.validation import MAX_BODY_BYTES
    from shared.db import create_pool

    settings = shared_settings.get_settings()
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
        "--file", help="The corrected body (JSON), or a message file with a \"body\".")] = None,
    edit: Annotated[bool, typer.Option(
        "--edit", help="Correct the stored body in $EDITOR first.")] = False,
) -> None:
    """Run a rejected submission through intake again, as its feed, after correction (or as
    stored, once the cause is fixed elsewhere: a feed registered, a provider added). The row
    is marked resubmitted; a new rejection is a new quarantine row linked to this one."""
    from services.intake.admission import Incoming

    async def work(conn: asyncpg.Connection, admissions: Admissions) -> Admission:
        by = await acting(conn, OPERATORS)
        row = await store.get_quarantined(conn, submission_id)
        if row is None:
            raise fail(f"no quarantined submission {submission_id}", 1)
        if row["status"] != "open":
            raise fail(f"submission {submission_id} is {row['status']}, not open", 1)
        if row["body"] is None and file is None:
            raise fail("the body was deleted (quarantine retention): pass --file", 2)
        body = bytes(row["body"] or b"")
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
def quarantine_discard(submission_id: uuid.UUID) -> None:
    """Close a rejected submission without resubmitting it."""
    async def work(conn: asyncpg.Connection) -> bool:
        by = await acting(conn, OPERATORS)
        return await store.resolve_quarantined(conn, submission_id, "discarded", by)

    if not with_db(work):
        raise fail(f"no open quarantined submission {submission_id}", 1)
    typer.echo(f"{submission_id} discarded")


# -- submit -----------------------------------------------------------------------------------
def submit(
    file: Annotated[Path, typer.Argument(help="A CSV (FFT monthly layout, an FFT responses"
                                         " export, or a complaints export) or JSON lines (one"
                                         " submission a line).",
                                         exists=True, dir_okay=False, readable=True)],
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, fft-csv,"
                                     " fft-responses-csv or complaints-csv.")] = "auto",
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

    settings = shared_settings.get_settings()
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
            # A vendor's FFT export goes as bulk messages (one a batch).
            amqp = loader.AmqpSender(settings, url, cp.run_id, stall_timeout=timeout,
                                     bulk=fmt == "fft-responses-csv")
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
    except (loader.aio_pika.exceptions.AMQPConnectionError, TimeoutError) as exc:
        if http or cp.sent:  # not the broker's first answer
            raise fail(f"{type(exc).__name__}: {exc} (stopped after record {cp.done:,};"
                       " run again to resume)", 1) from exc
        raise fail(str(Unreachable("RabbitMQ", "--amqp-url or CAREWATCH_AMQP_URL", url, exc)),
                   1) from None
    except (OSError, asyncpg.PostgresError, loader.aio_pika.exceptions.AMQPError) as exc:
        raise fail(f"{type(exc).__name__}: {exc} (stopped after record {cp.done:,};"
                   " run again to resume)", 1) from exc
    finally:
        _drop_if_empty(bulk.rejections_path(file))
    typer.echo(json.dumps({"file": str(file), "records": total, **done.counts}))
    rejected = done.counts.get("rejected", 0)
    if rejected:
        _show_rejections(bulk.rejections_path(file), rejected)
    sys.stdout.flush()
    if rejected and not done.counts.get("accepted") and not done.counts.get("duplicate"):
        raise fail(f"every record of {file} was rejected: nothing was loaded", 1)


def _drop_if_empty(path: Path) -> None:
    """No empty FILE.rejected.jsonl is left behind."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size == 0:
            path.unlink()


def _show_rejections(path: Path, rejected: int, shown: int = 5) -> None:
    """The first rejections, by line of the file, and where the rest are."""
    lines: list[str] = []
    with contextlib.suppress(OSError), path.open(encoding="utf-8") as f:
        for raw in itertools.islice(f, shown):
            r = json.loads(raw)
            reasons = [f"{x.get('loc') or '<record>'}: {x.get('msg')}" for x in r["reasons"]]
            lines.append(f"  line {r.get('line', '?')}: {joined(reasons)}")
    typer.echo(f"rejected {rejected:,} record(s):", err=True)
    for line in lines:
        typer.echo(line, err=True)
    more = rejected - len(lines)
    typer.echo(f"  {f'(+{more:,} more) ' if more > 0 else ''}every reason, by line:"
               f" {path}", err=True)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{o} {counts.get(o, 0):,}" for o in ("accepted", "duplicate", "rejected"))


COMMANDS = {"submit": submit}
