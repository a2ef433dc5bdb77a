"""Every string field of every submission kind is either redacted free text, a constrained
code (issue 14), or personal data given on purpose that intake withholds from the content and
every event (a member of the public's contact details, issue 19): the test walks the models,
so a field added later without one of them fails here. Also the sane-value rules: dates have
a lower bound (and, where they may lie ahead, an upper one), and a repeated JSON key is
refused."""

from __future__ import annotations

import enum
import json
import types
import typing
from datetime import date
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from services.intake.validation import Parsed, duplicate_keys, parse
from shared.submissions import EARLIEST_DATE, SubmissionModel
from tests.helpers import example

MODELS: list[type[BaseModel]] = list(SubmissionModel.__args__)  # type: ignore[attr-defined]


def _leaves(annotation: Any, metadata: tuple[Any, ...] = ()) -> list[tuple[Any, tuple[Any, ...]]]:
    """The types a field may hold, through Optional, unions, lists and Annotated, each with
    the constraints annotated on it."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        return _leaves(inner, (*metadata, *extra))
    if origin in (typing.Union, types.UnionType, list, tuple, set, frozenset):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg, metadata)]
    return [(annotation, metadata)]


def _has_pattern(info: FieldInfo, metadata: tuple[Any, ...]) -> bool:
    def pattern(m: Any) -> bool:
        return bool(getattr(m, "pattern", None)) or any(
            pattern(x) for x in getattr(m, "metadata", ()))
    return any(pattern(m) for m in (*info.metadata, *metadata))


def string_fields(model: type[BaseModel], prefix: str = "",
                  withheld: bool = False) -> list[tuple[str, str]]:
    """(dotted field path, what it is) for every field that may hold a string, where what it
    is is ``free text``, ``enum``, ``literal``, ``pattern``, ``withheld`` (in one of the
    model's ``personal_fields``) or ``UNCONSTRAINED``."""
    free = getattr(model, "free_text_fields", ())
    personal = getattr(model, "personal_fields", ())
    out: list[tuple[str, str]] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        inside = withheld or (not prefix and name in personal)
        for leaf, metadata in _leaves(info.annotation):
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                out += string_fields(leaf, f"{path}.", inside)
            elif typing.get_origin(leaf) is typing.Literal:
                out.append((path, "literal"))
            elif isinstance(leaf, type) and issubclass(leaf, enum.Enum):
                out.append((path, "enum"))
            elif leaf is str:
                what = ("withheld" if inside else "free text" if not prefix and name in free
                        else "pattern" if _has_pattern(info, metadata) else "UNCONSTRAINED")
                out.append((path, what))
    return out


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_string_field_is_redacted_free_text_or_a_constrained_code(
        model: type[BaseModel]) -> None:
    fields = string_fields(model)
    assert ("record_id", "pattern") in fields and ("ods_code", "pattern") in fields
    unconstrained = [path for path, what in fields if what == "UNCONSTRAINED"]
    assert not unconstrained, (f"{model.__name__}: string fields neither redacted (add them to"
                               f" free_text_fields) nor constrained: {unconstrained}")
    for name in (*getattr(model, "free_text_fields", ()), *getattr(model, "personal_fields", ())):
        assert name in model.model_fields, f"{model.__name__}.{name} is not a field"


PUBLIC = {"kind": "public_feedback", "ods_code": "RJ1", "record_id": "CW-BKTM-QXRP",
          "received_on": "2026-11-20", "purpose": "concern", "relationship": "carer",
          "subject_area": "Clinical treatment", "consent_share_feedback": True,
          "description": "Mum was left on the floor. Ring me on 07700 900982.",
          "contact_by": "email", "consent_share_identity": True,
          "contact": {"name": "Alex Jones", "email": "alex.jones@example.org",
                      "phone": "07700 900 982"}}


def test_personal_fields_are_withheld_from_the_content() -> None:
    """The contact details a member of the public gives are taken out of the accepted
    content (which every event carries) whole; free text is redacted as ever."""
    withheld = [path for model in MODELS for path, what in string_fields(model)
                if what == "withheld"]
    assert withheld == ["contact.name", "contact.email", "contact.phone"]
    parsed = parse(json.dumps(PUBLIC).encode(), "application/json")
    assert isinstance(parsed, Parsed), parsed
    assert parsed.withheld == {"contact": PUBLIC["contact"]}
    assert "contact" not in parsed.content
    text = json.dumps(parsed.content)
    for value in ("Alex Jones", "alex.jones", "900 982", "900982"):
        assert value not in text
    assert parsed.content["contact_by"] == "email"
    assert parsed.content["contact_details_held"] is True
    assert parsed.content["consent_share_identity"] is True


@pytest.mark.parametrize("change, loc", [
    ({"contact_by": "none"}, ""), ({"contact": {"name": "Alex"}}, ""),
    ({"contact_by": "phone", "contact": {"email": "a@example.org"}}, ""),
    ({"contact": {"email": "not an email"}}, "contact.email"),
    ({"contact": {"phone": "call me maybe"}, "contact_by": "phone"}, "contact.phone"),
    ({"contact_by": "none", "contact": None, "consent_share_identity": True}, ""),
    ({"description": "x" * 10_001}, "description")])
def test_public_feedback_keeps_only_the_contact_it_needs(change: dict[str, Any],
                                                          loc: str) -> None:
    body = {k: v for k, v in {**PUBLIC, **change}.items() if v is not None}
    reasons = _reasons(body)
    assert [r[0] for r in reasons] == [loc], reasons


def test_the_walk_finds_an_unconstrained_field() -> None:
    class Leaky(BaseModel):
        kind: typing.Literal["x"]
        note: str | None = None
    assert string_fields(Leaky) == [("kind", "literal"), ("note", "UNCONSTRAINED")]


DESCRIPTIVE = [("compliment", "service"), ("insight-visit", "service"),
               ("service-change-notice", "service"), ("survey-result", "survey"),
               ("survey-result", "question"), ("prom-score", "measure"),
               ("engagement-feedback", "group"), ("engagement-feedback", "topic"),
               ("equality-return", "summary")]


@pytest.mark.parametrize("name, field", DESCRIPTIVE)
def test_descriptive_fields_are_redacted_in_the_content_and_the_theme(name: str,
                                                                      field: str) -> None:
    body = {**example(f"{name}.json")["body"], field: "Ward 5 NHS 943 476 5919"}
    parsed = parse(json.dumps(body).encode(), "application/json")
    assert isinstance(parsed, Parsed), parsed
    assert parsed.content[field] == "Ward 5 NHS [NHS NUMBER]"
    assert "943 476 5919" not in json.dumps(parsed.content)
    assert "943 476 5919" not in (parsed.submission.theme() or "")
    assert parsed.redactions == {"[NHS NUMBER]": 1}


# -- dates ------------------------------------------------------------------------------------
DATE_FIELDS = [("routine-complaint", "received_on"), ("routine-complaint", "acknowledged_on"),
               ("compliment", "received_on"), ("safeguarding-concern", "raised_on"),
               ("online-review", "posted_on"), ("survey-result", "published_on"),
               ("gp-alert", "raised_on"), ("insight-visit", "visited_on"),
               ("engagement-feedback", "met_on"), ("service-change-notice", "notified_on"),
               ("service-change-notice", "effective_from"), ("fft-response", "responded_on")]


def _reasons(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    result = parse(json.dumps(body).encode(), "application/json")
    assert not isinstance(result, Parsed), "accepted"
    return [(r.loc, r.type, r.msg) for r in result]


@pytest.mark.parametrize("name, field", DATE_FIELDS)
@pytest.mark.parametrize("value", ["0001-01-01", "1899-12-31"])
def test_a_date_before_the_earliest_is_refused_with_a_reason(name: str, field: str,
                                                             value: str) -> None:
    reasons = _reasons({**example(f"{name}.json")["body"], field: value})
    assert [(loc, type_) for loc, type_, _ in reasons] == [(field, "value_error")]
    assert EARLIEST_DATE.isoformat() in reasons[0][2]


@pytest.mark.parametrize("name, field", DATE_FIELDS)
def test_the_earliest_date_itself_is_accepted(name: str, field: str) -> None:
    body = {**example(f"{name}.json")["body"], field: EARLIEST_DATE.isoformat()}
    assert isinstance(parse(json.dumps(body).encode(), "application/json"), Parsed)


@pytest.mark.parametrize("name", ["fft-monthly", "prom-score", "equality-return"])
@pytest.mark.parametrize("period, why", [("0001-01", "before"), ("1899-12", "before"),
                                         ("9999-12", "future")])
def test_a_period_out_of_range_is_refused(name: str, period: str, why: str) -> None:
    reasons = _reasons({**example(f"{name}.json")["body"], "period": period})
    assert [(loc, type_) for loc, type_, _ in reasons] == [("period", "value_error")]
    assert why in reasons[0][2]


@pytest.mark.parametrize("field", ["effective_from", "consultation_end"])
def test_a_date_that_may_lie_ahead_is_bounded(field: str) -> None:
    body = {**example("service-change-notice.json")["body"], field: "9999-12-31"}
    reasons = _reasons(body)
    assert [(loc, type_) for loc, type_, _ in reasons] == [(field, "value_error")]
    assert "years ahead" in reasons[0][2]
    ahead = date.today().replace(month=1, day=1).replace(year=date.today().year + 2)
    body[field] = ahead.isoformat()
    assert isinstance(parse(json.dumps(body).encode(), "application/json"), Parsed)


# -- repeated keys ----------------------------------------------------------------------------
def test_a_repeated_key_is_refused_with_a_reason() -> None:
    good = json.dumps(example("compliment.json")["body"])
    body = good[:-1] + ', "ods_code": "RJ1"}'
    assert duplicate_keys(body.encode()) == ["ods_code"]
    result = parse(body.encode(), "application/json")
    assert not isinstance(result, Parsed)
    assert [(r.loc, r.type) for r in result] == [("ods_code", "duplicate_key")]
    assert isinstance(parse(good.encode(), "application/json"), Parsed)


def test_a_repeated_key_in_a_nested_object_or_spelled_with_escapes_is_refused() -> None:
    body = dict(example("serious-complaint.json")["body"])
    text = json.dumps(body).replace('"consequence": ', '"consequence": 1, "consequence": ', 1)
    assert duplicate_keys(text.encode()) == ["consequence"]
    escaped = json.dumps(body)[:-1] + ', "\\u006bind": "compliment"}'
    assert duplicate_keys(escaped.encode()) == ["kind"]
    assert duplicate_keys(b"not json") == [] and duplicate_keys(b'{"a": {"a": 1}}') == []


# -- equality and Quality Account returns ------------------------------------------------------
def test_a_quality_account_return_names_its_priority_and_only_it_does() -> None:
    """The priority is free text (redacted like the rest); the other standards have none."""
    body = {**example("equality-return.json")["body"], "standard": "quality_account_priority",
            "priority": "Sepsis screening within one hour, call 07700 900982"}
    parsed = parse(json.dumps(body).encode(), "application/json")
    assert isinstance(parsed, Parsed), parsed
    assert "900982" not in json.dumps(parsed.content)
    assert parsed.content["priority"].startswith("Sepsis screening within one hour")
    assert [r[0] for r in _reasons({**body, "priority": None})] == [""]
    del body["priority"]
    assert "needs the priority" in _reasons(body)[0][2]
    wres = {**example("equality-return.json")["body"], "priority": "Sepsis"}
    assert "only for quality_account_priority" in _reasons(wres)[0][2]


@pytest.mark.parametrize("change, loc", [({"standard": "wdes"}, "standard"),
                                         ({"status": "fine"}, "status"),
                                         ({"figure": "NaN"}, "figure"),
                                         ({"summary": ""}, "summary")])
def test_an_equality_return_takes_only_its_codes(change: dict[str, Any], loc: str) -> None:
    reasons = _reasons({**example("equality-return.json")["body"], **change})
    assert [r[0] for r in reasons] == [loc], reasons
