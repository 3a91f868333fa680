"""The partners service's own tables."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.db import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON,
                           list[int]: JSON}


class Partner(Base):
    """An organization in the directory."""

    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    languages: Mapped[list[str]]
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]


class PartnerService(Base):
    """One service an organization offers for one need, at some schools, with open slots."""

    __tablename__ = "partner_services"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    need: Mapped[str] = mapped_column(String(32), index=True)
    schools: Mapped[list[str]]
    grades: Mapped[list[int]]  # empty: every grade
    capacity: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer, default=0)


class ReferralRequest(Base):
    """What partners knows of a referral it must match: ids and categories only."""

    __tablename__ = "referral_requests"

    referral_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64))
    need: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[str] = mapped_column(String(16))
    grade: Mapped[int | None] = mapped_column(Integer)
    consent: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(24))  # awaiting_consent|matched|no_partner|ended
    service_id: Mapped[str | None] = mapped_column(String(64))
    partner_id: Mapped[str | None] = mapped_column(String(64))
    tried_partners: Mapped[list[str]]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class FamilyLanguage(Base):
    __tablename__ = "family_languages"

    district_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    language: Mapped[str] = mapped_column(String(16))
