"""The insights store: one row per public event it keeps (keyed by the event's id), so the
handlers never update a shared row and the store is the same whatever order the streams are
replayed in. Every row has a district_id (tenancy) and the school of its envelope, if any.

Nothing here is personal: ids, categories, states and times, as the public events carry them.
"""

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.db import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class ReferralFact(Base):
    """ReferralOpened: a referral, its school and need."""

    __tablename__ = "insights_referrals"
    __table_args__ = (Index("ix_insights_referrals_school", "district_id", "school_id"),)

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str] = mapped_column(String(64))
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    need: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime]


class StepFact(Base):
    """What happened to a referral after it opened: matched, accepted, declined, in_service,
    contacted, unreachable, no_partner, closed, cancelled (one row per event)."""

    __tablename__ = "insights_steps"
    __table_args__ = (Index("ix_insights_steps_school", "district_id", "school_id"),)

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str | None] = mapped_column(String(64))
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    partner_id: Mapped[str | None] = mapped_column(String(64))
    partner_name: Mapped[str | None] = mapped_column(String(200))  # an organization's name
    service_id: Mapped[str | None] = mapped_column(String(64))
    need: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32))


class CapacityFact(Base):
    """CapacityChanged: a service's slots at a school; the latest per service and school
    counts."""

    __tablename__ = "insights_capacity"
    __table_args__ = (Index("ix_insights_capacity_school", "district_id", "school_id"),)

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str | None] = mapped_column(String(64))
    partner_id: Mapped[str] = mapped_column(String(64))
    service_id: Mapped[str] = mapped_column(String(64))
    # As the event carries them: the contract bounds neither, so no 32-bit column.
    capacity: Mapped[int] = mapped_column(BigInteger)
    reserved: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime]


class FamilyFact(Base):
    """FamilyRegistered: a family's school and language (no name, no address)."""

    __tablename__ = "insights_families"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    school_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    language: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(8))
    at: Mapped[datetime]


class FamilyEventFact(Base):
    """FamilyEventScheduled: a workshop or event for families, with its public title."""

    __tablename__ = "insights_family_events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    school_id: Mapped[str] = mapped_column(String(64))
    family_event_id: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime]
    at: Mapped[datetime]


class ResponseFact(Base):
    """FamilyRsvped (rsvp_yes / rsvp_no) and FamilyAttended (attended)."""

    __tablename__ = "insights_responses"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    school_id: Mapped[str | None] = mapped_column(String(64))
    family_event_id: Mapped[str] = mapped_column(String(64), index=True)
    family_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]


class MessageFact(Base):
    """NotificationSent / NotificationFailed / NotificationDelivered, and the opt-outs and
    opt-ins (kind opted_out / opted_in, notification_id empty)."""

    __tablename__ = "insights_messages"
    __table_args__ = (Index("ix_insights_messages_school", "district_id", "school_id"),)

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str | None] = mapped_column(String(64))
    notification_id: Mapped[str | None] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(8))
    language: Mapped[str | None] = mapped_column(String(16))
    permanent: Mapped[bool | None] = mapped_column(Boolean)
    at: Mapped[datetime]


class DigestClaim(Base):
    """One row per school and week: the copy that inserts it sends that week's staff digest
    (its event goes out through the outbox in the same transaction). Not rebuilt from the
    streams: a rebuild keeps it, so no digest goes out twice."""

    __tablename__ = "insights_digests"

    district_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    school_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    week: Mapped[str] = mapped_column(String(10), primary_key=True)  # ISO week, 2026-W49
    claimed_at: Mapped[datetime]
    recipients: Mapped[int] = mapped_column(Integer)


FACTS = (ReferralFact, StepFact, CapacityFact, FamilyFact, FamilyEventFact, ResponseFact,
         MessageFact)
