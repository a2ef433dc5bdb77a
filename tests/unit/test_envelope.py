"""The CloudEvents envelope and the versioned events (shared/envelope.py, shared/events.py)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.envelope import Envelope
from shared.events import (
    EVENT_TYPES,
    ConcernRaised,
    ConcernUpdated,
    ConcernUpdatedV1,
    Event,
    Evidence,
    FeedbackRejected,
    RejectionReason,
    Severity,
)
from tests.unit.builders import feedback, meeting, provider

SOURCE = "carewatch/intake"


def concern() -> ConcernRaised:
    fb = feedback(description="She died.")
    return ConcernRaised(
        concern_id=uuid.UUID("00000000-0000-4000-8000-0000000000c1"), fingerprint="RJ1|r|t",
        provider=provider(), rule="immediate_serious_risk", theme="Clinical treatment",
        severity=Severity.SERIOUS, reason="free text reports death", figures={"triggers": ["x"]},
        evidence=[Evidence(feedback_id=fb.feedback_id, kind=fb.kind, occurred_on=fb.occurred_on,
                           matched="died")],
        raised_at=datetime(2026, 11, 22, 10, 0, tzinfo=UTC))


EVENTS: list[Event] = [
    feedback(description="Ring [PHONE]", risk={"consequence": 4, "likelihood": 4}),
    FeedbackRejected(submission_id=uuid.uuid4(), feed_user="guest", ods_code="RJ1",
                     reasons=[RejectionReason(loc="risk.consequence", msg="too big", type="le")]),
    concern(),
    meeting(),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.event_type)
def test_round_trip_through_bytes(event: Event) -> None:
    submission = uuid.uuid4()
    envelope = event.envelope(SOURCE, submission)
    back = Envelope.from_bytes(envelope.to_bytes())
    assert back == envelope
    assert back.submissionid == submission
    assert back.type == event.event_type
    assert back.subject == event.subject()
    assert EVENT_TYPES[back.type].model_validate(back.data) == event


def test_cloudevents_attributes_on_the_wire() -> None:
    event = EVENTS[0]
    wire = json.loads(event.envelope(SOURCE).to_bytes())
    assert wire["specversion"] == "1.0"
    assert uuid.UUID(wire["id"])
    assert wire["source"] == SOURCE
    assert wire["type"] == "feedback.accepted.v1"
    assert wire["subject"] == "RJ1"
    assert wire["datacontenttype"] == "application/json"
    time = datetime.fromisoformat(wire["time"])
    assert time.utcoffset() is not None, "time must carry its offset (RFC 3339)"
    assert abs((datetime.now(UTC) - time).total_seconds()) < 60
    assert wire["submissionid"] is None
    assert wire["data"]["provider"]["quality_contact_email"] == "q@provider.example"


def test_every_envelope_gets_its_own_id() -> None:
    assert EVENTS[0].envelope(SOURCE).id != EVENTS[0].envelope(SOURCE).id


@pytest.mark.parametrize("change", [{"specversion": "0.3"}, {"datacontenttype": "text/xml"}])
def test_envelope_refuses_other_versions_and_content_types(change: dict[str, str]) -> None:
    wire = json.loads(EVENTS[0].envelope(SOURCE).to_bytes())
    with pytest.raises(ValidationError):
        Envelope.from_bytes(json.dumps({**wire, **change}).encode())


def test_envelope_is_frozen() -> None:
    envelope = EVENTS[0].envelope(SOURCE)
    with pytest.raises(ValidationError):
        envelope.type = "something.else.v1"  # type: ignore[misc]


def _event_classes(cls: type[Event]) -> set[type[Event]]:
    subclasses = set(cls.__subclasses__())
    return subclasses.union(*(_event_classes(c) for c in subclasses))


def test_every_event_class_is_registered_under_its_own_type() -> None:
    defined = {c for c in _event_classes(Event) if c.__module__ == "shared.events"}
    assert set(EVENT_TYPES.values()) == defined
    assert len({c.event_type for c in defined}) == len(defined), "two classes share a type"
    for event_type, cls in EVENT_TYPES.items():
        assert cls.event_type == event_type
    assert EVENT_TYPES["concern.updated.v2"] is ConcernUpdated
    assert EVENT_TYPES["concern.updated.v1"] is ConcernUpdatedV1
    assert ConcernUpdated.event_type != ConcernRaised.event_type


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_event_types_are_versioned(event_type: str) -> None:
    assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+\.v[1-9][0-9]*", event_type), event_type
