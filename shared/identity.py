"""Who is asking: people and service accounts, their roles, API tokens, and the access
control every service's HTTP surface applies by default.

Identities live in the platform's ``identity`` schema (``shared/identity_migrations``): the
administrator writes it (``carewatch users``/``carewatch tokens``), every service only reads
it. A request carries ``Authorization: Bearer cw_<id>_<secret>``; the token's account, its
roles (the token's scopes) and, for a provider user, its ODS codes make the ``Identity``.

Each service declares the roles of each of its routes in one table (``Access`` per
``(method, path)``), handed to ``HttpSurface.declare``. ``AccessControl`` (ASGI middleware,
applied to every route of the app) refuses any request without a valid identity, except on a
``PUBLIC`` route (liveness), and refuses, with 403, a route that has no declared roles: a
route added later is closed until someone says who may use it (tests/unit/test_access.py
fails on it).

Service accounts (the workspace, which signs people in with OpenID Connect or local
accounts) may act for a person: ``X-Carewatch-On-Behalf-Of: <account name>``. The request then
has that person's roles and scope, and the audit trail records ``person (via service)``.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import secrets
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

# The roles live in a module with no imports (the CLIs name them without loading this one).
from shared.roles import ICB_STAFF as ICB_STAFF
from shared.roles import LAY_MEMBER as LAY_MEMBER
from shared.roles import OPERATOR as OPERATOR
from shared.roles import PROVIDER_USER as PROVIDER_USER
from shared.roles import QUALITY_LEAD as QUALITY_LEAD
from shared.roles import QUALITY_TEAM as QUALITY_TEAM
from shared.roles import ROLES as ROLES

SCHEMA = "identity"
MIGRATIONS = Path(__file__).parent / "identity_migrations"


TOKEN_PREFIX = "cw_"
ON_BEHALF_HEADER = "x-carewatch-on-behalf-of"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    account: str
    roles: frozenset[str]
    ods_codes: frozenset[str] = frozenset()
    kind: str = "person"
    token_id: str | None = None
    # The service account that acts for this person, if any.
    via: str | None = None

    @property
    def actor(self) -> str:
        """What the audit trail records."""
        return f"{self.account} (via {self.via})" if self.via else self.account

    @property
    def provider_scoped(self) -> bool:
        return PROVIDER_USER in self.roles

    def may_see(self, ods_code: str | None) -> bool:
        """A provider user sees its own providers only; the commissioner's people see all."""
        return not self.provider_scoped or (ods_code is not None and ods_code in self.ods_codes)

    def has_any(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)


@dataclass(frozen=True)
class Access:
    """Who may use one route."""

    roles: frozenset[str] = frozenset()
    # Liveness only: no identity needed.
    public: bool = False
    # Authenticated by the route itself (intake's feed API keys), not by an identity.
    feed_key: bool = False
    note: str = ""


PUBLIC = Access(public=True, note="liveness")
FEED_KEY = Access(feed_key=True, note="a provider feed's API key (intake)")


def allow(*roles: str) -> Access:
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles {sorted(unknown)} are not among {ROLES}")
    return Access(frozenset(roles))


RouteKey = tuple[str, str]  # (METHOD, path template)


