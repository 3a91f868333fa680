"""Erasing a family's messages (FamilyErased, from engagement) and the daily retention of
messages.

A message keeps its ids, kind, channel, status and times (for counts and the delivery
reports that may still come); its address, the family's name, the template variables and the
provider's error text (which may quote the address) are blanked. A message still waiting to be
sent is given up, and the family's replies already published (the outbox keeps them a while)
lose their text and number. An opt-out at an address only this family was written at goes
too: nothing is sent there any more, and an opt-out is the address itself."""

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from contracts.envelope import Envelope
from contracts.events import FamilyErased, FamilyReplied
from contracts.taxonomy import Channel
from runtime.districts import Districts
from runtime.erasure import erasure_barrier, scrub_sent
from runtime.uow import UnitOfWork, messaging_tables
from services.notifications import lifecycle
from services.notifications.delivery import move
from services.notifications.deps import NotificationsDeps
from services.notifications.tables import Base, ErasedFamily, Message, OptOut

FINISHED = ("sent", "delivered", "failed")
GIVEN_UP = "family erased"  # the last_error of a message erased before it was sent


async def on_family_erased(uow: UnitOfWork, env: Envelope, ev: FamilyErased,
                           deps: NotificationsDeps) -> None:
    await erasure_barrier(uow, exclusive=True)  # requests for the family commit first, or wait
    if await uow.session.get(ErasedFamily, (env.districtid, ev.family_id)) is None:
        uow.session.add(ErasedFamily(district_id=env.districtid, family_id=ev.family_id,
                                     erased_at=ev.erased_at))
    messages = (await uow.session.scalars(select(Message).where(
        Message.district_id == env.districtid, Message.family_id == ev.family_id)
        .with_for_update())).all()
    addresses = {(Channel.sms.value, m.phone) for m in messages if m.phone} | {
        (Channel.email.value, m.email) for m in messages if m.email}
    for message in messages:
        message.phone = message.email = None
        message.family_name, message.variables = "", {}
        if message.last_error != GIVEN_UP:
            message.last_error = None
        if move(message, lifecycle.FamilyErased()):  # not yet sent: it never goes
            message.held_reason, message.last_error = None, GIVEN_UP
    await scrub_sent(uow, messaging_tables(Base.metadata).outbox, [FamilyReplied.ce_type()],
                     lambda data: data | {"text": "", "phone": None}
                     if data.get("family_id") == ev.family_id else None)
    for channel, address in sorted(addresses):
        column = Message.phone if channel == Channel.sms.value else Message.email
        shared = await uow.session.scalar(select(Message.id).where(
            column == address, Message.family_id != ev.family_id).limit(1))
        if shared is None:  # another family's opt-out too: it stays
            await uow.session.execute(delete(OptOut).where(
                OptOut.channel == channel, OptOut.address == address))


async def is_erased(uow: UnitOfWork, district_id: str, family_id: str) -> bool:
    return await uow.session.get(ErasedFamily, (district_id, family_id)) is not None


async def expire_messages(uow: UnitOfWork, districts: Districts, now: datetime
                          ) -> dict[str, int]:
    """The daily retention of notifications: per district, messages sent, delivered or failed
    more than ``retention.messages_days`` ago are deleted."""
    removed = 0
    for district in districts.districts:
        days = district.retention.messages_days
        if days is None:
            continue
        result = await uow.session.execute(delete(Message).where(
            Message.district_id == district.id, Message.status.in_(FINISHED),
            Message.created_at < now - timedelta(days=days)))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return {"messages": removed}
