"""docs/openapi/intake.json is generated from the code and kept current."""

from __future__ import annotations

import json

from services.intake.openapi import DOC, render


def test_openapi_document_is_current() -> None:
    assert DOC.exists(), f"{DOC} is missing: run `python -m services.intake.openapi`"
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"{DOC} is out of date with the code: run `python -m services.intake.openapi` and"
        " commit the result")


def test_openapi_document_describes_every_kind_and_both_api_key_headers() -> None:
    spec = json.loads(DOC.read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    mapping = schemas["Submission"]["discriminator"]["mapping"]
    assert set(mapping) == {"complaint", "compliment", "fft_response", "fft_monthly",
                            "online_review", "survey_result", "prom_score", "gp_alert",
                            "insight_visit", "safeguarding_concern", "service_change_notice",
                            "engagement_feedback", "equality_return", "public_feedback"}
    for ref in mapping.values():
        assert ref.removeprefix("#/components/schemas/") in schemas
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "The feed's API key, as `X-API-Key: <key>`."}
    assert spec["paths"]["/v1/submissions"]["post"]["security"] == [{"bearer": []},
                                                                   {"apiKey": []}]
