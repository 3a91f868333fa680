"""Opt-outs: an address a family asked us to stop using (STOP, an unsubscribe link, the
provider's own list), kept per channel and address, and told to engagement as events."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from contracts.events import FamilyOptedOut
from contracts.taxonomy import Channel
from runtime import tracing
from runtime.uow import UnitOfWork
from services.notifications.claims import Due
from services.notifications.metrics import OPT_OUTS
from services.notifications.tables import Message, OptOut

# Confirmations of an opt-out or opt-in: sent whatever the address's state, never counted as
# the family's latest message.
TRANSACTIONAL = frozenset({"opt_out_confirmation", "opt_in_confirmation"})


async def set_opt_out(uow: UnitOfWork, district_id: str, channel: Channel, address: str,
                      opted_out: bool, now: datetime) -> bool:
    """Record the address's state; True when it changed (so a confirmation goes once)."""
    row = await uow.session.get(OptOut, (channel.value, address), with_for_update=True)
    if row is None:
        if not opted_out:
            return False
        uow.session.add(OptOut(channel=channel.value, address=address, district_id=district_id,
                               opted_out=True, changed_at=now))
        return True
    if row.opted_out == opted_out:
        return False
    row.opted_out = opted_out
    row.changed_at = now
    return True


async def families_at(uow: UnitOfWork, channel: Channel, address: str) -> list[Message]:
    """The latest message of each family reached at this address (several families may share a
    phone)."""
    column = Message.email if channel == Channel.email else Message.phone
    rows = (await uow.session.scalars(
        select(Message).where(column == address, Message.kind.not_in(TRANSACTIONAL))
        .order_by(Message.created_at.desc()).limit(200)
    )).all()
    latest: dict[str, Message] = {}
    for row in rows:
        latest.setdefault(row.family_id, row)
    return list(latest.values())


async def record_opt_out(uow: UnitOfWork, district_id: str, channel: Channel, address: str,
                         messages: Sequence[Message | Due], now: datetime) -> bool:
    changed = await set_opt_out(uow, district_id, channel, address, True, now)
    if changed:
        OPT_OUTS.labels(channel.value).inc()
        for family_id, message in {m.family_id: m for m in messages}.items():
            # The chain of the family's latest message (its referral's, when it has one).
            with tracing.continued("record FamilyOptedOut", message.trace()):
                uow.emit(FamilyOptedOut(family_id=family_id, channel=channel, at=now),
                         district=message.district_id, school=message.school_id,
                         correlation=message.correlation_id, causation=message.causation_id)
    return changed
