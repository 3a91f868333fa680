"""Shared vocabularies: need categories, urgency, consent, channels, outcomes."""

from enum import StrEnum


class Need(StrEnum):
    """Need categories a referral is opened for and a partner service is mapped to."""

    mental_health = "mental_health"
    dental = "dental"
    vision = "vision"
    medical = "medical"
    food = "food"
    housing = "housing"
    clothing = "clothing"
    tutoring = "tutoring"
    mentoring = "mentoring"
    after_school = "after_school"
    early_childhood = "early_childhood"
    crisis = "crisis"
    legal = "legal"
    employment = "employment"
    other = "other"


class Urgency(StrEnum):
    crisis = "crisis"
    urgent = "urgent"
    routine = "routine"


class Consent(StrEnum):
    """The family's consent to share the referral with a partner."""

    given = "given"
    pending = "pending"
    declined = "declined"
    # Shared only with the school's own staff supports (counselor, nurse, social worker...),
    # never with an outside partner: the family declines sharing outside the school.
    in_school = "in_school"

    @property
    def shares(self) -> bool:
        """Whether a partner may be matched at all (given, or inside the school)."""
        return self in (Consent.given, Consent.in_school)


class Channel(StrEnum):
    email = "email"
    sms = "sms"


class ContactKind(StrEnum):
    """How a family was reached: by a message it answered or by a person."""

    email = "email"
    sms = "sms"
    phone_call = "phone_call"
    home_visit = "home_visit"
    conference = "conference"
    in_person = "in_person"


class Outcome(StrEnum):
    services_received = "services_received"
    family_declined = "family_declined"
    unable_to_contact = "unable_to_contact"
    no_longer_needed = "no_longer_needed"
    referred_elsewhere = "referred_elsewhere"
    unmet_no_partner = "unmet_no_partner"
