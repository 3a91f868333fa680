"""Reaching a family: which channels we may use, asking notifications to try (one family, or
many in bulk requests), and recording what happened. A family counts as contacted only when it
answers or a person reaches it; a sent message is an attempt."""

import functools
from datetime import datetime, timedelta
from uuid import uuid4

from sqlalchemy import Select, bindparam, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import (
    BulkOutreachRequested,
    BulkRecipient,
    FamilyContacted,
    FamilyUnreachable,
    OutreachRequested,
)
from contracts.taxonomy import Channel, ContactKind, Urgency
from runtime.districts import Districts
from runtime.outbox import UnitOfWork
from services.engagement.lifecycle import (
    OPEN,
    Answered,
    AttemptRequested,
    AttemptSent,
    Fact,
    GaveUp,
    OutreachStatus,
    Unchanged,
    decide,
)
from services.engagement.tables import ContactLogEntry, Family, Outreach

REACHED = "reached"
CODES = [str(n) for n in range(1, 100)]  # reply codes: one or two digits, on any keypad


def usable_channels(family: Family) -> list[Channel]:
    """Channels with consent, contact details and no opt-out, the family's preference first."""
    usable = []
    if family.email and family.email_consent and not family.email_opted_out:
        usable.append(Channel.email)
    if family.phone and family.sms_consent and not family.sms_opted_out:
        usable.append(Channel.sms)
    usable.sort(key=lambda c: c != family.preferred_channel)
    return usable


def recipient(family: Family, school_name: str, **variables: str) -> BulkRecipient | None:
    """The family as one recipient of a bulk request; None when no channel may be used."""
    channels = usable_channels(family)
    if not channels:
        return None
    return BulkRecipient(family_id=family.id, school_id=family.school_id,
                         language=family.preferred_language, channels=channels,
                         email=family.email, phone=family.phone, family_name=family.name,
                         variables={"school_name": school_name, **variables})


def emit_bulk(uow: UnitOfWork, district_id: str, batch_id: str, kind: str, urgency: Urgency,
              variables: dict[str, str], recipients: list[BulkRecipient], chunk: int) -> int:
    """Recipients in chunks, one internal event each; returns how many events."""
    events = 0
    for start in range(0, len(recipients), chunk):
        uow.emit(BulkOutreachRequested(batch_id=batch_id, kind=kind, urgency=urgency,
                                       variables=variables,
                                       recipients=recipients[start:start + chunk]),
                 district=district_id, subject=batch_id)
        events += 1
    return events


def rotate(channels: list[Channel], attempt: int) -> list[Channel]:
    """Attempt 2 leads with the other channel, attempt 3 with the first again, and so on."""
    if not channels:
        return channels
    shift = (attempt - 1) % len(channels)
    return channels[shift:] + channels[:shift]


# The families at a phone, each half by its own index (district and phone; the id), and their
# outreach by family; the status is checked in Python on those few rows. Joined with an OR and
# the status in SQL, SQLite without statistics read every open outreach of the district by
# its status index instead: about 100 ms a match once 50,000 referrals were waiting for an
# answer (the memory benchmark found it).
_AT_PHONE = select(Family.id).where(Family.district_id == bindparam("district"),
                                    Family.phone == bindparam("phone"))
_FAMILY = select(Family.id).where(Family.district_id == bindparam("district"),
                                  Family.id == bindparam("family"))


@functools.cache
def _at_phone(with_family: bool, lock: bool) -> Select[tuple[Outreach]]:
    families = union_all(_AT_PHONE, _FAMILY) if with_family else _AT_PHONE
    query = (select(Outreach).where(Outreach.family_id.in_(families))
             .order_by(Outreach.created_at.desc(), Outreach.id))
    return query.with_for_update() if lock else query


