"""The engagement service's own tables: the only place family contact details are kept."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.daily import job_runs_table
from runtime.db import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


JOB_RUNS = job_runs_table(Base.metadata)  # the daily retention job's claim (runtime/daily.py)


class Family(Base):
    __tablename__ = "families"
    # A text's phone finds its families (replies, reply codes) without reading the district's.
    __table_args__ = (Index("ix_families_district_phone", "district_id", "phone"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    school_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    preferred_language: Mapped[str] = mapped_column(String(16))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    email: Mapped[str | None] = mapped_column(String(254))
    preferred_channel: Mapped[str] = mapped_column(String(8))
    sms_consent: Mapped[bool] = mapped_column(Boolean)
    email_consent: Mapped[bool] = mapped_column(Boolean)
    sms_opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    email_opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    # Set when a district admin erased the family (name, phone and email blanked): who did it
    # and when stay, for the audit of the erasure.
    erased_at: Mapped[datetime | None]
    erased_by: Mapped[str | None] = mapped_column(String(128))
    # Set when the district's roster no longer has the family (services/engagement/roster.py).
    retired_at: Mapped[datetime | None]


class Student(Base):
    """A student linked to a family by the district's pseudonymous reference, never a name."""

    __tablename__ = "students"

    district_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    student_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    school_id: Mapped[str] = mapped_column(String(64), index=True)
    grade: Mapped[int | None] = mapped_column(Integer)  # -1 pre-K, 0 kindergarten


class RosterRecord(Base):
    """A person of the district's SIS roster as last imported: the family or student Ensemble
    made of them, and a fingerprint of what was loaded, so a re-import writes (and publishes)
    only what changed. The SIS id stays here: events carry the family id or the student_ref."""

    __tablename__ = "roster_records"

    district_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # guardian | student
    source_id: Mapped[str] = mapped_column(String(128), primary_key=True)  # OneRoster sourcedId
    target_id: Mapped[str] = mapped_column(String(64))  # the family id, or the student_ref
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active | retired
    updated_at: Mapped[datetime]


class Outreach(Base):
    """One effort to reach a family about a referral: one or more attempts until the family
    answers (contacted) or the attempts run out (unreachable)."""

    __tablename__ = "outreach"
    __table_args__ = (Index("ix_outreach_due", "status", "next_check_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    referral_id: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    # lifecycle.OutreachStatus: requested | awaiting_reply | contacted | unreachable
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # messages asked for, calls logged
    urgency: Mapped[str] = mapped_column(String(16), default="routine")
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Unique among the open outreach at the family's phone when first requested: a text that
    # starts with it answers this outreach when several are open on one phone.
    reply_code: Mapped[str | None] = mapped_column(String(2))
    next_check_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # The referral's chain (the PartnerMatched's correlation id): every event about this
    # outreach carries it, whatever starts the work (a timer, a reply, a coordinator's call).
    # Last, where migration 0005 added it.
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    # The W3C trace context of the match that started it: a retry after no answer continues
    # the referral's trace (runtime/tracing.py). Empty when tracing is off.
    traceparent: Mapped[str | None] = mapped_column(String(64))
    tracestate: Mapped[str | None] = mapped_column(String(512))

    def trace(self) -> dict[str, str]:
        return {k: v for k, v in (("traceparent", self.traceparent),
                                  ("tracestate", self.tracestate)) if v}


class UnassignedReply(Base):
    """A text that could answer several open outreach at one phone and named none of them:
    kept for a coordinator to assign (never guessed). The id is the FamilyReplied event's."""

    __tablename__ = "unassigned_replies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    school_id: Mapped[str] = mapped_column(String(64), index=True)  # the newest candidate's
    channel: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)  # stays in this service
    received_at: Mapped[datetime]
    candidates: Mapped[list[str]]  # the outreach ids it could answer, newest first
    status: Mapped[str] = mapped_column(String(16), index=True)  # held | assigned
    outreach_id: Mapped[str | None] = mapped_column(String(64))  # once assigned
    assigned_by: Mapped[str | None] = mapped_column(String(128))
    assigned_at: Mapped[datetime | None]


class ContactLogEntry(Base):
    __tablename__ = "contact_log"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    referral_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(String(500))  # stays in this service


class FamilyEvent(Base):
    """A workshop or event a school holds for families."""

    __tablename__ = "family_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    school_id: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime]
    place: Mapped[str] = mapped_column(String(200))
    languages: Mapped[list[str]]
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class Invitation(Base):
    __tablename__ = "invitations"
    __table_args__ = (UniqueConstraint("event_id", "family_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    token: Mapped[str] = mapped_column(String(64))  # authenticates the RSVP link
    reachable: Mapped[bool] = mapped_column(Boolean)
    response: Mapped[str | None] = mapped_column(String(8))  # yes | no
    responded_via: Mapped[str | None] = mapped_column(String(8))  # sms | email | link
    responded_at: Mapped[datetime | None]
    attended: Mapped[bool] = mapped_column(Boolean, default=False)
    invited_at: Mapped[datetime]


class Announcement(Base):
    """A message to every family of a school or district, fanned out in the background in
    chunks; ``cursor`` (the last family id handled) lets a restart carry on."""

    __tablename__ = "announcements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    school_id: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    urgency: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)  # fanning_out | queued
    cursor: Mapped[str] = mapped_column(String(64), default="")
    families_targeted: Mapped[int] = mapped_column(Integer, default=0)
    families_unreachable: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
