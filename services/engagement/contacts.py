"""Reaching a family: which channels we may use, and recording that we did."""

from datetime import datetime
from uuid import uuid4

from contracts.events import FamilyContacted
from contracts.taxonomy import Channel, ContactKind
from runtime.outbox import UnitOfWork
from services.engagement.tables import ContactLogEntry, Family


def usable_channels(family: Family) -> list[Channel]:
    """Channels with consent, contact details and no opt-out, the family's preference first."""
    usable = []
    if family.email and family.email_consent and not family.email_opted_out:
        usable.append(Channel.email)
    if family.phone and family.sms_consent and not family.sms_opted_out:
        usable.append(Channel.sms)
    usable.sort(key=lambda c: c != family.preferred_channel)
    return usable


def log_contact(
    uow: UnitOfWork,
    family: Family,
    *,
    kind: ContactKind,
    at: datetime,
    by: str,
    outcome: str = "reached",
    referral_id: str | None = None,
    outreach_id: str | None = None,
    note: str | None = None,
) -> ContactLogEntry:
    entry = ContactLogEntry(id=str(uuid4()), district_id=family.district_id, family_id=family.id,
                            referral_id=referral_id, kind=kind, outcome=outcome, at=at, by=by,
                            note=note)
    uow.session.add(entry)
    if outcome == "reached":
        uow.emit(
            FamilyContacted(family_id=family.id, referral_id=referral_id, outreach_id=outreach_id,
                            kind=kind, contacted_at=at),
            district=family.district_id,
            school=family.school_id,
            subject=referral_id or family.id,
        )
    return entry
