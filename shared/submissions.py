"""What provider feeds submit to intake: one versioned schema per feedback kind.

A submission is a JSON object whose ``kind`` selects the schema. Unknown fields are refused,
so a typo in a field name is a clear rejection rather than silently lost data.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

LONDON = ZoneInfo("Europe/London")

OdsCode = Annotated[str, Field(pattern=r"^[A-Z0-9]{3,10}$", description="ODS organisation code")]
RecordId = Annotated[str, Field(min_length=1, max_length=128,
                                description="The provider's own id of this record")]
FreeText = Annotated[str, Field(min_length=1, max_length=20_000)]


def today_in_england() -> date:
    return datetime.now(LONDON).date()


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


def _not_in_future(value: date) -> date:
    if value > today_in_england():
        raise ValueError("date is in the future")
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
    free_text_fields: ClassVar[tuple[str, ...]] = ("description",)

    kind: Literal["compliment"]
    received_on: date
    service: Annotated[str, Field(min_length=1, max_length=200)]
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


Period = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]
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

    @field_validator("period")
    @classmethod
    def _period_not_future(cls, value: str) -> str:
        year, month = map(int, value.split("-"))
        _not_in_future(date(year, month, 1))
        return value

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

    kind: Literal["survey_result"]
    survey: Annotated[str, Field(min_length=1, max_length=200)]
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

    kind: Literal["prom_score"]
    measure: Annotated[str, Field(min_length=1, max_length=200)]
    period: Period
    score: float
    national_score: float | None = None
    comparison: Comparison | None = None

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

    free_text_fields: ClassVar[tuple[str, ...]] = ("findings", "recommendations")

    kind: Literal["insight_visit"]
    visit_type: Literal["insight_visit", "enter_and_view"]
    visited_on: date
    service: Annotated[str, Field(min_length=1, max_length=200)]
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

    free_text_fields: ClassVar[tuple[str, ...]] = ("change",)

    kind: Literal["service_change_notice"]
    notified_on: date
    service: Annotated[str, Field(min_length=1, max_length=200)]
    change: FreeText
    effective_from: date
    engagement_plan: bool
    eia_done: bool = Field(description="Equality impact assessment completed")
    qia_done: bool = Field(description="Quality impact assessment completed")
    consultation_start: date | None = None
    consultation_end: date | None = None
    informed: list[Literal["patients", "scrutiny", "healthwatch"]] = Field(default_factory=list)

    _notified = field_validator("notified_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.notified_on

    def theme(self) -> str:
        return f"service change: {self.service}"


class EngagementFeedbackV1(SubmissionBase):
    """Feedback from a patient participation group or an engagement forum."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("summary",)

    kind: Literal["engagement_feedback"]
    met_on: date
    group: Annotated[str, Field(min_length=1, max_length=200)]
    topic: Annotated[str, Field(min_length=1, max_length=200)]
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


SubmissionModel = (ComplaintV1 | ComplimentV1 | FFTResponseV1 | FFTMonthlyV1 | OnlineReviewV1
                   | SurveyResultV1 | PromScoreV1 | GpAlertV1 | InsightVisitV1
                   | SafeguardingConcernV1 | ServiceChangeNoticeV1 | EngagementFeedbackV1)
Submission = Annotated[SubmissionModel, Field(discriminator="kind")]
SUBMISSION_ADAPTER: TypeAdapter[SubmissionModel] = TypeAdapter(Submission)
KINDS: tuple[str, ...] = tuple(
    cls.model_fields["kind"].annotation.__args__[0]  # type: ignore[union-attr]
    for cls in SubmissionModel.__args__)  # type: ignore[attr-defined]

# The kinds that exist to report risk: a serious one must not queue behind the routine
# volume of FFT responses, reviews and survey returns (intake's and quality-monitor's lanes).
URGENT_KINDS: frozenset[str] = frozenset({"complaint", "safeguarding_concern", "gp_alert"})
