"""The example submissions (examples/submissions/): one for every kind, each a well-formed
message file that intake accepts, dated no later than when they were written."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.intake.validation import Parsed, parse
from shared.submissions import KINDS, PUBLIC_KINDS

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
    """A provider feed's kinds here; the public's (which only the public's door, the
    workspace's feedback page, submits) in examples/public-feedback.json."""
    kinds = {load(p)["body"]["kind"] for p in valid_files()}
    assert kinds == set(KINDS) - PUBLIC_KINDS
    public = json.loads((EXAMPLES.parent / "public-feedback.json").read_text(encoding="utf-8"))
    assert public["kind"] in PUBLIC_KINDS
    parsed = parse(raw(public), "application/json")
    assert isinstance(parsed, Parsed), parsed
    assert parsed.withheld and "contact" not in parsed.content


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


def test_publish_checks_every_file_before_publishing_any(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """Several files: one bad file and nothing is published (the broker URL here answers
    nothing, so any attempt to publish would fail with exit 1, not 2)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("publish", EXAMPLES.parent / "publish.py")
    assert spec and spec.loader
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    bad = tmp_path / "bad.json"
    bad.write_text('{"exchange": "carewatch.submissions"}')
    good = sorted(EXAMPLES.glob("*.json"))[:2]
    assert publish.main([*map(str, good), str(bad), "--url", "amqp://guest:guest@127.0.0.1:1/"]) == 2
    assert "missing routing_key, body" in capsys.readouterr().err
    assert publish.main([*map(str, good), "--url", "amqp://guest:guest@127.0.0.1:1/"]) == 1


# -- the sample CSV files for feed engineers (examples/*.csv) -----------------------------------

@pytest.mark.parametrize("name, fmt, rows", [("fft-monthly.csv", "fft-csv", 10),
                                             ("fft-responses.csv", "fft-responses-csv", 8),
                                             ("complaints.csv", "complaints-csv", 7)])
def test_sample_csv_files_load_into_valid_submissions(name: str, fmt: str, rows: int) -> None:
    from services.intake import bulk

    path = EXAMPLES.parent / name
    assert bulk.detect_format(path) == fmt
    parsed = [parse(r.body, "application/json") for r in bulk.records(path, fmt)]
    assert len(parsed) == rows
    assert all(isinstance(p, Parsed) for p in parsed), parsed
