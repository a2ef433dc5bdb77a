"""Versioned domain events: the contract between carewatch services.

Each event class names its CloudEvents ``type`` (which is also its routing key). A breaking
change is a new class with a new version; consumers subscribe to the versions they know.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from shared.envelope import Envelope
from shared.severity import Severity as Severity
from shared.submissions import BULK_ITEM_KINDS, KINDS, MAX_BULK_ITEMS, URGENT_KINDS

# An e-mail address in an event. Addresses are checked in full (email-validator) where they
# enter carewatch (the provider registry, the notification routing file); events check the
# shape only: they are parsed by every consumer, and a full check costs far more than the
# pattern each time (BENCHMARKS.md, "Figures once kept in the code").
EmailAddress = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                                    json_schema_extra={"format": "email"})]


class ProviderRef(BaseModel):
    """A snapshot of the provider as registered at intake, carried downstream so that no
    service needs to read intake's registry."""

    model_config = ConfigDict(frozen=True)

    ods_code: str
    name: str
    provider_type: str
    quality_contact_email: EmailAddress
    # The provider's commissioner (its ICB), when the registry knows it: the organiser named
    # on its meetings and e-mails (else CAREWATCH_COMMISSIONER_NAME).
    icb_code: str | None = None
    icb_name: str | None = None


FULL_EMAIL_CHECK: TypeAdapter[str] = TypeAdapter(EmailStr)


class Event(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True)

    event_type: ClassVar[str]

    def subject(self) -> str | None:
        return None

    # The routing-key suffixes the event can carry (empty: none), and those of them that
    # travel in the urgent lane: consumers get a queue of their own for those, and the outbox
    # relay publishes them first, so they never wait behind routine volume.
    routing_suffixes: ClassVar[tuple[str, ...]] = ()
    urgent_suffixes: ClassVar[frozenset[str]] = frozenset()

    def routing_key(self) -> str:
        """The event type, and for some events a suffix a consumer may bind on."""
        return self.event_type

    @property
    def urgent(self) -> bool:
        """Whether the event travels in the urgent lane."""
        return self.routing_key().rpartition(".")[2] in self.urgent_suffixes

    def envelope(self, source: str, submission_id: uuid.UUID | None = None) -> Envelope:
        return Envelope(
            source=source,
            type=self.event_type,
            subject=self.subject(),
            submissionid=submission_id,
            data=self.model_dump(mode="json"),
        )


class RejectionReason(BaseModel):
    """One machine-readable reason a submission was rejected."""

    loc: str = Field(description="Dotted path of the offending field ('' for the whole message)")
    msg: str
    type: str

    @field_validator("loc", "msg", "type")
    @classmethod
    def _storable(cls, value: str) -> str:
        # A field name sent by a feed may hold a NUL, which PostgreSQL cannot store.
        return value.replace("\x00", "\\u0000")


class FeedbackAccepted(Event):
    event_type: ClassVar[str] = "feedback.accepted.v1"
    routing_suffixes: ClassVar[tuple[str, ...]] = KINDS
    urgent_suffixes: ClassVar[frozenset[str]] = URGENT_KINDS

    feedback_id: uuid.UUID
    submission_id: uuid.UUID
    provider: ProviderRef
    kind: str
    provider_record_id: str
    occurred_on: date
    theme: str | None = None
    site_code: str | None = None
    # The validated submission with personal data redacted from its free text.
    content: dict[str, Any]

    def subject(self) -> str:
        return self.provider.ods_code

    def routing_key(self) -> str:
        # feedback.accepted.v1.<kind>: a service that needs one kind (escalation: insight
        # visits) binds to it alone instead of receiving the whole stream.
        return f"{self.event_type}.{self.kind}"


class FeedbackAcceptedBatch(Event):
    """Many accepted submissions of one routine kind at once: a bulk message's items stored
    in one transaction (``submission.bulk.v1``), each exactly as ``feedback.accepted.v1``
    would carry it (free text redacted). One event, one inbox row and one group of writes
    downstream, instead of one per item. Only intake publishes it; only the kinds a bulk
    message may carry (never one that reports risk) travel this way."""

    event_type: ClassVar[str] = "feedback.accepted_batch.v1"
    routing_suffixes: ClassVar[tuple[str, ...]] = tuple(sorted(BULK_ITEM_KINDS))

    kind: str
    items: Annotated[list[FeedbackAccepted], Field(min_length=1, max_length=MAX_BULK_ITEMS)]

    @model_validator(mode="after")
    def _one_routine_kind(self) -> FeedbackAcceptedBatch:
        if self.kind not in BULK_ITEM_KINDS:
            raise ValueError(f"a batch carries one of {sorted(BULK_ITEM_KINDS)}, not {self.kind}")
        if any(item.kind != self.kind for item in self.items):
            raise ValueError(f"every item of a {self.kind} batch is a {self.kind}")
        return self

    def routing_key(self) -> str:
        # feedback.accepted_batch.v1.<kind>, as feedback.accepted.v1.<kind>.
        return f"{self.event_type}.{self.kind}"


