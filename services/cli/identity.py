"""``carewatch users`` and ``carewatch tokens``: the people and service accounts that may use
carewatch's APIs, their roles and their API tokens (the platform's ``identity`` schema)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import typer

from services.cli.common import JsonOption, fail, print_rows, with_db
from shared import identity

users_app = typer.Typer(help="Accounts: people and service accounts, with their roles.",
                        no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: hashed, scoped, expiring, revocable.",
                         no_args_is_help=True)
COMMAND_GROUPS = {"users": users_app, "tokens": tokens_app}

Role = Annotated[list[str] | None, typer.Option(
    "--role", help=f"A role (repeatable): {', '.join(identity.ROLES)}.")]


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="Account name (a person's e-mail; a service's"
                                        " name).")],
    role: Role = None,
    ods: Annotated[list[str] | None, typer.Option(
        "--ods", help="A provider user's provider (ODS code; repeatable).")] = None,
    service: Annotated[bool, typer.Option(
        "--service", help="A service account (a script, or a service acting for people).")]
    = False,
    display_name: Annotated[str, typer.Option(help="The name people see.")] = "",
) -> None:
    """Create an account with its roles (a provider user: with its providers)."""
    account = identity.NewAccount(name, role or [], "service" if service else "person",
                                  [c.strip().upper() for c in ods or []], display_name)
    problems = identity.account_problems(account)
    if problems:
        raise fail("; ".join(problems))

    async def work(conn: asyncpg.Connection) -> None:
        try:
            await identity.add_account(conn, account, identity.local_operator())
        except asyncpg.UniqueViolationError as exc:
            raise fail(f"account {name!r} exists") from exc
        except asyncpg.CheckViolationError as exc:
            raise fail(f"account {name!r} refused: {exc}") from exc

    with_db(work)
    typer.echo(f"account {name} ({account.kind}): {', '.join(sorted(set(account.roles)))}"
               + (f" for {', '.join(account.ods_codes)}" if account.ods_codes else ""))


@users_app.command("set-password")
def users_set_password(
    name: str,
    password: Annotated[str, typer.Option(
        prompt=True, hide_input=True, confirmation_prompt=True,
        help="The new password (asked for when not given; read from standard input when"
             " piped).")],
) -> None:
    """Set a person's password for the workspace's local sign-in (argon2id hash kept)."""
    problems = identity.password_problems(password)
    if problems:
        raise fail("; ".join(problems))
    if not with_db(lambda conn: identity.set_password(conn, name, password)):
        raise fail(f"no person {name!r}", 1)
    typer.echo(f"password of {name} set")


@users_app.command("list")
def users_list(as_json: JsonOption = False) -> None:
    """Every account, with its roles, providers and live tokens."""
    print_rows(with_db(identity.list_accounts), as_json,
               ["name", "kind", "roles", "ods_codes", "live_tokens", "disabled_at"])


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Disable an account: its tokens stop working at once."""
    if not with_db(lambda conn: identity.disable_account(conn, name)):
        raise fail(f"no account {name!r}", 1)
    typer.echo(f"account {name} disabled")


@tokens_app.command("create")
def tokens_create(
    account: str,
    scope: Role = None,
    days: Annotated[float, typer.Option(help="Days until it expires (at most 366).")] = 90,
    label: Annotated[str, typer.Option(help="What it is for (a script, a service).")] = "",
) -> None:
    """Issue a token for an account, limited to some of its roles (--role); printed once,
    only its hash is kept."""

    async def work(conn: asyncpg.Connection) -> str:
        try:
            return await identity.create_token(conn, account, scopes=scope, days=days,
                                               label=label, created_by=identity.local_operator())
        except ValueError as exc:
            raise fail(str(exc)) from exc

    token = with_db(work)
    typer.echo(token)
    typer.secho("keep it now: carewatch keeps only its hash", fg="yellow", err=True)


@tokens_app.command("list")
def tokens_list(account: Annotated[str | None, typer.Option(help="One account only.")] = None,
                as_json: JsonOption = False) -> None:
    """Tokens (never their secrets), with scope, expiry and revocation."""
    print_rows(with_db(lambda conn: identity.list_tokens(conn, account)), as_json,
               ["token_id", "account", "scopes", "label", "expires_at", "revoked_at"])


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token: it stops working at once."""
    if not with_db(lambda conn: identity.revoke_token(conn, token_id)):
        raise fail(f"no token {token_id!r}", 1)
    typer.echo(f"token {token_id} revoked")