async def open_at_phone(session: AsyncSession, district_id: str, phone: str,
                        family_id: str | None = None, *, lock: bool = False) -> list[Outreach]:
    """Outreach awaiting an answer at this phone, newest first; ``lock`` to change them (a
    retry or a coordinator may change one at the same time)."""
    values = {"district": district_id, "phone": phone, "family": family_id}
    rows = await session.scalars(_at_phone(bool(family_id), lock), values)
    return [o for o in rows if o.status in OPEN]


async def reply_code(session: AsyncSession, outreach: Outreach, family: Family) -> str | None:
    """The code this attempt's text shows: the outreach keeps the one it was first given
    (the lowest not held by another open outreach at the phone), shown only while another
    outreach is open there, so a family with one referral reads the message as before.
    Read unlocked: two codes given at once may collide, and a reply naming both is held."""
    if not family.phone:
        return None
    others = [o for o in await open_at_phone(session, family.district_id, family.phone)
              if o.id != outreach.id]
    if outreach.reply_code is None:
        taken = {o.reply_code for o in others}
        outreach.reply_code = next((c for c in CODES if c not in taken), None)
    return outreach.reply_code if others else None


async def request_attempt(uow: UnitOfWork, districts: Districts, outreach: Outreach,
                          family: Family, now: datetime) -> bool:
    """Ask notifications for the next attempt; False (and unreachable) without a channel."""
    channels = usable_channels(family)
    if not channels:
        mark_unreachable(uow, outreach, now)
        return False
    code = await reply_code(uow.session, outreach, family) if Channel.sms in channels else None
    move(outreach, AttemptRequested(), now)
    outreach.attempts += 1
    outreach.next_check_at = None
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
                       "school_name": school.name if school else family.school_id,
                       **({"reply_code": code} if code else {})},
            attempt=outreach.attempts,
        ),
        district=outreach.district_id, school=family.school_id,
        correlation=outreach.correlation_id,
    )
    return True


def move(outreach: Outreach, fact: Fact, now: datetime) -> bool:
    """``fact`` applied to the outreach through its lifecycle (``lifecycle.decide``); False
    when it changes nothing."""
    try:
        outreach.status = decide(OutreachStatus(outreach.status), fact)
    except Unchanged:
        return False
    outreach.updated_at = now
    return True


def awaiting_reply(outreach: Outreach, now: datetime, wait_seconds: float) -> None:
    """An attempt was sent: the family has ``wait_seconds`` to answer."""
    if move(outreach, AttemptSent(), now):
        outreach.next_check_at = now + timedelta(seconds=wait_seconds)


def answered(outreach: Outreach, at: datetime) -> bool:
    """The family answered or was reached (also after it was given up on); False when it had
    answered before."""
    if not move(outreach, Answered(), at):
        return False
    outreach.next_check_at = None
    return True


def mark_unreachable(uow: UnitOfWork, outreach: Outreach, now: datetime) -> None:
    if not move(outreach, GaveUp(), now):
        return
    outreach.next_check_at = None
    uow.emit(FamilyUnreachable(family_id=outreach.family_id, referral_id=outreach.referral_id,
                               outreach_id=outreach.id, attempts=outreach.attempts),
             district=outreach.district_id, correlation=outreach.correlation_id)


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
    correlation: str | None = None,
) -> ContactLogEntry:
    """One line of the family's contact log; a reached contact about a referral is announced
    as FamilyContacted, in the referral's chain (``correlation``, the outreach's) when known."""
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
            correlation=correlation,
        )
    return entry


async def referral_chain(session: AsyncSession, family_id: str,
                         referral_id: str | None) -> str | None:
    """The correlation id of a referral's chain as this service knows it (its outreach to the
    family about it), or None (no outreach yet, or made before outreach kept it)."""
    if not referral_id:
        return None
    return await session.scalar(
        select(Outreach.correlation_id).where(Outreach.family_id == family_id,
                                              Outreach.referral_id == referral_id,
                                              Outreach.correlation_id.is_not(None))
        .order_by(Outreach.created_at.desc()).limit(1))
