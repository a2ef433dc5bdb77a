"""Who attends what: the commissioner's people, the provider's quality lead, Healthwatch and
the Quality Surveillance Group, as configured in the settings."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import Attendee, ProviderRef
from shared.settings import Settings


@dataclass(frozen=True)
class People:
    organizer: Attendee
    quality_lead: Attendee
    lay_member: Attendee
    healthwatch: Attendee
    local_authority: Attendee
    cqc: Attendee
    nhs_england: Attendee

    @classmethod
    def from_settings(cls, s: Settings) -> People:
        return cls(
            organizer=Attendee(role="organizer", name=s.commissioner_name,
                               email=s.quality_team_email),
            quality_lead=Attendee(role="commissioner quality lead", name=s.quality_lead_name,
                                  email=s.quality_lead_email),
            lay_member=Attendee(role="lay member", name=s.lay_member_name,
                                email=s.lay_member_email),
            healthwatch=Attendee(role="healthwatch", name=s.healthwatch_name,
                                 email=s.healthwatch_email),
            local_authority=Attendee(role="local authority", name="Local authority (adult social"
                                     " care and safeguarding)", email=s.qsg_local_authority_email),
            cqc=Attendee(role="care quality commission", name="Care Quality Commission",
                         email=s.qsg_cqc_email),
            nhs_england=Attendee(role="nhs england", name="NHS England (regional quality)",
                                 email=s.qsg_nhs_england_email),
        )

    def organizer_for(self, provider: ProviderRef) -> Attendee:
        """The commissioner of this provider: its ICB as the registry knows it, else the
        configured CAREWATCH_COMMISSIONER_NAME."""
        if not provider.icb_name:
            return self.organizer
        return self.organizer.model_copy(update={"name": provider.icb_name})

    @staticmethod
    def provider_lead(provider: ProviderRef) -> Attendee:
        return Attendee(role="provider quality lead", name=f"Quality lead, {provider.name}",
                        email=provider.quality_contact_email)

    def rota_seed(self) -> list[dict[str, str]]:
        """The settings' quality lead and lay member: on the rota unless an operator has
        taken them off (``carewatch people``)."""
        return [{"email": self.quality_lead.email, "name": self.quality_lead.name,
                 "role": "quality lead"},
                {"email": self.lay_member.email, "name": self.lay_member.name,
                 "role": "lay member"}]

    def rapid_quality_review(self, provider: ProviderRef,
                             commissioner: list[Attendee]) -> list[Attendee]:
        """The Rapid Quality Review (the risk summit of CCG days): the provider, the ICB's
        people, NHS England's region, the CQC, the local authority and Healthwatch."""
        return [self.provider_lead(provider), *commissioner, self.nhs_england, self.cqc,
                self.local_authority, self.healthwatch]

    @property
    def commissioner(self) -> list[Attendee]:
        """The commissioner's side of every remedial meeting (booked, so never double-booked)."""
        return [self.quality_lead, self.lay_member]

    def meeting(self, provider: ProviderRef) -> list[Attendee]:
        return [self.provider_lead(provider), *self.commissioner]

    def insight_visit(self, provider: ProviderRef) -> list[Attendee]:
        return [*self.meeting(provider), self.healthwatch]

    def risk_summit(self, provider: ProviderRef) -> list[Attendee]:
        """The Quality Surveillance Group with the provider and the commissioner."""
        return [*self.meeting(provider), self.local_authority, self.cqc, self.healthwatch,
                self.nhs_england]
