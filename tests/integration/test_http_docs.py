"""Each service's HTTP surface for a newcomer, over a real HTTP server: `GET /` says what is
served, and /docs and /redoc load every asset from the service itself (they work offline)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from services.catalogue import SERVICES, builder
from shared.identity import OPERATOR, Identity
from shared.settings import Settings

pytestmark = pytest.mark.integration


# The workspace's `/` is its overview page, for people (tests/browser).
@pytest.mark.parametrize("service", [s for s in SERVICES if s != "workspace"])
async def test_index_and_docs_are_served_locally(service: str) -> None:
    runtime = builder(service)(Settings(namespace="cwtest_docs"))
    operator = Identity(account="operator@icb.example", roles=frozenset({OPERATOR}))

    def signed_in(app: Any) -> Any:
        """An operator already authenticated (as the workspace's session does): the service's
        access control still checks the route table."""
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope.setdefault("state", {})["identity"] = operator
            await app(scope, receive, send)
        return wrapped

    runtime.http.api.add_middleware(signed_in)
    await runtime.http.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http.port}") as client:
            index = (await client.get("/")).json()
            assert index["service"] == service
            assert (await client.get(index["health"])).json()["status"] == "ok"
            for page in (index["docs"], index["redoc"]):
                html = (await client.get(page)).text
                urls = re.findall(r'(?:src|href)="([^"]+)"', html)
                assert urls, html
                assert not re.search(r"https?://", html), f"{page} loads from elsewhere"
                for url in urls:
                    asset = await client.get(url)
                    assert asset.status_code == 200 and len(asset.content) > 1000, url
            assert (await client.get(index["openapi"])).json()["info"]["title"] == \
                f"carewatch {service}"
    finally:
        await runtime.http.stop()
