"""The referrals HTTP API's request and response models (the routes are in api.py, the audit
trail's in audit.py)."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.taxonomy import Consent, Need, Outcome, Urgency
from services.referrals.follow_up import DUE_FIRED, ESCALATED
from services.referrals.lifecycle import OPEN, Status
from services.referrals.tables import Referral

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ReasonCode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$",
                                  description="a reason code such as no_capacity, not free text")]
# Who did it, as an id (a staff or partner user id), never a name: it can reach public events.
Actor = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class OpenReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    school_id: Token
    student_ref: Annotated[str, Field(min_length=1, max_length=128,
                                      description="pseudonymous student reference")]
    family_id: Token
    need: Need
    urgency: Urgency = Urgency.routine
    consent: Consent = Consent.pending
    grade: int | None = Field(default=None, ge=-1, le=12)
    note: str | None = Field(default=None, max_length=2000,
                             description="free text kept in referrals, never sent in an event")
    opened_by: Actor = "coordinator"


class CloseReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    outcome: Outcome
    closed_by: Actor = "coordinator"


class PartnerAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    partner_id: Token


class DeclineReferral(PartnerAnswer):
    reason: ReasonCode


class MarkInService(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    partner_id: Token | None = Field(default=None, description="the partner, when it reports")
    by: Actor = "partner"


class CancelReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    reason: ReasonCode
    cancelled_by: Actor = "coordinator"


class RecordConsent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    consent: Consent
    recorded_by: Actor


class AddNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    text: str = Field(min_length=1, max_length=4000)
    author: Actor = "coordinator"


class ReferralView(BaseModel):
    id: str
    district_id: str
    school_id: str
    student_ref: str
    family_id: str
    need: str
    urgency: str
    consent: str
    consent_recorded_by: str | None
    consent_recorded_at: datetime | None
    grade: int | None
    status: str
    partner_id: str | None
    match_attempt: int
    outcome: str | None
    cancel_reason: str | None
    opened_at: datetime
    updated_at: datetime
    accepted_at: datetime | None
    family_contacted_at: datetime | None
    in_service_at: datetime | None
    closed_at: datetime | None
    follow_up_due_at: datetime | None
    follow_up: str | None = Field(
        description="scheduled | due | overdue (FollowUpDue sent) | escalated; null when ended")
    follow_up_reason: str | None
    duplicate_of_open: bool = False

    @classmethod
    def of(cls, referral: Referral, now: datetime, duplicate: bool = False) -> "ReferralView":
        return cls(**cls.values(referral, now, duplicate))

    @staticmethod
    def values(referral: Referral, now: datetime, duplicate: bool = False) -> dict[str, Any]:
        """The view's fields, for a model that extends it (ReferralDetail) without building
        this one and dumping it again."""
        return {**{k: getattr(referral, k) for k in _STORED},
                "follow_up": follow_up_state(referral, now), "duplicate_of_open": duplicate}


_STORED = tuple(k for k in ReferralView.model_fields if k not in {"follow_up",
                                                                  "duplicate_of_open"})


def follow_up_state(referral: Referral, now: datetime) -> str | None:
    if Status(referral.status) not in OPEN:
        return None
    if referral.follow_up_stage == ESCALATED:
        return "escalated"
    if referral.follow_up_stage == DUE_FIRED:
        return "overdue"
    due = referral.follow_up_due_at
    return "due" if due is not None and due <= now else "scheduled"


class TimelineView(BaseModel):
    at: datetime
    event: str
    actor: str
    status_after: str
    data: dict[str, Any]


class NoteView(BaseModel):
    at: datetime
    author: str
    text: str


class ReferralDetail(ReferralView):
    note: str | None
    notes: list[NoteView]
    timeline: list[TimelineView]


class SchoolFollowUps(BaseModel):
    school_id: str
    school_name: str | None
    referrals: list[ReferralView]


class FollowUpList(BaseModel):
    district_id: str
    as_of: datetime
    total: int
    schools: list[SchoolFollowUps]


class Counts(BaseModel):
    district_id: str
    school_id: str | None
    total: int
    open: int
    by_status: dict[str, int]
    by_need: dict[str, int]
    by_need_and_status: dict[str, dict[str, int]]


class AuditView(BaseModel):
    at: datetime
    actor: str
    role: str
    action: str


class CostReviewItem(BaseModel):
    """One referral on a school's COST review list (ids and categories: no names)."""

    referral_id: str
    student_ref: str
    family_id: str
    need: str
    urgency: str
    status: str
    consent: str
    opened_at: datetime
    partner_id: str | None = Field(description=(
        "the support holding it now (a partner or the school's in-school support); null "
        "while it waits for one"))
    match_attempt: int
    declines: int = Field(description="partners that declined it so far")
    follow_up: str | None
    follow_up_reason: str | None
    opened_this_week: bool
    stuck: list[str] = Field(description=(
        "why the team should look at it: no_partner, declined_twice, family_unreachable, "
        "overdue; empty when it is on the list only as opened this week"))


class CostReview(BaseModel):
    """A school's Coordination of Services Team list for its weekly meeting."""

    district_id: str
    school_id: str
    school_name: str
    as_of: datetime
    week_start: datetime = Field(description="Monday 00:00 at the school, in UTC")
    opened_this_week: int
    stuck: int
    referrals: list[CostReviewItem]
