"""The notifications service's own tables."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.daily import job_runs_table
from runtime.db import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Message(Base):
    """One message to one family, from queued to sent or failed. The idempotency key (the
    outreach id, or batch id and family id for bulk) makes a redelivered request the same
    message, never a second one."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    district_id: Mapped[str] = mapped_column(String(64))
    school_id: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    outreach_id: Mapped[str] = mapped_column(String(64))
    referral_id: Mapped[str | None] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True)  # announcement, event
    correlation_id: Mapped[str] = mapped_column(String(64))
    causation_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(16))
    channels: Mapped[list[str]]  # remaining channels, preferred first
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    family_name: Mapped[str] = mapped_column(String(200))
    variables: Mapped[dict[str, Any]]
    # Random, unguessable: authenticates the unsubscribe link and the email reply address.
    token: Mapped[str] = mapped_column(String(64))
    # lifecycle.MessageStatus: queued | sending | sent | delivered | failed
    status: Mapped[str] = mapped_column(String(16))
    # The channel that sent it, or the last one that failed for good.
    channel: Mapped[str | None] = mapped_column(String(8))
    used_language: Mapped[str | None] = mapped_column(String(16))
    fell_back: Mapped[bool] = mapped_column(Boolean, default=False)
    segments: Mapped[int | None] = mapped_column(Integer)  # SMS parts billed
    encoding: Mapped[str | None] = mapped_column(String(8))  # GSM-7 | UCS-2
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    held_reason: Mapped[str | None] = mapped_column(String(32))  # quiet_hours | daily_cap
    provider_id: Mapped[str | None] = mapped_column(String(128), index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    delivered_at: Mapped[datetime | None]
    # The W3C trace context of the work that asked for it (runtime/tracing.py): the send, and
    # every report or reply about the message, continue that trace. Empty when tracing is off.
    traceparent: Mapped[str | None] = mapped_column(String(64))
    tracestate: Mapped[str | None] = mapped_column(String(512))

    def trace(self) -> dict[str, str]:
        """The stored trace context, as ``runtime.tracing.continued`` reads it."""
        return {k: v for k, v in (("traceparent", self.traceparent),
                                  ("tracestate", self.tracestate)) if v}


class OptOut(Base):
    """An address that must not be messaged on a channel (STOP, unsubscribe link, Twilio
    21610). Checked before every send, so an opt-out holds at once, even for families this
    service has not yet heard about."""

    __tablename__ = "opt_outs"

    channel: Mapped[str] = mapped_column(String(8), primary_key=True)
    address: Mapped[str] = mapped_column(String(254), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64))
    opted_out: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime]


class EarlyStatus(Base):
    """A provider's status for a message not yet recorded as sent: the provider may call back
    before the dispatcher commits the batch it sent. Applied when the send is recorded."""

    __tablename__ = "early_statuses"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    received_at: Mapped[datetime] = mapped_column(index=True)


class InboundSeen(Base):
    """Provider webhook ids already handled: Twilio retries a webhook it got no 200 for."""

    __tablename__ = "inbound_seen"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)


class ErasedFamily(Base):
    """A family a district admin erased (ids only): an outreach request for it that was already
    on its way when the erasure came is dropped, not queued with the details it carries."""

    __tablename__ = "erased_families"

    district_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime]


JOB_RUNS = job_runs_table(Base.metadata)  # the daily retention job's claim (runtime/daily.py)
