"""The referrals service's own tables."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.daily import job_runs_table
from runtime.db import UTCDateTime
from runtime.uow import SEQ


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


JOB_RUNS = job_runs_table(Base.metadata)  # the daily retention job's claim (runtime/daily.py)


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = (
        UniqueConstraint("district_id", "idempotency_key", name="uq_referral_idempotency"),
        Index("ix_referrals_open_need", "district_id", "student_ref", "need", "status"),
        Index("ix_referrals_school_status", "district_id", "school_id", "status"),
        Index("ix_referrals_follow_up_due", "follow_up_due_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str] = mapped_column(String(64))
    student_ref: Mapped[str] = mapped_column(String(128))
    family_id: Mapped[str] = mapped_column(String(64))
    need: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[str] = mapped_column(String(16))
    consent: Mapped[str] = mapped_column(String(16))
    grade: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24))
    partner_id: Mapped[str | None] = mapped_column(String(64))
    service_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(2000))  # stays in this service
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    opened_by: Mapped[str] = mapped_column(String(128))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    family_contacted_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    # lifecycle details the status alone does not say (see lifecycle.State)
    match_attempt: Mapped[int] = mapped_column(Integer, default=0)
    accepted_at: Mapped[datetime | None]
    in_service_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(String(64))
    consent_recorded_by: Mapped[str | None] = mapped_column(String(128))
    consent_recorded_at: Mapped[datetime | None]
    first_contacted_at: Mapped[datetime | None]  # for time-to-contact, kept across rematches
    # Follow-up timer: the next firing is due at follow_up_due_at (None: nothing pending).
    # stage 0: FollowUpDue pending; 1: FollowUpDue fired, escalation pending; 2: escalated.
    follow_up_due_at: Mapped[datetime | None]
    follow_up_stage: Mapped[int] = mapped_column(Integer, default=0)
    follow_up_reason: Mapped[str | None] = mapped_column(String(32))
    follow_up_since: Mapped[datetime | None]  # when the referral first became due
    last_progress_at: Mapped[datetime | None]


class TimelineEntry(Base):
    """Every event applied to a referral, in order: the referral's history."""

    __tablename__ = "referral_timeline"

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    status_after: Mapped[str] = mapped_column(String(24))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class KnownFamily(Base):
    """Families engagement has registered (ids only), so a referral names a real family."""

    __tablename__ = "known_families"

    district_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    school_id: Mapped[str] = mapped_column(String(64))


class ReferralNote(Base):
    """Free text about a referral. Stays here: never in an event, a log line or a metric."""

    __tablename__ = "referral_notes"

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime]
    author: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(String(4000))
