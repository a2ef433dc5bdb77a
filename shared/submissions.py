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


def _not_in_future(value: date) -> date:
    if value > today_in_england():
        raise ValueError("date is in the future")
    return value


class ComplaintV1(SubmissionBase):
    """A written complaint (KO41a), optionally risk-rated on the NPSA 5x5 matrix."""

    free_text_fields: ClassVar[tuple[str, ...]] = ("description",)

    kind: Literal["complaint"]
    received_on: date
    subject_area: KO41aSubject
    description: FreeText
    risk: RiskRating | None = None
    outcome: Literal["upheld", "partly_upheld", "not_upheld", "withdrawn"] | None = None
    closed_on: date | None = None

    _received = field_validator("received_on")(_not_in_future)

    def occurred_on(self) -> date:
        return self.received_on

    def theme(self) -> str:
        return self.subject_area.value


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


Submission = Annotated[ComplaintV1 | SafeguardingConcernV1, Field(discriminator="kind")]
SUBMISSION_ADAPTER: TypeAdapter[ComplaintV1 | SafeguardingConcernV1] = TypeAdapter(Submission)
KINDS = ("complaint", "safeguarding_concern")
