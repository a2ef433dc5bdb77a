"""The AsyncAPI documents in docs/asyncapi/ are generated from the code and kept current."""

from __future__ import annotations

import pytest
import yaml

from services.catalogue import PUBLISHES, SERVICES
from services.cli import openapi
from services.cli.asyncapi import DOCS, render


@pytest.mark.parametrize("service", SERVICES)
def test_asyncapi_document_is_current(service: str) -> None:
    path = DOCS / f"{service}.yaml"
    assert path.exists(), f"{path} is missing: run `carewatch docs`"
    assert path.read_text() == render(service), (
        f"{path} is out of date with the code: run `carewatch docs` and commit the result")


@pytest.mark.parametrize("service", SERVICES)
def test_asyncapi_document_describes_every_published_event(service: str) -> None:
    spec = yaml.safe_load((DOCS / f"{service}.yaml").read_text())
    # A queue fed by a fanout exchange (intake's routine lane) has no address.
    addresses = {c.get("address") for c in spec["channels"].values()}
    for cls in PUBLISHES[service]:
        assert cls.event_type in addresses
        assert f"{cls.__name__}Envelope" in spec["components"]["schemas"]


@pytest.mark.parametrize("service", openapi.SERVICES_WITH_API)
def test_openapi_document_is_current(service: str) -> None:
    path = openapi.path(service)
    assert path.exists(), f"{path} is missing: run `carewatch docs`"
    assert path.read_text(encoding="utf-8") == openapi.render(service), (
        f"{path} is out of date with the code: run `carewatch docs` and commit the result")


def test_escalations_http_api_is_documented() -> None:
    import json

    spec = json.loads(openapi.path("escalation").read_text(encoding="utf-8"))
    assert {"/v1/meetings", "/v1/meetings/{meeting_id}/outcome", "/v1/concerns/{concern_id}/close",
            "/v1/actions", "/"} <= set(spec["paths"])
