"""The example submissions (examples/submissions/): one for every kind, each a well-formed
message file that intake accepts, dated no later than when they were written."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.intake.validation import Parsed, parse
from shared.submissions import KINDS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "submissions"
FILES = sorted(EXAMPLES.glob("*.json"))
WRITTEN = date(2026, 11, 22)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def valid_files() -> list[Path]:
    return [p for p in FILES if not p.stem.startswith("invalid")]


def raw(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def test_every_kind_has_an_example() -> None:
    kinds = {load(p)["body"]["kind"] for p in valid_files()}
    assert kinds == set(KINDS)


def test_healthwatch_enter_and_view_has_its_own_example() -> None:
    visits = {load(p)["body"].get("visit_type") for p in valid_files()}
    assert {"insight_visit", "enter_and_view"} <= visits


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_message_file_is_well_formed(path: Path) -> None:
    message = load(path)
    assert set(message) == {"exchange", "routing_key", "properties", "body"}
    assert message["exchange"] == "carewatch.submissions"
    body = message["body"]
    assert message["routing_key"] == f"submission.{body['kind']}.v{body['version']}"
    assert message["properties"] == {"content_type": "application/json", "delivery_mode": 2,
                                     "user_id": "guest",
                                     "message_id": message["properties"]["message_id"]}


def test_message_and_record_ids_are_unique() -> None:
    messages = [load(p) for p in FILES]
    ids = [m["properties"]["message_id"] for m in messages]
    records = [(m["body"]["ods_code"], m["body"]["record_id"]) for m in messages]
    assert len(set(ids)) == len(ids)
    assert len(set(records)) == len(records)


@pytest.mark.parametrize("path", valid_files(), ids=lambda p: p.stem)
def test_valid_example_is_accepted_and_not_dated_after_it_was_written(path: Path) -> None:
    parsed = parse(raw(load(path)["body"]), "application/json")
    assert isinstance(parsed, Parsed), parsed
    assert parsed.submission.occurred_on() <= WRITTEN
    for name, value in parsed.content.items():
        if name.endswith("_on") and value is not None:
            assert date.fromisoformat(value) <= WRITTEN, name


def test_invalid_example_is_rejected() -> None:
    assert isinstance(parse(raw(load(EXAMPLES / "invalid-complaint.json")["body"])), list)