class AccessDenied(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# -- tokens --------------------------------------------------------------------------------
def new_token() -> tuple[str, str, bytes]:
    """A fresh token: (token id, the token to hand out once, the hash to store)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", _digest(secret)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    token_id, sep, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not sep or len(token_id) != 16 or not secret:
        return None
    return token_id, secret


_TOKEN_SQL = (
    "SELECT t.secret_sha256, t.scopes, a.name, a.kind, a.roles, a.ods_codes"
    " FROM identity.tokens t JOIN identity.accounts a USING (account_id)"
    " WHERE t.token_id = $1 AND t.revoked_at IS NULL AND t.expires_at > now()"
    " AND a.disabled_at IS NULL")


async def identify(conn: asyncpg.Connection | asyncpg.Pool, token: str,
                   on_behalf_of: str | None = None) -> Identity:
    """The identity of a bearer token (and of the person a service account acts for);
    raises ``AccessDenied`` (401) for anything else, without saying which check failed."""
    invalid = AccessDenied(401, "the token is not valid: unknown, expired, revoked, or its"
                           " account is disabled")
    parsed = parse_token(token)
    if parsed is None:
        raise invalid
    token_id, secret = parsed
    row = await conn.fetchrow(_TOKEN_SQL, token_id)
    if row is None or not hmac.compare_digest(bytes(row["secret_sha256"]), _digest(secret)):
        raise invalid
    roles = frozenset(row["roles"]) & frozenset(row["scopes"])
    caller = Identity(row["name"], roles, frozenset(row["ods_codes"]), row["kind"], token_id)
    if on_behalf_of is None:
        return caller
    if caller.kind != "service":
        raise AccessDenied(403, "only a service account may act on behalf of a person")
    person = await conn.fetchrow(
        "SELECT name, roles, ods_codes FROM identity.accounts WHERE name = $1"
        " AND kind = 'person' AND disabled_at IS NULL", on_behalf_of)
    if person is None:
        raise AccessDenied(403, f"no enabled person {on_behalf_of!r} to act for")
    return Identity(person["name"], frozenset(person["roles"]), frozenset(person["ods_codes"]),
                    "person", token_id, via=caller.account)


def check(access: Access | None, identity: Identity, method: str, path: str) -> None:
    """Raise ``AccessDenied`` (403) unless the identity holds one of the route's roles."""
    if access is None:
        raise AccessDenied(403, f"{method} {path} has no declared roles: nobody may use it")
    if not identity.has_any(access.roles):
        raise AccessDenied(403, f"{method} {path} needs one of the roles"
                           f" {', '.join(sorted(access.roles))}; {identity.actor} has"
                           f" {', '.join(sorted(identity.roles)) or 'none'}")


# -- HTTP ----------------------------------------------------------------------------------
class AccessControl:
    """ASGI middleware: every request to the app is checked against the route's ``Access``.

    ``access`` maps (METHOD, path template) to the route's access; ``pool`` gives the
    connection pool to read identities with. The identity goes to ``request.state.identity``.
    """

    def __init__(self, app: ASGIApp, *, access: Mapping[RouteKey, Access],
                 pool: Any) -> None:
        self.app = app
        self.access = access
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        path_template, access = self._route(scope, method)
        if access is not None and (access.public or access.feed_key):
            await self.app(scope, receive, send)
            return
        try:
            # An identity an outer middleware already authenticated (the workspace's signed-in
            # session) is checked against the same route table; otherwise, the bearer token.
            found = scope.get("state", {}).get("identity")
            identity = found if isinstance(found, Identity) else await self._identify(scope)
            if path_template is not None:  # an unknown path goes on to its 404
                check(access, identity, method, path_template)
        except AccessDenied as denied:
            await _refuse(send, denied)
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)

    def _route(self, scope: Scope, method: str) -> tuple[str | None, Access | None]:
        app = scope.get("app")
        routes = _flat(getattr(getattr(app, "router", None), "routes", []))
        partial: str | None = None
        for route in routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                path = getattr(route, "path", "")
                return path, self.access.get((method, path))
            if match == Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        # A known path with another method: authenticated first, then 405 by the app.
        return partial, None if partial is None else self.access.get((method, partial))

    async def _identify(self, scope: Scope) -> Identity:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessDenied(401, "no identity: send `Authorization: Bearer <token>` (a token"
                               " from `carewatch tokens create`)")
        return await identify(self.pool(), token.strip(), headers.get(ON_BEHALF_HEADER))


def _flat(routes: list[Any]) -> list[Any]:
    """The routes with their paths: a router included without a path of its own (FastAPI's
    included routers) stands for the routes it holds."""
    out: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if getattr(route, "path", None) is None and inner is not None:
            out.extend(_flat(list(inner.routes)))
        else:
            out.append(route)
    return out


