"""A dispatcher round's claim and its record, in one set of Core statements each: the claim
reads the due messages and leases them (a SELECT and one UPDATE ... WHERE id IN), the record
writes every outcome of the round back (one executemany). Loading and flushing ORM objects
was most of a round's database CPU: a fan-out claims 500 messages a round."""

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.lifecycle import PENDING, Claimed, MessageStatus, decide
from services.notifications.tables import Message

MESSAGES = Message.__table__


@dataclass(slots=True)
class Due:
    """A claimed message, as a round reads and changes it (the columns of ``messages`` it
    uses, by the same names)."""

    id: str
    token: str
    district_id: str
    school_id: str
    family_id: str
    outreach_id: str
    referral_id: str | None
    batch_id: str | None
    correlation_id: str
    causation_id: str | None
    kind: str
    urgency: str
    language: str
    channels: list[str]
    email: str | None
    phone: str | None
    family_name: str
    variables: dict[str, Any]
    status: str
    channel: str | None
    used_language: str | None
    fell_back: bool
    segments: int | None
    encoding: str | None
    attempts: int
    next_attempt_at: datetime
    held_reason: str | None
    provider_id: str | None
    last_error: str | None
    sent_at: datetime | None
    traceparent: str | None
    tracestate: str | None

    def trace(self) -> dict[str, str]:
        """The stored trace context, as ``runtime.tracing.continued`` reads it."""
        return {k: v for k, v in (("traceparent", self.traceparent),
                                  ("tracestate", self.tracestate)) if v}


READ = [MESSAGES.c[f.name] for f in fields(Due)]
# What a round may change; written back for every message it records.
WRITTEN = ("status", "channels", "channel", "used_language", "fell_back", "provider_id",
           "segments", "encoding", "held_reason", "attempts", "sent_at", "next_attempt_at",
           "last_error")
_CLAIM_READ = (select(*READ)
               .where(MESSAGES.c.status.in_(sorted(PENDING)),
                      MESSAGES.c.next_attempt_at <= bindparam("now"))  # 'sending': lease ran out
               .order_by(MESSAGES.c.next_attempt_at)
               .limit(bindparam("limit"))
               .with_for_update(skip_locked=True))  # PostgreSQL; SQLite: BEGIN IMMEDIATE
_LIVE = (select(MESSAGES.c.id, MESSAGES.c.status)
         .where(MESSAGES.c.id.in_(bindparam("ids", expanding=True))).with_for_update())
# The SET clause is the parameters' other keys (WRITTEN).
_RECORD = update(MESSAGES).where(MESSAGES.c.id == bindparam("_id"))


async def claim(session: AsyncSession, now: datetime, until: datetime, limit: int) -> list[Due]:
    """Up to ``limit`` due messages, oldest first, leased to this round until ``until``: a
    second dispatcher skips them (row locks on PostgreSQL, the write lock on SQLite) and takes
    them only when the lease runs out."""
    rows = (await session.execute(_CLAIM_READ, {"now": now, "limit": limit})).all()
    dues = [Due(*row) for row in rows]
    for due in dues:
        due.status = decide(MessageStatus(due.status), Claimed())  # 'sending', as below
        due.next_attempt_at = until
    if dues:
        await session.execute(
            update(MESSAGES).where(MESSAGES.c.id.in_([d.id for d in dues]))
            .values(status=MessageStatus.sending.value, next_attempt_at=until))
    return dues


async def still_sending(session: AsyncSession, ids: list[str]) -> set[str]:
    """Which of a round's messages nothing moved on since the claim (a report, an erasure),
    locked until the round's record commits."""
    rows = (await session.execute(_LIVE, {"ids": ids})).all()
    return {id_ for id_, status in rows if status == MessageStatus.sending}


async def record(session: AsyncSession, dues: list[Due]) -> None:
    """Every changed message of the round, in one executemany."""
    if dues:
        await session.execute(_RECORD, [
            {"_id": d.id, **{name: getattr(d, name) for name in WRITTEN}} for d in dues])
