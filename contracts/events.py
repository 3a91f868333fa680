"""Every integration event, versioned. One owner per event (see the table in the README).

Raising ``version`` is required for a breaking change (a removed or retyped field, a new required
field); consumers ignore fields they do not know, so adding an optional field is not breaking.
"""

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contracts.taxonomy import Channel, Consent, ContactKind, Need, Outcome, Urgency

EVENTS: dict[str, type["Event"]] = {}

Id = str  # opaque ids: uuids or a district's own pseudonymous references


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("an instant needs its offset from UTC (RFC 3339)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is outside the years 1 to 9999 in UTC") from None


# An instant, as the published schema's RFC 3339 "date-time" has it: with an offset (a naive
# time means nothing across zones and no database column takes one), held in UTC.
Instant = Annotated[datetime, AfterValidator(_in_utc)]


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    domain: ClassVar[str]
    name: ClassVar[str]
    version: ClassVar[int] = 1
    internal: ClassVar[bool] = False
    # The CloudEvents ``subject`` (docs/contract.md): the referral when the event belongs to
    # one (a non-empty ``referral_id``), else this field's value.
    subject_field: ClassVar[str] = "referral_id"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            EVENTS[cls.ce_type()] = cls

    @classmethod
    def ce_type(cls) -> str:
        return f"org.ensemble.{cls.domain}.{cls.name}.v{cls.version}"

    def subject_id(self) -> str:
        """The envelope's ``subject``: the referral the event belongs to, else what
        ``subject_field`` names (the family, outreach, family event, batch or service)."""
        referral = getattr(self, "referral_id", None)
        return str(referral or getattr(self, self.subject_field))


def event_class(ce_type: str) -> type[Event] | None:
    return EVENTS.get(ce_type)


# --- referrals -------------------------------------------------------------------------------


class ReferralOpened(Event):
    domain = "referrals"
    name = "opened"
    referral_id: Id
    school_id: Id
    student_ref: Id = Field(description="pseudonymous student reference, never a name")
    family_id: Id
    need: Need
    urgency: Urgency
    consent: Consent
    grade: int | None = Field(default=None, ge=-1, le=12, description="-1 pre-K, 0 kindergarten")
    opened_at: Instant


class ConsentRecorded(Event):
    domain = "referrals"
    name = "consent_recorded"
    referral_id: Id
    consent: Consent
    recorded_by: Id
    recorded_at: Instant


class ReferralAccepted(Event):
    domain = "referrals"
    name = "accepted"
    referral_id: Id
    partner_id: Id
    service_id: Id | None = None


class ReferralDeclined(Event):
    domain = "referrals"
    name = "declined"
    referral_id: Id
    partner_id: Id
    service_id: Id | None = None
    reason: str = Field(max_length=64, description="a reason code, not free text")


class ReferralInService(Event):
    domain = "referrals"
    name = "in_service"
    referral_id: Id
    partner_id: Id


class ReferralClosed(Event):
    domain = "referrals"
    name = "closed"
    referral_id: Id
    outcome: Outcome
    partner_id: Id | None = None
    service_id: Id | None = None
    closed_at: Instant


class ReferralCancelled(Event):
    domain = "referrals"
    name = "cancelled"
    referral_id: Id
    reason: str = Field(max_length=64, description="a reason code, not free text")
    partner_id: Id | None = None
    service_id: Id | None = None


class FollowUpDue(Event):
    domain = "referrals"
    name = "follow_up_due"
    referral_id: Id
    status: str
    urgency: Urgency
    due_at: Instant
    reason: str = Field(default="no_progress", max_length=32,
                        description="no_progress | no_partner | family_unreachable")


class ReferralEscalated(Event):
    domain = "referrals"
    name = "escalated"
    referral_id: Id
    status: str
    urgency: Urgency
    due_at: Instant


# --- partners --------------------------------------------------------------------------------


class PartnerMatched(Event):
    domain = "partners"
    name = "matched"
    referral_id: Id
    family_id: Id
    partner_id: Id
    service_id: Id
    partner_name: str = Field(description="an organization's public name")
    need: Need
    urgency: Urgency
    score: float
    reasons: list[str] = Field(description="the rules that passed and how the score was made")
    attempt: int = Field(ge=1, description="1 for the first match, 2 after one decline, ...")


class PartnerLinkRequested(Event):
    """Internal: tell a matched partner's contact about the referral by email, with a signed,
    expiring, single-purpose link to it in the partner's view (the link is a credential: this
    travels on internal subjects only, like a family's contact details)."""

    domain = "partners"
    name = "link_requested"
    internal = True
    link_id: Id
    referral_id: Id
    partner_id: Id
    partner_name: str
    email: str
    language: str = Field(description="the partner's first language")
    need: Need
    urgency: Urgency
    url: str = Field(description="the link, to the console's /p/<token>")
    expires_at: Instant


class NoPartnerAvailable(Event):
    domain = "partners"
    name = "no_partner_available"
    referral_id: Id
    family_id: Id
    need: Need
    reason: str = Field(max_length=200)
    candidates_considered: int = 0


class CapacityChanged(Event):
    domain = "partners"
    name = "capacity_changed"
    subject_field = "service_id"
    partner_id: Id
    service_id: Id
    school_id: Id | None = None
    capacity: int
    reserved: int


# --- engagement ------------------------------------------------------------------------------


