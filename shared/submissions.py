"""What provider feeds submit to intake: one versioned schema per feedback kind.

A submission is a JSON object whose ``kind`` selects the schema. Unknown fields are refused,
so a typo in a field name is a clear rejection rather than silently lost data.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from shared.clock import utc_now

LONDON = ZoneInfo("Europe/London")

OdsCode = Annotated[str, Field(pattern=r"^[A-Z0-9]{3,10}$", description="ODS organisation code")]
# A code, not text: letters, digits and . _ : / # - (no spaces, no @), so that it cannot
# carry free text past redaction. Intake also refuses one that reads as personal data.
RecordId = Annotated[str, Field(min_length=1, max_length=128,
                                pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/#\-]*$",
                                description="The provider's own id of this record")]
FreeText = Annotated[str, Field(min_length=1, max_length=20_000)]
# A short descriptive name (a service, a survey, a measure, a group, a topic): free text too,
# redacted like the rest, since a feed may type anything there (and several become a
# concern's theme).
ShortText = Annotated[str, Field(min_length=1, max_length=200)]

# Dates are refused before this (the year 1 would be stored as -infinity and overflow
# downstream), and dates that may lie ahead (a change's effective date, a consultation)
# more than this many years ahead.
EARLIEST_DATE = date(1900, 1, 1)
YEARS_AHEAD = 10


def today_in_england() -> date:
    return utc_now().astimezone(LONDON).date()


class KO41aSubject(StrEnum):
    """KO41a (written complaints collection) subject areas."""

    ACCESS_TO_TREATMENT = "Access to treatment or drugs"
    ADMISSIONS_DISCHARGE = "Admissions, discharges and transfers"
    APPOINTMENTS = "Appointments"
    CLINICAL_TREATMENT = "Clinical treatment"
    COMMISSIONING = "Commissioning"
    COMMUNICATIONS = "Communications"
    CONSENT = "Consent"
    END_OF_LIFE = "End of life care"
    FACILITIES = "Facilities"
    INTEGRATED_CARE = "Integrated care"
    MORTUARY = "Mortuary"
    PATIENT_CARE = "Patient care"
    PRESCRIBING = "Prescribing"
    PRIVACY_DIGNITY = "Privacy, dignity and wellbeing"
    RESTRAINT = "Restraint"
    STAFF_NUMBERS = "Staff numbers"
    TRANSPORT = "Transport"
    TRUST_ADMIN = "Trust admin, policies and procedures"
    VALUES_BEHAVIOURS = "Values and behaviours (staff)"
    WAITING_TIMES = "Waiting times"
    OTHER = "Other"


class RiskRating(BaseModel):
    """NPSA 5x5 risk matrix: consequence (1 negligible .. 5 catastrophic) x likelihood."""

    model_config = ConfigDict(extra="forbid")

    consequence: int = Field(ge=1, le=5)
    likelihood: int = Field(ge=1, le=5)

    @property
    def score(self) -> int:
        return self.consequence * self.likelihood


class SafeguardingCategory(StrEnum):
    """Categories of abuse and neglect in the Care Act 2014 statutory guidance."""

    PHYSICAL = "physical"
    DOMESTIC = "domestic"
    SEXUAL = "sexual"
    PSYCHOLOGICAL = "psychological"
    FINANCIAL = "financial"
    MODERN_SLAVERY = "modern_slavery"
    DISCRIMINATORY = "discriminatory"
    ORGANISATIONAL = "organisational"
    NEGLECT = "neglect"
    SELF_NEGLECT = "self_neglect"


class SubmissionBase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # Free-text fields: redacted of personal data before anything leaves intake.
    free_text_fields: ClassVar[tuple[str, ...]] = ()
    # Personal data given on purpose (a member of the public's contact details): withheld by
    # intake, kept in a table of its own, never in the accepted content or any event.
    personal_fields: ClassVar[tuple[str, ...]] = ()

    version: Literal[1] = 1
    ods_code: OdsCode
    site_code: OdsCode | None = None
    record_id: RecordId

    def occurred_on(self) -> date:
        raise NotImplementedError

    def theme(self) -> str | None:
        return None

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # PostgreSQL can store no NUL character in text or jsonb: refuse it here, with a
        # reason, rather than fail later where the submission could only be dead-lettered.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text contains a NUL character (\\u0000), which is not allowed")
        return value


def _not_too_early(value: date) -> date:
    if value < EARLIEST_DATE:
        raise ValueError(f"date is before {EARLIEST_DATE.isoformat()}, the earliest date"
                         " intake accepts")
    return value


def _not_in_future(value: date) -> date:
    _not_too_early(value)
    if value > today_in_england():
        raise ValueError("date is in the future")
    return value


def _not_far_ahead(value: date | None) -> date | None:
    if value is None:
        return None
    _not_too_early(value)
    today = today_in_england()
    if value.year > today.year + YEARS_AHEAD:
        raise ValueError(f"date is more than {YEARS_AHEAD} years ahead")
    return value


def _period_in_range(value: str) -> str:
    year, month = map(int, value.split("-"))
    _not_in_future(date(year, month, 1))
    return value


def _not_in_future_opt(value: date | None) -> date | None:
    return None if value is None else _not_in_future(value)


class ComplaintV1(SubmissionBase):
    """A written complaint (KO41a), optionally risk-rated on the NPSA 5x5 matrix.

    The acknowledgement (3 working days) and response (6 months) deadlines are derived by
    intake; ``acknowledged_on`` and ``responded_on`` let quality-monitor track handling."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("description",)

    kind: Literal["complaint"]
    received_on: date
    subject_area: KO41aSubject
    description: FreeText
    risk: RiskRating | None = None
    acknowledged_on: date | None = None
    responded_on: date | None = None
    outcome: Literal["upheld", "partly_upheld", "not_upheld", "withdrawn"] | None = None
    closed_on: date | None = None

    _received = field_validator("received_on")(_not_in_future)
    _others = field_validator("acknowledged_on", "responded_on", "closed_on")(_not_in_future_opt)

    def occurred_on(self) -> date:
        return self.received_on

    def theme(self) -> str:
        return self.subject_area.value


