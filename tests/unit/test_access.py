"""Every HTTP route of every service declares who may use it; nothing but liveness is open."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Route

from services.catalogue import SERVICES, builder
from shared.identity import (
    PROVIDER_USER,
    QUALITY_LEAD,
    Identity,
    NewAccount,
    account_problems,
    allow,
    parse_token,
    routes_without_access,
)
from shared.settings import Settings

SETTINGS = Settings(namespace="carewatch")


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_of_every_service_declares_its_roles(service: str) -> None:
    surface = builder(service)(SETTINGS).http
    assert routes_without_access(surface.api, surface.access) == [], (
        f"{service}: give these routes their roles in the service's ACCESS table")


# Beside liveness, only the workspace's way in (signing in, before there is a session), its
# static files (the NHS.UK frontend's CSS, JS and images) and the public's door (the feedback
# page anyone may use: issue 19) are public.
WORKSPACE_PUBLIC = ["GET /assets", "GET /nhsuk", "GET /oidc/callback", "GET /oidc/login",
                    "GET /sign-in", "GET /static", "POST /sign-in",
                    "GET /feedback", "POST /feedback", "GET /feedback/easy-read",
                    "GET /feedback/sent"]


@pytest.mark.parametrize("service", SERVICES)
def test_only_liveness_is_public(service: str) -> None:
    surface = builder(service)(SETTINGS).http
    public = sorted(f"{m} {p}" for (m, p), a in surface.access.items() if a.public)
    assert public == sorted(["GET /health", *(WORKSPACE_PUBLIC if service == "workspace"
                                              else [])])


def test_a_route_added_without_roles_is_found() -> None:
    surface = builder("escalation")(SETTINGS).http

    @surface.api.post("/v1/something-new")
    async def something_new() -> dict[str, str]:
        return {}

    assert routes_without_access(surface.api, surface.access) == ["POST /v1/something-new"]


@pytest.mark.parametrize("service", SERVICES)
async def test_without_a_token_every_route_but_liveness_is_refused(service: str) -> None:
    surface = builder(service)(SETTINGS).http
    transport = httpx.ASGITransport(app=surface.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        for route in surface.api.router.routes:
            if not isinstance(route, Route):
                continue  # a mount or a websocket: no HTTP methods of its own
            for method in route.methods or ():
                access = surface.access.get((method, route.path))
                if method == "HEAD" or (access is not None and (access.public or access.feed_key)):
                    continue
                path = route.path.replace("{", "").replace("}", "")
                response = await client.request(method, path)
                assert response.status_code == 401, f"{method} {route.path}"
                assert "Bearer" in response.headers["www-authenticate"]
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 401


def test_provider_user_sees_its_providers_only() -> None:
    who = Identity("a@rrk.nhs.uk", frozenset({PROVIDER_USER}), frozenset({"RRK"}))
    assert who.may_see("RRK") and not who.may_see("RJ1") and not who.may_see(None)
    lead = Identity("lead@icb", frozenset({QUALITY_LEAD}))
    assert lead.may_see("RJ1")


def test_accounts_are_checked() -> None:
    assert account_problems(NewAccount("a", [PROVIDER_USER])) != []
    assert account_problems(NewAccount("a", [PROVIDER_USER, QUALITY_LEAD], ods_codes=["X"])) != []
    assert account_problems(NewAccount("a", [QUALITY_LEAD], ods_codes=["X"])) != []
    assert account_problems(NewAccount("a", ["king"])) != []
    assert account_problems(NewAccount("a", [PROVIDER_USER], ods_codes=["RJ1"])) == []
    with pytest.raises(ValueError):
        allow("king")


def test_tokens_parse() -> None:
    assert parse_token("cw_0123456789abcdef_secret") == ("0123456789abcdef", "secret")
    assert parse_token("cw_short_secret") is None
    assert parse_token("Bearer x") is None
