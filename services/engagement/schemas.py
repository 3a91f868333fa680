"""Engagement's HTTP request and response models (the routes are in api.py, family_events_api.py,
announcements_api.py and replies_api.py)."""

from datetime import datetime
from typing import Annotated, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)

from contracts.taxonomy import Channel, ContactKind, Urgency

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Language = Annotated[
    str, Field(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")
]
MAX_OFFSET = 10_000_000  # past any district's size; keeps the database's integers in range


def e164(value: str) -> str:
    """Validate a phone number and store it in E.164 (numbers without +country are US)."""
    try:
        number = phonenumbers.parse(value, "US")
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


Phone = Annotated[str, Field(max_length=32), AfterValidator(e164)]


# --- families, their students, outreach and contact log (api.py) ----------------------------


class StudentLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student_ref: Token = Field(description="the district's pseudonymous reference, not a name")
    grade: int | None = Field(default=None, ge=-1, le=12)


class LinkStudent(StudentLink):
    """A student linked to a family later; the district in the body, as in every write."""

    district_id: Token


class RegisterFamily(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    school_id: Token
    name: Annotated[str, Field(min_length=1, max_length=200)]
    preferred_language: Language = "en"
    phone: Phone | None = None
    email: EmailStr | None = None
    preferred_channel: Channel = Channel.email
    sms_consent: bool = False
    email_consent: bool = True
    students: list[StudentLink] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _reachable_by_preference(self) -> "RegisterFamily":
        if self.preferred_channel == Channel.sms and not self.phone:
            raise ValueError("preferred_channel sms needs a phone")
        if self.preferred_channel == Channel.email and not self.email:
            raise ValueError("preferred_channel email needs an email")
        return self


class UpdateFamily(BaseModel):
    """Preferences and consent as the family states them; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    district_id: Token
    preferred_language: Language | None = None
    preferred_channel: Channel | None = None
    phone: Phone | None = None
    email: EmailStr | None = None
    sms_consent: bool | None = None
    email_consent: bool | None = None


class StudentView(BaseModel):
    student_ref: str
    school_id: str
    grade: int | None


class OutreachView(BaseModel):
    id: str
    referral_id: str | None
    kind: str
    status: str
    attempts: int
    next_check_at: datetime | None
    created_at: datetime
    updated_at: datetime


class FamilyView(BaseModel):
    id: str
    district_id: str
    school_id: str
    name: str
    preferred_language: str
    phone: str | None
    email: str | None
    preferred_channel: str
    sms_consent: bool
    email_consent: bool
    sms_opted_out: bool
    email_opted_out: bool
    created_at: datetime
    erased_at: datetime | None = None
    erased_by: str | None = None
    retired_at: datetime | None = None  # no longer in the district's roster (ensemble roster)


class LogContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    kind: ContactKind
    outcome: Literal["reached", "no_answer", "left_message", "wrong_number"] = "reached"
    referral_id: str | None = Field(default=None, max_length=64)
    by: str = Field(default="coordinator", max_length=128)
    note: str | None = Field(default=None, max_length=500)
    at: AwareDatetime | None = Field(default=None, description="with its UTC offset")


class ContactView(BaseModel):
    id: str
    kind: str
    outcome: str
    at: datetime
    by: str
    referral_id: str | None
    note: str | None


# --- family events and RSVPs (family_events_api.py) -----------------------------------------


class ScheduleEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    school_id: Token
    title: Annotated[str, Field(min_length=1, max_length=200)]
    starts_at: AwareDatetime
    place: Annotated[str, Field(min_length=1, max_length=200)]
    languages: list[Language] = Field(default_factory=list, max_length=10)


class EventView(BaseModel):
    id: str
    district_id: str
    school_id: str
    title: str
    starts_at: datetime
    place: str
    languages: list[str]
    invited: int = 0
    unreachable: int = 0
    yes: int = 0
    no: int = 0
    attended: int = 0


class Invite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    grades: list[Annotated[int, Field(ge=-1, le=12)]] | None = Field(
        default=None, description="only families with a student in these grades; all if absent")


class InviteResult(BaseModel):
    invited: int
    unreachable: int
    already_invited: int
    requests: int = Field(description="bulk requests to notifications (chunks), not one a family")


class InvitationView(BaseModel):
    family_id: str
    reachable: bool
    response: str | None
    responded_via: str | None
    responded_at: datetime | None
    attended: bool


class Attendance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    family_ids: list[Annotated[str, Field(max_length=64)]] = Field(max_length=5000)
    attended: bool = True


# --- announcements (announcements_api.py) ---------------------------------------------------


class Announce(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    school_id: Token | None = Field(default=None, description="the whole district if absent")
    title: Annotated[str, Field(min_length=1, max_length=200)]
    body: Annotated[str, Field(min_length=1, max_length=2000)]
    urgency: Urgency = Urgency.routine


class AnnouncementView(BaseModel):
    id: str
    district_id: str
    school_id: str | None
    title: str
    urgency: str
    status: str = Field(description="fanning_out, then queued (delivery: /message-batches/{id})")
    families_targeted: int
    families_unreachable: int
    chunks: int
    created_at: datetime
    finished_at: datetime | None


# --- replies waiting to be assigned (replies_api.py) ----------------------------------------


class Candidate(BaseModel):
    outreach_id: str
    family_id: str
    referral_id: str | None
    reply_code: str | None
    status: str


class UnassignedReplyView(BaseModel):
    id: str
    school_id: str
    channel: str
    text: str
    received_at: datetime
    status: str = Field(description="held, or assigned (to outreach_id)")
    candidates: list[Candidate] = Field(description="the outreach it may answer, newest first")
    outreach_id: str | None
    assigned_by: str | None
    assigned_at: datetime | None


class AssignReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    outreach_id: str = Field(max_length=64, description="one of the reply's candidates")