async def _refuse(send: Send, denied: AccessDenied) -> None:
    body = json.dumps({"detail": denied.detail}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if denied.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="carewatch"'))
    await send({"type": "http.response.start", "status": denied.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def routes_without_access(app: Any, access: Mapping[RouteKey, Access]) -> list[str]:
    """Every (method, path) of ``app`` with no declared access (tests fail on any)."""
    missing = []
    for route in _flat(list(app.router.routes)):
        for method in sorted(getattr(route, "methods", None) or ()):
            if method == "HEAD":
                continue
            if (method, route.path) not in access:
                missing.append(f"{method} {route.path}")
    return missing


# -- accounts and tokens (the administrator's side) -------------------------------------------
@dataclass
class NewAccount:
    name: str
    roles: list[str]
    kind: str = "person"
    ods_codes: list[str] = field(default_factory=list)
    display_name: str = ""


def account_problems(account: NewAccount) -> list[str]:
    """Why an account cannot be created as asked (empty: it can)."""
    problems = []
    unknown = sorted(set(account.roles) - set(ROLES))
    if unknown:
        problems.append(f"unknown roles {unknown}; expected some of {', '.join(ROLES)}")
    if not account.roles:
        problems.append("an account needs at least one role")
    if PROVIDER_USER in account.roles:
        if len(account.roles) > 1:
            problems.append("a provider user holds no other role")
        if not account.ods_codes:
            problems.append("a provider user needs the ODS codes of its providers (--ods)")
    elif account.ods_codes:
        problems.append("only a provider user is scoped to providers")
    if account.kind not in ("person", "service"):
        problems.append("kind is person or service")
    return problems


async def add_account(conn: asyncpg.Connection, account: NewAccount, created_by: str) -> uuid.UUID:
    problems = account_problems(account)
    if problems:
        raise ValueError("; ".join(problems))
    account_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO identity.accounts (account_id, name, display_name, kind, roles, ods_codes,"
        " created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)", account_id, account.name,
        account.display_name, account.kind, sorted(set(account.roles)),
        sorted(set(account.ods_codes)), created_by)
    return account_id


async def list_accounts(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT name, kind, roles, ods_codes, display_name, created_at, created_by, disabled_at,"
        " (SELECT count(*) FROM identity.tokens t WHERE t.account_id = a.account_id AND"
        " t.revoked_at IS NULL AND t.expires_at > now()) AS live_tokens"
        " FROM identity.accounts a ORDER BY name")
    return [dict(r) for r in rows]


async def disable_account(conn: asyncpg.Connection, name: str) -> bool:
    """Disable an account (its tokens stop working at once); False if there is none."""
    return await conn.fetchval(
        "UPDATE identity.accounts SET disabled_at = coalesce(disabled_at, now()) WHERE name = $1"
        " RETURNING true", name) is True


async def create_token(conn: asyncpg.Connection, account: str, *, scopes: list[str] | None,
                       days: float, label: str, created_by: str) -> str:
    """A new token for an enabled account, scoped to some of its roles; returns the token
    (shown once: only its hash is kept)."""
    row = await conn.fetchrow("SELECT account_id, roles FROM identity.accounts WHERE name = $1"
                              " AND disabled_at IS NULL", account)
    if row is None:
        raise ValueError(f"no enabled account {account!r}")
    wanted = set(scopes or row["roles"])
    beyond = wanted - set(row["roles"])
    if beyond:
        raise ValueError(f"{account} does not hold {sorted(beyond)}")
    if not 0 < days <= 366:
        raise ValueError("a token lives between a moment and a year (--days)")
    token_id, token, digest = new_token()
    await conn.execute(
        "INSERT INTO identity.tokens (token_id, account_id, secret_sha256, scopes, label,"
        " created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6,"
        " now() + make_interval(secs => $7))",
        token_id, row["account_id"], digest, sorted(wanted), label, created_by, days * 86400)
    return token


async def service_token(conn: asyncpg.Connection, account: str, roles: list[str], *,
                        display_name: str, label: str, created_by: str, days: int = 1) -> str:
    """A token of a service account (created with ``roles`` if missing): what ``carewatch
    run`` gives a service on a development machine (an operator sets it in production)."""
    if not await conn.fetchval("SELECT true FROM identity.accounts WHERE name = $1", account):
        await add_account(conn, NewAccount(account, roles, kind="service",
                                           display_name=display_name), created_by)
    return await create_token(conn, account, scopes=None, days=days, label=label,
                              created_by=created_by)


async def list_tokens(conn: asyncpg.Connection, account: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT t.token_id, a.name AS account, t.scopes, t.label, t.created_at, t.expires_at,"
        " t.revoked_at FROM identity.tokens t JOIN identity.accounts a USING (account_id)"
        " WHERE $1::text IS NULL OR a.name = $1 ORDER BY t.created_at", account)
    return [dict(r) for r in rows]


async def revoke_token(conn: asyncpg.Connection, token_id: str) -> bool:
    return await conn.fetchval(
        "UPDATE identity.tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = $1"
        " RETURNING true", token_id) is True


# -- passwords (local accounts of the workspace) -----------------------------------------------
MIN_PASSWORD_LENGTH = 12


def password_problems(password: str) -> list[str]:
    """Why a password may not be set (empty: it may)."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        problems.append("a password has at most 1024 characters")
    return problems


def _hasher() -> Any:
    from argon2 import PasswordHasher  # argon2id, the library's recommended parameters

    return PasswordHasher()


async def set_password(conn: asyncpg.Connection, name: str, password: str) -> bool:
    """Store an argon2id hash of a person's password; False if there is no such person."""
    problems = password_problems(password)
    if problems:
        raise ValueError("; ".join(problems))
    return await conn.fetchval(
        "UPDATE identity.accounts SET password_hash = $2 WHERE name = $1 AND kind = 'person'"
        " RETURNING true", name, _hasher().hash(password)) is True


_nobody: list[str] = []


def _nobody_hash() -> str:
    """A hash of nothing anyone knows: an unknown name costs the same time as a wrong
    password."""
    if not _nobody:
        _nobody.append(_hasher().hash(secrets.token_urlsafe(32)))
    return _nobody[0]


def verify_password_hash(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (CPU-heavy: run it in a thread)."""
    from argon2.exceptions import Argon2Error, InvalidHashError

    try:
        return bool(_hasher().verify(stored or _nobody_hash(), password)) and stored is not None
    except (Argon2Error, InvalidHashError):
        return False


async def person_for_sign_in(conn: asyncpg.Connection, name: str) -> dict[str, Any] | None:
    """An enabled person's roles, scope and password hash, by account name."""
    row = await conn.fetchrow(
        "SELECT name, display_name, roles, ods_codes, password_hash FROM identity.accounts"
        " WHERE name = $1 AND kind = 'person' AND disabled_at IS NULL", name)
    return dict(row) if row else None


async def person_for_oidc(conn: asyncpg.Connection, issuer: str, subject: str,
                          email: str | None) -> dict[str, Any] | None:
    """The enabled person an OpenID Connect ID token names: the account linked to (issuer,
    subject), else the unlinked account whose name is the token's e-mail, which is then
    linked (the administrator created it: a token alone never makes an account)."""
    columns = "name, display_name, roles, ods_codes"
    row = await conn.fetchrow(
        f"SELECT {columns} FROM identity.accounts WHERE oidc_issuer = $1 AND oidc_subject = $2"
        " AND kind = 'person' AND disabled_at IS NULL", issuer, subject)
    if row is None and email:
        row = await conn.fetchrow(
            f"UPDATE identity.accounts SET oidc_issuer = $1, oidc_subject = $2 WHERE name = $3"
            f" AND kind = 'person' AND disabled_at IS NULL AND oidc_subject IS NULL"
            f" RETURNING {columns}", issuer, subject, email)
    return dict(row) if row else None


def local_operator() -> str:
    """Who a command run at the console is, when it carries no token: the local login."""
    try:
        login = getpass.getuser()
    except Exception:
        login = "unknown"
    return f"operator:{login}@{socket.gethostname()}"


async def console_actor(conn: asyncpg.Connection, token: str | None,
                        roles: Iterable[str]) -> str:
    """The actor a CLI command records: the account of ``token`` (CAREWATCH_TOKEN), which
    must hold one of ``roles``; without a token, the local operator (whoever holds the
    administrator's database credentials can do anything a role check could refuse, so the
    console records who they are instead)."""
    if not token:
        return local_operator()
    identity = await identify(conn, token)
    wanted = frozenset(roles)
    if not identity.has_any(wanted):
        raise AccessDenied(403, f"{identity.actor} holds none of {', '.join(sorted(wanted))}")
    return identity.actor
