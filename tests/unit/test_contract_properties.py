"""Property-based tests of the intake contract: whatever arrives, parse() answers (accepted,
or rejected with reasons) and never raises; whatever it accepts can be stored as JSON."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.validation import Parsed, parse
from tests.helpers import example

VALID = [example(n)["body"] for n in ("serious-complaint.json", "routine-complaint.json",
                                      "safeguarding-concern.json")]
# With number fields, for NaN and the infinities.
NUMERIC = [example(n)["body"] for n in ("survey-result.json", "prom-score.json")]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                      max_size=4),
    max_leaves=20)


def assert_answered(result: Parsed | list[Any]) -> None:
    if isinstance(result, Parsed):
        assert result.submission.ods_code
        # What is accepted goes into a jsonb column: strict JSON (no NaN, no Infinity).
        json.dumps(result.content, allow_nan=False)
        return
    assert result, "a rejection must carry at least one reason"
    for reason in result:
        assert reason.msg and reason.type
        assert isinstance(reason.loc, str)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2_000), st.sampled_from([None, "application/json", "text/plain", ""]))
def test_any_bytes_are_answered(body: bytes, content_type: str | None) -> None:
    assert_answered(parse(body, content_type))


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_is_answered(value: Any) -> None:
    assert_answered(parse(json.dumps(value).encode(), "application/json"))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALID + NUMERIC), st.data())
def test_mutated_valid_submissions_are_answered(body: dict[str, Any], data: st.DataObject) -> None:
    mutated = dict(body)
    key = data.draw(st.sampled_from(sorted(mutated)))
    action = data.draw(st.sampled_from(["drop", "replace", "add"]))
    if action == "drop":
        del mutated[key]
    elif action == "replace":
        mutated[key] = data.draw(json_values)
    else:
        mutated[data.draw(st.text(max_size=20))] = data.draw(json_values)
    result = parse(json.dumps(mutated).encode(), "application/json")
    assert_answered(result)
    if isinstance(result, Parsed):
        # Whatever was accepted has its free text redacted and keeps its identity.
        assert result.content["ods_code"] == result.submission.ods_code


# Text that cannot hold personal data: no digits (NHS numbers, phones, postcodes, dates)
# and no "@" (e-mail addresses), but SQL, HTML and any other unicode; no NUL, which the
# contract refuses (PostgreSQL cannot store it).
no_personal_data = st.text(
    alphabet=st.characters(blacklist_categories=("Nd", "No", "Cs"),
                           blacklist_characters="@\x00"),
    max_size=500)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID), no_personal_data)
def test_free_text_without_personal_data_is_kept_verbatim(body: dict[str, Any], text: str
                                                          ) -> None:
    description = f"x{text}x"  # no leading or trailing white space to strip
    result = parse(json.dumps({**body, "description": description}).encode(), "application/json")
    assert isinstance(result, Parsed), result
    assert result.content["description"] == description
    assert not result.redactions


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(VALID), no_personal_data, no_personal_data)
def test_a_nul_character_anywhere_in_free_text_is_refused_with_a_reason(
        body: dict[str, Any], before: str, after: str) -> None:
    result = parse(json.dumps({**body, "description": f"x{before}\x00{after}"}).encode(),
                   "application/json")
    assert not isinstance(result, Parsed)
    assert [(r.loc, r.type) for r in result] == [("description", "value_error")]
    assert "NUL" in result[0].msg


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NUMERIC), st.sampled_from(["score", "national_score"]),
       st.floats() | st.sampled_from(["NaN", "inf", "-Infinity", "1e999"]))
def test_any_number_in_a_number_field_is_answered_and_storable(
        body: dict[str, Any], field: str, number: float | str) -> None:
    assert_answered(parse(json.dumps({**body, field: number}).encode(), "application/json"))
