"""Signing people in: local accounts (argon2id hashes in the platform's ``identity`` schema)
and OpenID Connect (Authlib; an ICB's Microsoft Entra ID or NHSmail tenant), server-side
sessions and CSRF tokens.

The session cookie holds 256 random bits; the workspace keeps only their SHA-256, with the
account, a CSRF token and an expiry (``workspace.sessions``), so signing out or disabling an
account ends a session at once. Cookies are ``HttpOnly``, ``SameSite=Lax`` and ``Secure``
(unless ``CAREWATCH_WORKSPACE_INSECURE_COOKIES`` is set for plain-HTTP development). Every
state-changing form carries the session's CSRF token, compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from services.workspace.config import WorkspaceSettings
from shared import identity
from shared.identity import Identity

COOKIE = "carewatch_session"
SESSION_HOURS = 10


@dataclass(frozen=True)
class Session:
    identity: Identity
    display_name: str
    csrf_token: str
    method: str


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    parts = urlsplit(path)
    return "/" if parts.scheme or parts.netloc else path


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf_token.encode(), (sent or "").encode())


async def open_session(conn: asyncpg.Connection | asyncpg.Pool, account: str, method: str,
                       now: datetime) -> str:
    """A new session for ``account``; returns the cookie value (kept only as a hash)."""
    session_id = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO workspace.sessions (session_sha256, account, csrf_token, method, created_at,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6)", _digest(session_id), account,
        secrets.token_urlsafe(32), method, now, now + timedelta(hours=SESSION_HOURS))
    return session_id


async def end_session(conn: asyncpg.Connection | asyncpg.Pool, session_id: str) -> None:
    await conn.execute("DELETE FROM workspace.sessions WHERE session_sha256 = $1",
                       _digest(session_id))


async def load_session(conn: asyncpg.Connection | asyncpg.Pool, session_id: str | None,
                       now: datetime) -> Session | None:
    """The signed-in person of a cookie, with the roles and providers their account has now
    (a disabled account's sessions stop at once)."""
    if not session_id or len(session_id) > 100:
        return None
    row = await conn.fetchrow(
        "SELECT s.account, s.csrf_token, s.method, a.roles, a.ods_codes, a.display_name"
        " FROM workspace.sessions s JOIN identity.accounts a ON a.name = s.account"
        " WHERE s.session_sha256 = $1 AND s.expires_at > $2 AND a.disabled_at IS NULL"
        " AND a.kind = 'person'", _digest(session_id), now)
    if row is None:
        return None
    who = Identity(row["account"], frozenset(row["roles"]), frozenset(row["ods_codes"]))
    return Session(who, row["display_name"] or row["account"], row["csrf_token"], row["method"])


async def check_password(conn: asyncpg.Connection | asyncpg.Pool, name: str,
                         password: str) -> dict[str, Any] | None:
    """The person if the password is theirs (argon2 runs off the event loop)."""
    person = await identity.person_for_sign_in(conn, name)  # type: ignore[arg-type]
    stored = person["password_hash"] if person else None
    ok = await asyncio.to_thread(identity.verify_password_hash, stored, password)
    return person if ok and person else None


# -- OpenID Connect -------------------------------------------------------------------------
class OidcError(Exception):
    pass


class Oidc:
    """The authorization code flow against one issuer (discovery, then code -> ID token,
    verified: signature by the issuer's keys, issuer, audience, expiry and nonce)."""

    def __init__(self, settings: WorkspaceSettings) -> None:
        self.settings = settings
        self._metadata: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        s = self.settings
        return bool(s.oidc_issuer and s.oidc_client_id and s.oidc_client_secret)

    @property
    def redirect_uri(self) -> str:
        return self.settings.public_url.rstrip("/") + "/oidc/callback"

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            issuer = self.settings.oidc_issuer.rstrip("/")
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(f"{issuer}/.well-known/openid-configuration")
                response.raise_for_status()
                self._metadata = response.json()
        return self._metadata

    def _client(self) -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        return AsyncOAuth2Client(self.settings.oidc_client_id, self.settings.oidc_client_secret,
                                 scope="openid email profile", redirect_uri=self.redirect_uri,
                                 timeout=10)

    async def start(self, conn: asyncpg.Connection | asyncpg.Pool, next_path: str,
                    now: datetime) -> str:
        """The URL to send the browser to; the state and nonce are kept for the callback."""
        meta = await self.metadata()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        async with self._client() as client:
            url, _ = client.create_authorization_url(meta["authorization_endpoint"],
                                                     state=state, nonce=nonce)
        await conn.execute(
            "INSERT INTO workspace.oidc_states (state, nonce, next_path, created_at)"
            " VALUES ($1, $2, $3, $4)", state, nonce, safe_next(next_path), now)
        await conn.execute("DELETE FROM workspace.oidc_states WHERE created_at < $1",
                           now - timedelta(minutes=15))
        return str(url)

    async def finish(self, conn: asyncpg.Connection | asyncpg.Pool, code: str, state: str,
                     now: datetime) -> tuple[dict[str, Any], str]:
        """The person the ID token names, and where to go next."""
        row = await conn.fetchrow(
            "DELETE FROM workspace.oidc_states WHERE state = $1 AND created_at > $2"
            " RETURNING nonce, next_path", state, now - timedelta(minutes=15))
        if row is None:
            raise OidcError("the sign-in took too long or was not started here; try again")
        meta = await self.metadata()
        async with self._client() as client:
            token = await client.fetch_token(meta["token_endpoint"], code=code, state=state)
            keys = (await client.get(meta["jwks_uri"])).json()
        claims = verify_id_token(token.get("id_token"), keys, issuer=meta["issuer"],
                                 client_id=self.settings.oidc_client_id, nonce=row["nonce"],
                                 now=now)
        email = claims.get("email") or claims.get("preferred_username")
        person = await identity.person_for_oidc(conn, meta["issuer"], str(claims["sub"]),  # type: ignore[arg-type]
                                                str(email).lower() if email else None)
        if person is None:
            raise OidcError(f"no carewatch account for {email or claims['sub']}: ask the"
                            " administrator to create one (carewatch users add)")
        return person, row["next_path"]


def verify_id_token(id_token: str | None, jwks: dict[str, Any], *, issuer: str, client_id: str,
                    nonce: str, now: datetime) -> dict[str, Any]:
    """The claims of an ID token signed by one of ``jwks``, for this client, from this
    issuer, not expired, with our nonce; ``OidcError`` otherwise."""
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if not id_token:
        raise OidcError("the identity provider sent no ID token")
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(jwks),  # type: ignore[arg-type]
                           algorithms=["RS256", "ES256"])
        registry = jwt.JWTClaimsRegistry(
            now=int(now.timestamp()), leeway=60, iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id}, sub={"essential": True},
            exp={"essential": True}, nonce={"essential": True, "value": nonce})
        registry.validate(token.claims)
    except (JoseError, ValueError) as exc:
        raise OidcError(f"the ID token was refused: {exc}") from exc
    return dict(token.claims)
