"""The engagement service's own tables: the only place family contact details are kept."""

from datetime import datetime

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.db import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class Family(Base):
    __tablename__ = "families"

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


class Outreach(Base):
    """One effort to reach a family about a referral (or an invitation)."""

    __tablename__ = "outreach"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    referral_id: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # requested|sent|contacted|unreachable
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


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
