"""Erasing a family (a district admin's request) and the daily retention of replies.

Engagement is where a family's name, phone and email are kept. Erasing blanks them, the
contact log's notes, the outreach's message variables, any held reply the family may have
sent and the contact details in the outreach requests already published (the outbox keeps
them a while); the rows stay with their ids so counts and referrals still add up, and the
family keeps when and by whom it was erased (the audit of the erasure). ``FamilyErased``
(internal, ids only) tells notifications and referrals to erase what they hold."""

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import delete, select, update

from contracts.events import BulkOutreachRequested, FamilyErased, OutreachRequested
from runtime.districts import Districts
from runtime.erasure import scrub_sent
from runtime.uow import UnitOfWork, messaging_tables
from services.engagement.contacts import OPEN, mark_unreachable
from services.engagement.tables import Base, ContactLogEntry, Family, Outreach, UnassignedReply

ERASED_NAME = ""


async def erase_family(uow: UnitOfWork, family: Family, by: str, now: datetime) -> None:
    """Blank what engagement holds of the family and tell the other services. Erasing again
    blanks anything that arrived since and tells them again (each consumer is idempotent);
    the first erasure's time and author are kept."""
    if family.erased_at is None:
        family.erased_at, family.erased_by = now, by
    family.name, family.phone, family.email = ERASED_NAME, None, None
    family.sms_consent = family.email_consent = False
    await uow.session.execute(update(ContactLogEntry).where(
        ContactLogEntry.family_id == family.id).values(note=None))
    outreach = list((await uow.session.scalars(select(Outreach).where(
        Outreach.family_id == family.id).with_for_update())).all())
    for row in outreach:
        row.variables, row.reply_code = {}, None
        if row.status in OPEN:  # nobody can be reached at blanked details any more
            mark_unreachable(uow, row, now)
    await _erase_held_replies(uow, family.district_id, {row.id for row in outreach})
    await scrub_sent(uow, messaging_tables(Base.metadata).outbox,
                     [OutreachRequested.ce_type(), BulkOutreachRequested.ce_type()],
                     partial(_scrubbed, family.id))
    uow.emit(FamilyErased(family_id=family.id, erased_by=family.erased_by or by,
                          erased_at=family.erased_at or now),
             district=family.district_id, school=family.school_id, subject=family.id)


async def _erase_held_replies(uow: UnitOfWork, district_id: str, outreach_ids: set[str]) -> None:
    """A held text names no family, only the outreach it could answer: one that could be this
    family's is blanked (its sender may have been the family)."""
    if not outreach_ids:
        return
    replies = (await uow.session.scalars(select(UnassignedReply).where(
        UnassignedReply.district_id == district_id))).all()
    for reply in replies:
        if reply.outreach_id in outreach_ids or outreach_ids.intersection(reply.candidates):
            reply.text = ""


BLANK = {"email": None, "phone": None, "family_name": "", "variables": {}}


def _scrubbed(family_id: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """An outreach request's data without the family's contact details (None: not its)."""
    if data.get("family_id") == family_id:
        return data | BLANK
    recipients = data.get("recipients")
    if isinstance(recipients, list) and any(
            isinstance(r, dict) and r.get("family_id") == family_id for r in recipients):
        return data | {"recipients": [r | BLANK if r.get("family_id") == family_id else r
                                      for r in recipients]}
    return None


async def expire_replies(uow: UnitOfWork, districts: Districts, now: datetime) -> dict[str, int]:
    """The daily retention of engagement: per district, held replies received more than
    ``retention.replies_days`` ago are deleted and the text of families' replies in the contact
    log is blanked (the entry stays, for counts)."""
    counts = {"held_replies": 0, "reply_notes": 0}
    for district in districts.districts:
        days = district.retention.replies_days
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        held = await uow.session.execute(delete(UnassignedReply).where(
            UnassignedReply.district_id == district.id, UnassignedReply.received_at < cutoff))
        notes = await uow.session.execute(update(ContactLogEntry).where(
            ContactLogEntry.district_id == district.id, ContactLogEntry.by == "family",
            ContactLogEntry.at < cutoff, ContactLogEntry.note.is_not(None)).values(note=None))
        counts["held_replies"] += int(getattr(held, "rowcount", 0) or 0)
        counts["reply_notes"] += int(getattr(notes, "rowcount", 0) or 0)
    return counts