class FeedbackRejected(Event):
    event_type: ClassVar[str] = "feedback.rejected.v1"

    submission_id: uuid.UUID
    feed_user: str | None
    ods_code: str | None = None
    kind: str | None = None
    provider_record_id: str | None = None
    reasons: list[RejectionReason]

    def subject(self) -> str | None:
        return self.ods_code


class Evidence(BaseModel):
    """A piece of feedback behind a concern, and what in it triggered the rule."""

    feedback_id: uuid.UUID
    kind: str
    occurred_on: date
    matched: str | None = None


class ConcernRaised(Event):
    event_type: ClassVar[str] = "concern.raised.v1"

    concern_id: uuid.UUID
    fingerprint: str
    provider: ProviderRef
    rule: str
    theme: str
    severity: Severity
    reason: str
    figures: dict[str, Any] = Field(default_factory=dict)
    evidence: list[Evidence]
    raised_at: datetime

    def subject(self) -> str:
        return str(self.concern_id)


class ConcernUpdated(ConcernRaised):
    """An open concern changed: new evidence, a new signal, a higher severity.

    Version 2: ``evidence`` holds only the items this update added (none when only the
    severity or the reason changed), and ``evidence_count`` how many the concern holds after
    it, so that an update costs the same however much evidence the concern has gathered.
    Consumers add the items to the concern they know, by ``feedback_id`` (the same event
    twice, or an item already known, adds nothing); ``concern.raised`` carries the first.
    """

    event_type: ClassVar[str] = "concern.updated.v2"

    previous_severity: Severity
    evidence_count: int = Field(ge=0, description="Evidence items on the concern after this"
                                " update (``evidence`` holds only the new ones)")


class ConcernUpdatedV1(ConcernUpdated):
    """Version 1 of ``concern.updated``, which carried the concern's whole evidence list. No
    longer published; consumers still take it (from queues, outboxes and DLQs of before the
    upgrade), adding its items by ``feedback_id`` like version 2's, which comes to the same."""

    event_type: ClassVar[str] = "concern.updated.v1"

    evidence_count: int = Field(default=0, ge=0, exclude=True,
                                description="Not in version 1: the length of ``evidence``")

    @model_validator(mode="before")
    @classmethod
    def _count(cls, data: Any) -> Any:
        if isinstance(data, dict) and "evidence_count" not in data:
            return {**data, "evidence_count": len(data.get("evidence") or [])}
        return data


class Attendee(BaseModel):
    role: str
    name: str
    email: EmailAddress


class MeetingScheduled(Event):
    event_type: ClassVar[str] = "meeting.scheduled.v1"

    meeting_id: uuid.UUID
    concern_id: uuid.UUID
    provider: ProviderRef
    title: str
    starts_at: datetime
    ends_at: datetime
    timezone: str
    location: str
    deadline: datetime
    breach: bool
    severity: Severity
    agenda: list[str]
    remedial_actions: list[str]
    organizer: Attendee
    attendees: list[Attendee]
    sequence: int = 0
    # Added compatibly (defaults): every concern on the meeting's agenda (the provider's
    # concerns gather on one meeting), the joining link, why a breach happened and whom it
    # is reported to, and the kind (a remedial meeting or a Rapid Quality Review).
    concern_ids: list[uuid.UUID] = Field(default_factory=list)
    url: str | None = None
    breach_reason: str | None = None
    head_of_quality: Attendee | None = None
    kind: str = "remedial"

    def subject(self) -> str:
        return str(self.meeting_id)


class ConcernResolved(Event):
    """A concern is over: closed by escalation, or its signal back to common cause."""

    event_type: ClassVar[str] = "concern.resolved.v1"

    concern_id: uuid.UUID
    fingerprint: str
    provider: ProviderRef
    rule: str
    theme: str
    severity: Severity
    resolution: str  # why: "closed by escalation: ...", "signal returned to common cause ..."
    resolved_at: datetime

    def subject(self) -> str:
        return str(self.concern_id)


class ConcernClosed(Event):
    """The quality team closed a concern on the escalation side (actions complete)."""

    event_type: ClassVar[str] = "concern.closed.v1"

    concern_id: uuid.UUID
    provider: ProviderRef
    closed_by: str
    reason: str
    closed_at: datetime

    def subject(self) -> str:
        return str(self.concern_id)


class MeetingRescheduled(MeetingScheduled):
    """The meeting moved or its agenda changed; ``sequence`` is higher than before."""

    event_type: ClassVar[str] = "meeting.rescheduled.v1"

    previous_starts_at: datetime
    change: str


