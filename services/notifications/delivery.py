"""What a provider reports about a message it took: delivered, or failed (then the family's
other channel is tried, or NotificationFailed). Reports may come before the dispatcher has
recorded the send; both sides lock the provider id first."""

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import Event, NotificationDelivered, NotificationFailed
from contracts.taxonomy import Channel
from runtime import tracing
from runtime.db import advisory_locks
from runtime.uow import UnitOfWork
from services.notifications.claims import Due
from services.notifications.lifecycle import (
    Delivered,
    Fact,
    MessageStatus,
    NotDelivered,
    Unchanged,
    decide,
)
from services.notifications.opt_outs import record_opt_out
from services.notifications.tables import Message
from services.notifications.twilio import KNOWN_ERRORS, TWILIO_UNSUBSCRIBED


async def lock_provider_ids(session: AsyncSession, sids: list[str]) -> None:
    """Serialise the recording of sends with early delivery reports for the same ids, so that
    neither misses the other's rows on PostgreSQL."""
    await advisory_locks(session, sids)


def move(message: Message | Due, fact: Fact) -> bool:
    """``fact`` applied to the message through its lifecycle (``lifecycle.decide``); False
    when it came too late to change anything."""
    try:
        message.status = decide(MessageStatus(message.status), fact)
    except Unchanged:
        return False
    return True


def emit_about(uow: UnitOfWork, message: Message | Due, event: Event) -> None:
    """An event about what became of a message (a report, a reply, an opt-out or opt-in): it
    keeps the chain of the message's referral (the correlation id the message row kept, the
    OutreachRequested as its cause) and its trace (linked to the request that told us)."""
    with tracing.continued(f"record {type(event).__name__}", message.trace()):
        uow.emit(event, district=message.district_id, school=message.school_id,
                 correlation=message.correlation_id, causation=message.causation_id)


async def apply_status(uow: UnitOfWork, wake: Callable[[], None], message: Message, status: str,
                       error_code: str | None, now: datetime) -> str:
    if status == "delivered":
        if move(message, Delivered()):
            message.delivered_at = now
            if message.batch_id is None:
                emit_about(uow, message, NotificationDelivered(
                    notification_id=message.id, outreach_id=message.outreach_id,
                    family_id=message.family_id, referral_id=message.referral_id,
                    channel=Channel.sms, delivered_at=now))
        return "delivered"
    code = int(error_code) if error_code and error_code.isdigit() else None
    if code == TWILIO_UNSUBSCRIBED and message.phone:
        await record_opt_out(uow, message.district_id, Channel.sms, message.phone, [message], now)
    remaining = [c for c in message.channels if c != Channel.sms.value]
    if not move(message, NotDelivered(other_channel=bool(remaining))):
        return "ignored"  # reported before (failed, then undelivered), or it moved on
    reason = (f"twilio error {code}: {KNOWN_ERRORS.get(code, 'not delivered')}" if code
              else f"twilio status {status}")
    message.last_error = reason
    if remaining:  # the handset never got it: try the family's other channel
        message.channels = remaining
        message.next_attempt_at = now
        uow.after_commit.append(wake)
        return "failed_fallback"
    emit_about(uow, message, NotificationFailed(
        notification_id=message.id, outreach_id=message.outreach_id, family_id=message.family_id,
        referral_id=message.referral_id, channel=Channel.sms, reason=reason[:200],
        permanent=True))
    return "failed"
