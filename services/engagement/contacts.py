"""Reaching a family: which channels we may use, asking notifications to try, and recording
what happened. A family counts as contacted only when it answers or a person reaches it; a
sent message is an attempt."""

from datetime import datetime, timedelta
from uuid import uuid4

from contracts.events import FamilyContacted, FamilyUnreachable, OutreachRequested
from contracts.taxonomy import Channel, ContactKind, Urgency
from runtime.districts import Districts
from runtime.outbox import UnitOfWork
from services.engagement.tables import ContactLogEntry, Family, Outreach

REACHED = "reached"


def usable_channels(family: Family) -> list[Channel]:
    """Channels with consent, contact details and no opt-out, the family's preference first."""
    usable = []
    if family.email and family.email_consent and not family.email_opted_out:
        usable.append(Channel.email)
    if family.phone and family.sms_consent and not family.sms_opted_out:
        usable.append(Channel.sms)
    usable.sort(key=lambda c: c != family.preferred_channel)
    return usable


def rotate(channels: list[Channel], attempt: int) -> list[Channel]:
    """Attempt 2 leads with the other channel, attempt 3 with the first again, and so on."""
    if not channels:
        return channels
    shift = (attempt - 1) % len(channels)
    return channels[shift:] + channels[:shift]


def request_attempt(uow: UnitOfWork, districts: Districts, outreach: Outreach, family: Family,
                    now: datetime) -> bool:
    """Ask notifications for the next attempt; False (and unreachable) without a channel."""
    channels = usable_channels(family)
    if not channels:
        mark_unreachable(uow, outreach, now)
        return False
    outreach.attempts += 1
    outreach.status = "requested"
    outreach.next_check_at = None
    outreach.updated_at = now
    school = districts.school(family.district_id, family.school_id)
    uow.emit(
        OutreachRequested(
            outreach_id=outreach.id,
            family_id=family.id,
            referral_id=outreach.referral_id,
            kind=outreach.kind,
            language=family.preferred_language,
            channels=rotate(channels, outreach.attempts),
            email=family.email,
            phone=family.phone,
            family_name=family.name,
            school_id=family.school_id,
            urgency=Urgency(outreach.urgency),
            variables={**outreach.variables,
                       "school_name": school.name if school else family.school_id},
            attempt=outreach.attempts,
        ),
        district=outreach.district_id, school=family.school_id, subject=outreach.id,
    )
    return True


def awaiting_reply(outreach: Outreach, now: datetime, wait_seconds: float) -> None:
    if outreach.status in ("contacted", "unreachable"):
        return
    outreach.status = "awaiting_reply"
    outreach.next_check_at = now + timedelta(seconds=wait_seconds)
    outreach.updated_at = now


def mark_unreachable(uow: UnitOfWork, outreach: Outreach, now: datetime) -> None:
    if outreach.status in ("contacted", "unreachable"):
        return
    outreach.status = "unreachable"
    outreach.next_check_at = None
    outreach.updated_at = now
    uow.emit(FamilyUnreachable(family_id=outreach.family_id, referral_id=outreach.referral_id,
                               outreach_id=outreach.id, attempts=outreach.attempts),
             district=outreach.district_id, subject=outreach.referral_id or outreach.id)


def log_contact(
    uow: UnitOfWork,
    family: Family,
    *,
    kind: ContactKind,
    at: datetime,
    by: str,
    outcome: str = REACHED,
    referral_id: str | None = None,
    outreach_id: str | None = None,
    note: str | None = None,
    announce: bool = True,
) -> ContactLogEntry:
    """One line of the family's contact log; a reached contact about a referral is announced
    as FamilyContacted."""
    entry = ContactLogEntry(id=str(uuid4()), district_id=family.district_id, family_id=family.id,
                            referral_id=referral_id, kind=kind, outcome=outcome, at=at, by=by,
                            note=note[:500] if note else None)
    uow.session.add(entry)
    if outcome == REACHED and announce:
        uow.emit(
            FamilyContacted(family_id=family.id, referral_id=referral_id, outreach_id=outreach_id,
                            kind=kind, contacted_at=at),
            district=family.district_id,
            school=family.school_id,
            subject=referral_id or family.id,
        )
    return entry
