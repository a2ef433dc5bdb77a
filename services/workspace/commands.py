"""Commands the workspace sends to the service that owns them (escalation's and
quality-monitor's HTTP APIs), as its own service account on behalf of the signed-in person
(``X-Carewatch-On-Behalf-Of``): the owner checks that person's roles and providers and records
``person (via workspace)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from shared.identity import ON_BEHALF_HEADER, Identity


@dataclass(frozen=True)
class Refused(Exception):
    """The owning service said no (409: not in this state; 404; 403), or could not be asked."""

    status: int
    detail: str

    def __str__(self) -> str:
        return self.detail


class Owner:
    """The HTTP API of the service that owns some commands (escalation, quality-monitor)."""

    def __init__(self, name: str, base_url: str, token: str | None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.token = token

    async def send(self, person: Identity, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A command (POST) for ``person``; the owner's answer."""
        result = await self._call(person, "POST", path, body)
        assert isinstance(result, dict)
        return result

    async def ask(self, person: Identity, path: str, params: dict[str, Any] | None = None) -> Any:
        """A question (GET) for ``person``, for what no event carries (the operator's views
        of the quarantine and the feeds); the owner's answer."""
        return await self._call(person, "GET", path, None, params)

    async def file(self, person: Identity, path: str) -> tuple[bytes, str]:
        """A document (GET) for ``person``: its bytes and media type (a report's PDF,
        HTML, CSV or XLSX, which the workspace passes on and does not keep)."""
        response = await self._request(person, "GET", path, None, None)
        return response.content, response.headers.get("content-type", "application/octet-stream")

    async def _call(self, person: Identity, method: str, path: str,
                    body: dict[str, Any] | None, params: dict[str, Any] | None = None) -> Any:
        return (await self._request(person, method, path, body, params)).json()

    async def _request(self, person: Identity, method: str, path: str,
                       body: dict[str, Any] | None, params: dict[str, Any] | None
                       ) -> httpx.Response:
        if not self.token:
            raise Refused(503, "the workspace has no service token (CAREWATCH_WORKSPACE_TOKEN):"
                               f" it cannot reach {self.name}")
        headers = {"Authorization": f"Bearer {self.token}", ON_BEHALF_HEADER: person.account}
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=15) as client:
                response = await client.request(method, path, json=body, params=params,
                                                headers=headers)
        except httpx.HTTPError as exc:
            raise Refused(503, f"{self.name} could not be reached: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise Refused(response.status_code, detail if isinstance(detail, str) else
                          "; ".join(str(d.get("msg", d)) for d in detail))
        return response