class ComplimentV1(SubmissionBase):
    free_text_fields: ClassVar[tuple[str, ...]] = ("service", "description")

    kind: Literal["compliment"]
    received_on: date
    service: ShortText
    description: FreeText

    _received = field_validator("received_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.received_on

    def theme(self) -> str:
        return self.service


class FFTSetting(StrEnum):
    """Friends and Family Test collection settings."""

    INPATIENT = "inpatient"
    DAY_CASE = "day_case"
    A_AND_E = "a_and_e"
    OUTPATIENT = "outpatient"
    MATERNITY = "maternity"
    MENTAL_HEALTH = "mental_health"
    COMMUNITY = "community"
    AMBULANCE = "ambulance"
    GP = "gp"
    DENTAL = "dental"


class FFTAnswer(StrEnum):
    """The six FFT answer options."""

    VERY_GOOD = "very_good"
    GOOD = "good"
    NEITHER = "neither_good_nor_poor"
    POOR = "poor"
    VERY_POOR = "very_poor"
    DONT_KNOW = "dont_know"


class FFTResponseV1(SubmissionBase):
    """One Friends and Family Test response."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("comment",)

    kind: Literal["fft_response"]
    responded_on: date
    setting: FFTSetting
    answer: FFTAnswer
    comment: Annotated[str, Field(max_length=20_000)] | None = None

    _responded = field_validator("responded_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.responded_on

    def theme(self) -> str:
        return f"fft: {self.setting.value}"


Period = Annotated[str, Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]
# A month's count at one site and setting: far above any real one, and bounded so that the
# six answers' total still fits the 32-bit integers quality-monitor keeps (10**30 did not).
MonthlyCount = Annotated[int, Field(ge=0, le=10_000_000)]


class FFTMonthlyV1(SubmissionBase):
    """A month of FFT results for one site and setting, in NHS England's published layout.

    % positive = (very good + good) / all responses, % negative = (poor + very poor) / all
    responses, where all responses include "don't know"."""

    kind: Literal["fft_monthly"]
    period: Period
    setting: FFTSetting
    very_good: MonthlyCount
    good: MonthlyCount
    neither_good_nor_poor: MonthlyCount
    poor: MonthlyCount
    very_poor: MonthlyCount
    dont_know: MonthlyCount
    total_eligible: MonthlyCount | None = None

    _period = field_validator("period")(_period_in_range)

    @property
    def responses(self) -> int:
        return (self.very_good + self.good + self.neither_good_nor_poor + self.poor
                + self.very_poor + self.dont_know)

    @property
    def percent_positive(self) -> float | None:
        return None if not self.responses else 100 * (self.very_good + self.good) / self.responses

    @property
    def percent_negative(self) -> float | None:
        return None if not self.responses else 100 * (self.poor + self.very_poor) / self.responses

    def occurred_on(self) -> date:
        year, month = map(int, self.period.split("-"))
        return date(year, month, 1)

    def theme(self) -> str:
        return f"fft: {self.setting.value}"


class OnlineReviewV1(SubmissionBase):
    """A review on the NHS website or a Care Opinion story."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("title", "text")

    kind: Literal["online_review"]
    source: Literal["nhs_website", "care_opinion", "other"]
    posted_on: date
    rating: int | None = Field(default=None, ge=1, le=5)
    title: Annotated[str, Field(max_length=500)] | None = None
    text: FreeText
    response_status: Literal["awaiting_response", "responded", "no_response_needed"] = \
        "awaiting_response"

    _posted = field_validator("posted_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.posted_on

    def theme(self) -> str:
        return f"online review: {self.source}"


class Comparison(StrEnum):
    BETTER = "better"
    ABOUT_THE_SAME = "about_the_same"
    WORSE = "worse"


class SurveyResultV1(SubmissionBase):
    """One question's result in a national patient survey (e.g. the Adult Inpatient Survey)."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("survey", "question")

    kind: Literal["survey_result"]
    survey: ShortText
    published_on: date
    question: Annotated[str, Field(min_length=1, max_length=1000)]
    score: float
    national_score: float | None = None
    comparison: Comparison | None = None

    _published = field_validator("published_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.published_on

    def theme(self) -> str:
        return f"survey: {self.survey}"


class PromScoreV1(SubmissionBase):
    """A patient-reported outcome measure (e.g. Oxford Hip Score health gain)."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("measure",)

    kind: Literal["prom_score"]
    measure: ShortText
    period: Period
    score: float
    national_score: float | None = None
    comparison: Comparison | None = None

    _period = field_validator("period")(_period_in_range)

    def occurred_on(self) -> date:
        year, month = map(int, self.period.split("-"))
        return date(year, month, 1)

    def theme(self) -> str:
        return f"prom: {self.measure}"


class GpAlertV1(SubmissionBase):
    """A GP practice's alert about a provider (``ods_code`` is the provider it is about)."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("description",)

    kind: Literal["gp_alert"]
    raised_on: date
    raised_by_practice: OdsCode
    theme_area: KO41aSubject = Field(description="What it is about, as a KO41a subject area")
    patient_safety: bool
    description: FreeText
    risk: RiskRating | None = None

    _raised = field_validator("raised_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.raised_on

    def theme(self) -> str:
        return self.theme_area.value


class VisitRating(StrEnum):
    OUTSTANDING = "outstanding"
    GOOD = "good"
    REQUIRES_IMPROVEMENT = "requires_improvement"
    INADEQUATE = "inadequate"


class InsightVisitV1(SubmissionBase):
    """An insight visit by the commissioner, or a Healthwatch Enter and View visit."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("service", "findings", "recommendations")

    kind: Literal["insight_visit"]
    visit_type: Literal["insight_visit", "enter_and_view"]
    visited_on: date
    service: ShortText
    rating: VisitRating
    findings: Annotated[str, Field(min_length=1, max_length=20_000)]
    recommendations: Annotated[str, Field(max_length=20_000)] = ""

    _visited = field_validator("visited_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.visited_on

    def theme(self) -> str:
        return f"visit: {self.service}"


class ServiceChangeNoticeV1(SubmissionBase):
    """A provider's notice of a change to a service."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("service", "change")

    kind: Literal["service_change_notice"]
    notified_on: date
    service: ShortText
    change: FreeText
    effective_from: date
    engagement_plan: bool
    eia_done: bool = Field(description="Equality impact assessment completed")
    qia_done: bool = Field(description="Quality impact assessment completed")
    consultation_start: date | None = None
    consultation_end: date | None = None
    informed: list[Literal["patients", "scrutiny", "healthwatch"]] = Field(default_factory=list)

    _notified = field_validator("notified_on")(_not_in_future)
    _ahead = field_validator("effective_from", "consultation_start",
                             "consultation_end")(_not_far_ahead)

    def occurred_on(self) -> date:
        return self.notified_on

    def theme(self) -> str:
        return f"service change: {self.service}"


class EngagementFeedbackV1(SubmissionBase):
    """Feedback from a patient participation group or an engagement forum."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("group", "topic", "summary")

    kind: Literal["engagement_feedback"]
    met_on: date
    group: ShortText
    topic: ShortText
    summary: FreeText

    _met = field_validator("met_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.met_on

    def theme(self) -> str:
        return self.topic


class SafeguardingConcernV1(SubmissionBase):
    """A safeguarding concern raised about care at the provider."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("description",)

    kind: Literal["safeguarding_concern"]
    raised_on: date
    category: SafeguardingCategory
    about: Literal["adult", "child"]
    description: FreeText

    _raised = field_validator("raised_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.raised_on

    def theme(self) -> str:
        return f"safeguarding: {self.category.value}"


class EqualityStandard(StrEnum):
    """What a progress return is against: the Workforce Race Equality Standard, the Equality
    Delivery System, the Accessible Information Standard, or one of the provider's Quality
    Account priorities."""

    WRES = "wres"
    EDS = "eds"
    AIS = "ais"
    QUALITY_ACCOUNT_PRIORITY = "quality_account_priority"


class ReturnStatus(StrEnum):
    """Where the provider says it stands against the standard or priority."""

    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    OFF_TRACK = "off_track"
    COMPLETED = "completed"


class EqualityReturnV1(SubmissionBase):
    """A provider's progress return on the WRES, the EDS or the AIS, or its progress against
    one of its Quality Account priorities (named in ``priority``, which only that standard
    has), for one period. ``figure`` is the measured figure the return reports, if any (a
    WRES indicator, an EDS score, a share of patients with their needs recorded)."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("priority", "summary")

    kind: Literal["equality_return"]
    standard: EqualityStandard
    period: Period
    status: ReturnStatus
    priority: ShortText | None = None
    figure: Annotated[float, Field(allow_inf_nan=False, ge=-1e9, le=1e9)] | None = None
    summary: FreeText

    _period = field_validator("period")(_period_in_range)

    @model_validator(mode="after")
    def _priority_only_for_quality_account(self) -> EqualityReturnV1:
        priority_standard = self.standard == EqualityStandard.QUALITY_ACCOUNT_PRIORITY
        if priority_standard and self.priority is None:
            raise ValueError("a quality_account_priority return needs the priority it is about")
        if not priority_standard and self.priority is not None:
            raise ValueError(f"priority is only for quality_account_priority returns, not"
                             f" {self.standard.value}")
        return self

    def occurred_on(self) -> date:
        year, month = map(int, self.period.split("-"))
        return date(year, month, 1)

    def theme(self) -> str:
        return f"equality return: {self.standard.value}"


# A UK phone number as a person types it: digits, spaces, brackets, hyphens, a leading +.
PhoneNumber = Annotated[str, Field(min_length=6, max_length=24,
                                   pattern=r"^\+?[0-9(][0-9 ()\-]{5,23}$")]
ContactEmail = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")]
# What the person wants to be called: personal data, withheld like the rest of the contact.
ContactName = Annotated[str, Field(min_length=1, max_length=200)]


class PublicContact(BaseModel):
    """How a member of the public asked to be contacted. Personal data: intake keeps it in
    ``intake.public_contacts`` (the quality team reads it there), never in an event."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: ContactName | None = None
    email: ContactEmail | None = None
    phone: PhoneNumber | None = None


class CommunicationNeed(StrEnum):
    """Accessible Information Standard: how the person needs to be contacted."""

    EASY_READ = "easy_read"
    LARGE_PRINT = "large_print"
    BRITISH_SIGN_LANGUAGE = "british_sign_language"
    INTERPRETER = "interpreter"
    BRAILLE = "braille"


class PublicFeedbackV1(SubmissionBase):
    """Feedback, a concern, or a complaint escalated to the commissioner, given by a patient,
    carer or member of the public on the public feedback page (the workspace's ``/feedback``),
    which posts it as the public's door feed. ``record_id`` is the acknowledgement reference
    the person was given. ``ods_code`` is the provider it is about.

    Consent and contact preferences are part of the accepted content; the contact details
    themselves (``contact``) are withheld by intake."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("description", "outcome_wanted")
    personal_fields: ClassVar[tuple[str, ...]] = ("contact",)

    kind: Literal["public_feedback"]
    received_on: date
    purpose: Literal["feedback", "concern", "complaint_escalation", "compliment"]
    relationship: Literal["patient", "carer", "relative_or_friend", "member_of_public",
                          "prefer_not_to_say"]
    subject_area: KO41aSubject
    description: Annotated[str, Field(min_length=1, max_length=10_000)]
    outcome_wanted: Annotated[str, Field(max_length=5_000)] | None = None
    happened_on: date | None = None
    complained_to_provider: Literal["yes", "no", "not_sure"] | None = None
    # May the commissioner share what was written (personal data removed) with the provider,
    # and may it tell the provider who the person is?
    consent_share_feedback: bool
    consent_share_identity: bool = False
    contact_by: Literal["none", "email", "phone"]
    contact: PublicContact | None = None
    communication_needs: list[CommunicationNeed] = Field(default_factory=list, max_length=5)

    _received = field_validator("received_on")(_not_in_future)
    _happened = field_validator("happened_on")(_not_in_future_opt)

    @model_validator(mode="after")
    def _contact_matches_preference(self) -> PublicFeedbackV1:
        # Only what is needed to reply is kept: no details without a way of contact, and the
        # detail the chosen way needs.
        if self.contact_by == "none":
            if self.contact is not None:
                raise ValueError("contact details were given but contact_by is 'none'")
        elif self.contact is None or getattr(self.contact, self.contact_by) is None:
            raise ValueError(f"contact_by is {self.contact_by!r} but no {self.contact_by}"
                             " was given in contact")
        if self.consent_share_identity and self.contact_by == "none":
            raise ValueError("consent_share_identity needs contact details to share")
        return self

    def occurred_on(self) -> date:
        return self.received_on

    def theme(self) -> str:
        return self.subject_area.value


SubmissionModel = (ComplaintV1 | ComplimentV1 | FFTResponseV1 | FFTMonthlyV1 | OnlineReviewV1
                   | SurveyResultV1 | PromScoreV1 | GpAlertV1 | InsightVisitV1
                   | SafeguardingConcernV1 | ServiceChangeNoticeV1 | EngagementFeedbackV1
                   | EqualityReturnV1 | PublicFeedbackV1)
Submission = Annotated[SubmissionModel, Field(discriminator="kind")]
SUBMISSION_ADAPTER: TypeAdapter[SubmissionModel] = TypeAdapter(Submission)
KINDS: tuple[str, ...] = tuple(
    cls.model_fields["kind"].annotation.__args__[0]
    for cls in SubmissionModel.__args__)

# The kinds that exist to report risk: a serious one must not queue behind the routine
# volume of FFT responses, reviews and survey returns (intake's and quality-monitor's lanes).
# Public feedback is among them: it may escalate a complaint or report harm.
URGENT_KINDS: frozenset[str] = frozenset({"complaint", "safeguarding_concern", "gp_alert",
                                          "public_feedback"})
# The kinds only the public's door may submit (a feed registered with ``--public``, which may
# submit nothing else): no provider feed can speak for the public.
PUBLIC_KINDS: frozenset[str] = frozenset({"public_feedback"})

# -- bulk messages ------------------------------------------------------------------------------
# A bulk message carries many submissions of one routine kind from one feed (an FFT vendor's
# export, say): ``{"kind": "bulk", "version": 1, "item_kind": "fft_response", "items": [...]}``,
# published with the routing key ``submission.bulk.v1`` (or posted to
# ``/v1/submissions/batch``). Each item is exactly the submission it would be on its own,
# validated, authorised, redacted, de-duplicated and quarantined on its own; the message is
# read, authenticated and stored once.
BULK_KIND = "bulk"
BULK_ROUTING_KEY = "submission.bulk.v1"
MAX_BULK_ITEMS = 1_000
MAX_BULK_BYTES = 16 * 1_048_576
# The kinds a bulk message may carry: routine ones only, never a kind that reports risk
# (those take the urgent lane, one submission a message).
BULK_ITEM_KINDS: frozenset[str] = frozenset({"fft_response"})


class BulkSubmissionV1(BaseModel):
    """Up to 1,000 submissions of one routine kind (today ``fft_response``) from one feed, in
    one message: routing key ``submission.bulk.v1``. Each item is a submission as it would be
    sent alone; an invalid item is quarantined with its reasons, the others are admitted."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["bulk"]
    version: Literal[1] = 1
    item_kind: Literal["fft_response"]
    items: Annotated[list[FFTResponseV1], Field(min_length=1, max_length=MAX_BULK_ITEMS)]
