"""The CloudEvents 1.0 envelope every carewatch event travels in (structured JSON mode).

The envelope ``id`` is also the AMQP ``message_id``: consumers de-duplicate on it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.clock import utc_now

CONTENT_TYPE = "application/cloudevents+json"


class Envelope(BaseModel):
    """A CloudEvents 1.0 envelope. ``submissionid`` is a CloudEvents extension attribute
    carrying the originating provider submission, so one submission can be followed
    through every service."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: str
    type: str
    time: datetime = Field(default_factory=utc_now)
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    submissionid: uuid.UUID | None = None
    data: dict[str, Any]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Envelope:
        return cls.model_validate_json(body)