class FamilyRegistered(Event):
    """A family exists: ids and language only, so others can check and match without PII."""

    domain = "engagement"
    name = "family_registered"
    subject_field = "family_id"
    family_id: Id
    school_id: Id
    preferred_language: str
    preferred_channel: Channel | None = None


class OutreachRequested(Event):
    """Internal: the contact details notifications needs to reach a family."""

    domain = "engagement"
    name = "outreach_requested"
    subject_field = "outreach_id"
    internal = True
    outreach_id: Id
    family_id: Id
    referral_id: Id | None = None
    kind: str = Field(description="message kind, e.g. partner_matched")
    language: str
    channels: list[Channel] = Field(description="in order of preference, consented only")
    email: str | None = None
    phone: str | None = Field(default=None, description="E.164")
    family_name: str
    school_id: Id
    urgency: Urgency = Urgency.routine
    variables: dict[str, str] = Field(default_factory=dict)
    attempt: int = Field(default=1, ge=1, description="2 and up: a new try after no answer")


class BulkRecipient(BaseModel):
    """One family of a bulk request (personal data: only on internal subjects)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    family_id: Id
    school_id: Id
    language: str
    channels: list[Channel]
    email: str | None = None
    phone: str | None = None
    family_name: str = ""
    variables: dict[str, str] = Field(default_factory=dict)


class BulkOutreachRequested(Event):
    """Internal: one chunk (at most a few hundred families) of an announcement or invitation;
    notifications inserts the chunk's messages in one statement and sends them in the
    background."""

    domain = "engagement"
    name = "bulk_outreach_requested"
    subject_field = "batch_id"
    internal = True
    batch_id: Id = Field(description="the announcement or family event id")
    kind: str = Field(description="announcement | family_event_invitation")
    urgency: Urgency = Urgency.routine
    variables: dict[str, str] = Field(default_factory=dict)
    recipients: list[BulkRecipient]


class FamilyErased(Event):
    """Internal: a district admin erased a family; every service that holds its personal data
    blanks it and keeps only ids. Ids only: the erasure itself carries nothing to erase."""

    domain = "engagement"
    name = "family_erased"
    subject_field = "family_id"
    internal = True
    family_id: Id
    erased_by: Id = Field(description="the district admin's token subject, for the audit trail")
    erased_at: Instant


class FamilyEventScheduled(Event):
    domain = "engagement"
    name = "family_event_scheduled"
    subject_field = "event_id"
    event_id: Id
    school_id: Id
    title: str = Field(max_length=200, description="a workshop's public title")
    starts_at: Instant
    languages: list[str] = Field(default_factory=list)


class FamilyRsvped(Event):
    domain = "engagement"
    name = "family_rsvped"
    subject_field = "event_id"
    event_id: Id
    family_id: Id
    response: str = Field(description="yes | no")
    via: str = Field(description="sms | email | link")


class FamilyAttended(Event):
    domain = "engagement"
    name = "family_attended"
    subject_field = "event_id"
    event_id: Id
    family_id: Id


class FamilyContacted(Event):
    domain = "engagement"
    name = "family_contacted"
    subject_field = "family_id"
    family_id: Id
    referral_id: Id | None = None
    outreach_id: Id | None = None
    kind: ContactKind
    contacted_at: Instant


class FamilyUnreachable(Event):
    domain = "engagement"
    name = "family_unreachable"
    subject_field = "outreach_id"
    family_id: Id
    referral_id: Id | None = None
    outreach_id: Id
    attempts: int


# --- notifications ---------------------------------------------------------------------------


class NotificationSent(Event):
    domain = "notifications"
    name = "sent"
    subject_field = "outreach_id"
    notification_id: Id
    outreach_id: Id
    family_id: Id
    referral_id: Id | None = None
    channel: Channel
    language: str
    fell_back_to_english: bool = False


class NotificationFailed(Event):
    domain = "notifications"
    name = "failed"
    subject_field = "outreach_id"
    notification_id: Id
    outreach_id: Id
    family_id: Id
    referral_id: Id | None = None
    channel: Channel | None = None
    reason: str = Field(max_length=200, description="the provider's reason code or message")
    permanent: bool = True


class NotificationDelivered(Event):
    """The provider reported the message delivered to the handset or mailbox."""

    domain = "notifications"
    name = "delivered"
    subject_field = "outreach_id"
    notification_id: Id
    outreach_id: Id
    family_id: Id
    referral_id: Id | None = None
    channel: Channel
    delivered_at: Instant


class FamilyReplied(Event):
    """Internal: a family answered a message; carries the reply text."""

    domain = "notifications"
    name = "family_replied"
    subject_field = "family_id"
    internal = True
    family_id: Id
    school_id: Id
    notification_id: Id
    outreach_id: Id | None = None
    referral_id: Id | None = None
    batch_id: Id | None = None
    kind: str
    channel: Channel
    text: str = Field(max_length=1600)
    received_at: Instant
    phone: str | None = Field(default=None, max_length=32,
                              description="E.164: the number an SMS came from (engagement "
                              "finds every open outreach at it)")


class FamilyOptedOut(Event):
    domain = "notifications"
    name = "family_opted_out"
    subject_field = "family_id"
    family_id: Id
    channel: Channel
    at: Instant


class FamilyOptedIn(Event):
    domain = "notifications"
    name = "family_opted_in"
    subject_field = "family_id"
    family_id: Id
    channel: Channel
    at: Instant
