"""The partners service's own tables.

The directory follows Open Referral HSDS 3.0: an organization (``Partner``) offers services
(``PartnerService``), each mapped to one Need. HSDS detail that matching does not read (locations,
service areas, schedules, cost options, contacts, phones, taxonomy terms) is kept as HSDS-shaped
JSON on the service so an export gives back what an import brought in.

Capacity is per service *and school* (``ServiceCapacity``): the rows matching reads and reserves.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false

from runtime.db import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON,
                           list[int]: JSON, list[dict[str, Any]]: JSON}


class Partner(Base):
    """An organization in the directory (HSDS ``organization``)."""

    __tablename__ = "partners"
    __table_args__ = (Index("ix_partners_district_hsds", "district_id", "hsds_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    languages: Mapped[list[str]]
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]
    hsds_id: Mapped[str | None] = mapped_column(String(128))  # the source directory's own id
    alternate_name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(200))
    website: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(16), default="api")  # api | hsds
    # An in-school support (the school's own counselor, psychologist, nurse, social worker:
    # its Coordination of Services Team): the one school whose staff it is, which it alone
    # serves. None for a community partner.
    in_school_of: Mapped[str | None] = mapped_column(String(64))


class PartnerService(Base):
    """One service an organization offers for one need (HSDS ``service``)."""

    __tablename__ = "partner_services"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    need: Mapped[str] = mapped_column(String(32), index=True)
    schools: Mapped[list[str]]  # kept in step with the ServiceCapacity rows
    grades: Mapped[list[int]]  # empty: every grade (or the ages decide)
    name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24), default="active")  # HSDS service.status
    min_age: Mapped[int | None] = mapped_column(Integer)
    max_age: Mapped[int | None] = mapped_column(Integer)
    service_languages: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: partner's
    # Flat keys the candidate query filters on without JSON functions (same on both backends):
    # ",en,es," the languages spoken; ",0,1,2," the grades served, "" for every grade.
    languages_key: Mapped[str] = mapped_column(String(200), default="")
    grades_key: Mapped[str] = mapped_column(String(64), default="")
    hsds_id: Mapped[str | None] = mapped_column(String(128))
    hsds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # HSDS detail, as imported


class ServiceCapacity(Base):
    """Open slots of one service at one school. ``reserved`` never exceeds ``capacity`` and never
    goes below zero: the database enforces it and the conditional UPDATEs respect it."""

    __tablename__ = "service_capacity"
    __table_args__ = (
        CheckConstraint("reserved >= 0", name="ck_capacity_reserved_nonnegative"),
        CheckConstraint("reserved <= capacity", name="ck_capacity_reserved_within"),
        # The candidate query: one district, one need, one school. It covers every column the
        # query reads from this table, so the range is read from the index alone.
        Index("ix_capacity_match", "district_id", "need", "school_id", "service_status",
              "partner_status", "reserved", "capacity", "partner_id", "languages_key",
              "grades_key", "service_id", "in_school"),
    )

    service_id: Mapped[str] = mapped_column(ForeignKey("partner_services.id"), primary_key=True)
    school_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    # Copied from the service and its organization (directory.copy_service keeps them in step)
    # so the candidate query ranks from this table and the partner's stats alone.
    need: Mapped[str] = mapped_column(String(32))
    partner_id: Mapped[str] = mapped_column(String(64))
    service_status: Mapped[str] = mapped_column(String(24), default="active")
    partner_status: Mapped[str] = mapped_column(String(16), default="active")
    languages_key: Mapped[str] = mapped_column(String(200), default="")
    grades_key: Mapped[str] = mapped_column(String(64), default="")
    capacity: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    # The organization is this school's own staff support (Partner.in_school_of == school_id).
    in_school: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class PartnerStats(Base):
    """What partners has learnt about a partner's answers, for ranking."""

    __tablename__ = "partner_stats"

    partner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    matched: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    declined: Mapped[int] = mapped_column(Integer, default=0)
    accept_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # total, over `accepted`
    active: Mapped[int] = mapped_column(Integer, default=0)  # referrals it holds now


class ReferralRequest(Base):
    """What partners knows of a referral it must match: ids and categories only."""

    __tablename__ = "referral_requests"
    __table_args__ = (Index("ix_requests_report", "district_id", "opened_at"),)

    referral_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64))
    need: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[str] = mapped_column(String(16))
    grade: Mapped[int | None] = mapped_column(Integer)
    consent: Mapped[str] = mapped_column(String(16))
    # awaiting_consent | matched | no_partner | consent_declined | ended
    state: Mapped[str] = mapped_column(String(24))
    service_id: Mapped[str | None] = mapped_column(String(64))
    partner_id: Mapped[str | None] = mapped_column(String(64))
    tried_partners: Mapped[list[str]]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # For ranking and the gap map
    matched_at: Mapped[datetime | None]
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    ever_matched: Mapped[bool] = mapped_column(Boolean, default=False)
    last_result: Mapped[str | None] = mapped_column(String(16))  # matched | no_partner
    declines: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(32))
    closed_at: Mapped[datetime | None]


class FamilyLanguage(Base):
    __tablename__ = "family_languages"

    district_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    language: Mapped[str] = mapped_column(String(16))


class PartnerLink(Base):
    """A link emailed to a matched partner's contact: to that referral in the partner's view,
    for one answer (accept, decline, in service), until it expires or the match ends."""

    __tablename__ = "partner_links"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the token's jti
    district_id: Mapped[str] = mapped_column(String(64))
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    partner_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)  # the match it was sent for
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_for: Mapped[str | None] = mapped_column(String(16))  # accept | decline | in_service
