"""Small builders of domain objects for the unit tests: plain data, no I/O beyond reading the
example submissions shipped in ``examples/submissions``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from shared.events import Attendee, FeedbackAccepted, MeetingScheduled, ProviderRef, Severity

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "submissions"


def example_body(name: str) -> dict[str, Any]:
    """The ``body`` of one example submission, e.g. ``example_body("serious-complaint")``."""
    return json.loads((EXAMPLES / f"{name}.json").read_text())["body"]


def provider(ods_code: str = "RJ1", name: str = "Guy's and St Thomas' NHS Foundation Trust",
             provider_type: str = "acute") -> ProviderRef:
    return ProviderRef(ods_code=ods_code, name=name, provider_type=provider_type,
                       quality_contact_email="q@provider.example")


def feedback(kind: str = "complaint", *, theme: str | None = "Clinical treatment",
             ods_code: str = "RJ1", **content: Any) -> FeedbackAccepted:
    """Accepted feedback whose ``content`` is exactly the keyword arguments (plus ``kind``)."""
    return FeedbackAccepted(
        feedback_id=uuid.uuid4(), submission_id=uuid.uuid4(), provider=provider(ods_code),
        kind=kind, provider_record_id="DATIX-1", occurred_on=date(2026, 11, 16), theme=theme,
        content={"kind": kind, **content})


def meeting(**overrides: Any) -> MeetingScheduled:
    """A remedial-action meeting on Monday 23 November 2026, 09:00-10:00 London (GMT)."""
    fields: dict[str, Any] = {
        "meeting_id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "concern_id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
        "provider": provider(),
        "title": "Remedial action meeting: falls on elderly care wards",
        "starts_at": datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        "ends_at": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        "timezone": "Europe/London",
        "location": "Microsoft Teams",
        "deadline": datetime(2026, 11, 24, 17, 0, tzinfo=UTC),
        "breach": False,
        "severity": Severity.SERIOUS,
        "agenda": ["Falls data since April", "Enhanced observation policy"],
        "remedial_actions": ["Falls risk assessment within 6 hours of admission"],
        "organizer": Attendee(role="ICB quality lead", name="Olga Organiser",
                              email="olga@icb.example"),
        "attendees": [
            Attendee(role="provider quality lead", name="Pat Provider", email="q@provider.example"),
            Attendee(role="ICB chief nurse", name="Ian Nurse", email="ian@icb.example"),
        ],
        "sequence": 0,
    }
    fields.update(overrides)
    return MeetingScheduled(**fields)