class MeetingCancelled(MeetingScheduled):
    """A meeting not yet held is cancelled (for instance, its concern resolved)."""

    event_type: ClassVar[str] = "meeting.cancelled.v1"

    reason: str


class RemedialAction(BaseModel):
    action_id: uuid.UUID
    description: str
    owner: str
    due_on: date
    status: str = "open"  # open, completed, overdue
    evidence_of_completion: str | None = None


class ActionDueSoon(Event):
    event_type: ClassVar[str] = "action.due_soon.v1"

    concern_id: uuid.UUID
    provider: ProviderRef
    action: RemedialAction
    days_left: int

    def subject(self) -> str:
        return str(self.action.action_id)


class ActionOverdue(Event):
    event_type: ClassVar[str] = "action.overdue.v1"

    concern_id: uuid.UUID
    provider: ProviderRef
    action: RemedialAction
    days_overdue: int

    def subject(self) -> str:
        return str(self.action.action_id)


class EscalationStep(BaseModel):
    level: str  # remedial_meeting, enhanced_surveillance, risk_summit
    at: datetime
    reason: str


class ConcernEscalated(Event):
    """The concern climbed a step of the ladder: enhanced surveillance, then a Quality
    Surveillance Group risk summit (with the QSG members as attendees)."""

    event_type: ClassVar[str] = "concern.escalated.v1"

    concern_id: uuid.UUID
    provider: ProviderRef
    level: str  # enhanced_surveillance, risk_summit
    reason: str
    history: list[EscalationStep]
    attendees: list[Attendee] = Field(default_factory=list)

    def subject(self) -> str:
        return str(self.concern_id)


class VisitScheduled(Event):
    """An insight visit (or the re-visit about 12 months after one) is due."""

    event_type: ClassVar[str] = "visit.scheduled.v1"

    visit_id: uuid.UUID
    provider: ProviderRef
    visit_kind: str  # insight_visit, revisit
    due_on: date
    reason: str
    concern_id: uuid.UUID | None = None
    attendees: list[Attendee] = Field(default_factory=list)

    def subject(self) -> str:
        return str(self.visit_id)


class MeetingReplied(Event):
    """An attendee answered a meeting invitation (iTIP REPLY), received by notification's
    inbound SMTP endpoint from the attendee's own address."""

    event_type: ClassVar[str] = "meeting.reply.v1"

    meeting_id: uuid.UUID
    attendee: EmailAddress
    partstat: Literal["accepted", "declined", "tentative"]
    sequence: int  # the invitation's SEQUENCE the reply answers
    received_at: datetime

    def subject(self) -> str:
        return str(self.meeting_id)


class MeetingSlotProposed(Event):
    """A lead declined: escalation proposes the next free slot to the quality team (nothing
    is moved until a person reschedules)."""

    event_type: ClassVar[str] = "meeting.slot_proposed.v1"

    meeting_id: uuid.UUID
    provider: ProviderRef
    title: str
    starts_at: datetime
    proposed_starts_at: datetime
    proposed_ends_at: datetime
    declined_by: Attendee
    reason: str

    def subject(self) -> str:
        return str(self.meeting_id)


class NotificationFailed(Event):
    event_type: ClassVar[str] = "notification.failed.v1"

    notification_id: uuid.UUID
    source_event_id: uuid.UUID
    channel: str
    recipient: str
    attempts: int
    last_error: str

    def subject(self) -> str:
        return str(self.notification_id)


class ReportAttachment(BaseModel):
    """A file of a report, carried in the event so that notification can attach it."""

    filename: str
    media_type: str
    content_base64: str


class ReportPublished(Event):
    """A new version of a report (the monthly CQRM pack, the quarterly Quality & Performance
    report, "you said, we did"): notification e-mails it to the report distribution list,
    with its PDF and XLSX attached. Every text in it has been redacted again."""

    event_type: ClassVar[str] = "report.published.v1"

    report_id: uuid.UUID
    kind: str  # cqrm_pack, quality_performance, you_said_we_did
    scope: str  # the provider's ODS code, or "all"
    period: str  # YYYY-MM or YYYY-Qn
    version: int
    title: str
    summary: str
    generated_at: datetime
    provider: ProviderRef | None = None  # the provider a report is about (not "all")
    attachments: list[ReportAttachment] = Field(default_factory=list)

    def subject(self) -> str:
        return str(self.report_id)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        FeedbackAccepted,
        FeedbackAcceptedBatch,
        FeedbackRejected,
        ConcernRaised,
        ConcernUpdated,
        ConcernUpdatedV1,
        ConcernResolved,
        ConcernClosed,
        MeetingScheduled,
        MeetingRescheduled,
        MeetingCancelled,
        ActionDueSoon,
        ActionOverdue,
        ConcernEscalated,
        VisitScheduled,
        NotificationFailed,
        MeetingReplied,
        MeetingSlotProposed,
        ReportPublished,
    )
}
