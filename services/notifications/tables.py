"""The notifications service's own tables."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.db import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Message(Base):
    """One message to one family, from queued to sent or failed. The idempotency key (the
    outreach id) makes a redelivered request the same message, never a second one."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    outreach_id: Mapped[str] = mapped_column(String(64))
    referral_id: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str] = mapped_column(String(64))
    causation_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(16))
    channels: Mapped[list[str]]  # remaining channels, preferred first
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(20))
    family_name: Mapped[str] = mapped_column(String(200))
    variables: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # queued|sending|sent|failed
    channel: Mapped[str | None] = mapped_column(String(8))  # the channel that sent it
    used_language: Mapped[str | None] = mapped_column(String(16))
    fell_back: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    provider_id: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
