"""How referrals follows what partners and engagement report."""

from sqlalchemy import select

from contracts.envelope import Envelope
from contracts.events import (
    Event,
    FamilyContacted,
    FamilyRegistered,
    NoPartnerAvailable,
    PartnerMatched,
)
from runtime.errors import RetryLater
from runtime.outbox import UnitOfWork
from runtime.service import ServiceRuntime
from services.referrals.lifecycle import CLOSED, MOVES, Status
from services.referrals.referrals import get_referral, move, record
from services.referrals.tables import KnownFamily, Referral


async def _advance(
    uow: UnitOfWork, envelope: Envelope, event: Event, referral: Referral, target: Status,
    actor: str,
) -> bool:
    """Apply a reported fact. An event that overtook the one before it is retried later; one
    that arrives after the referral ended is kept in the timeline but changes nothing."""
    current = Status(referral.status)
    if target in MOVES[current]:
        move(referral, target)
        applied = True
    elif current in CLOSED or current == target:
        applied = False
    else:
        raise RetryLater(f"referral is {current}; {envelope.type} waits")
    record(uow, referral, envelope.id, type(event).__name__, actor,
           {**envelope.data, "applied": applied}, envelope.time)
    return applied


def register(rt: ServiceRuntime) -> None:
    @rt.consumes(FamilyRegistered)
    async def on_family_registered(uow: UnitOfWork, env: Envelope, ev: FamilyRegistered) -> None:
        known = await uow.session.get(KnownFamily, (env.districtid, ev.family_id))
        if known is None:
            uow.session.add(
                KnownFamily(district_id=env.districtid, family_id=ev.family_id,
                            school_id=ev.school_id)
            )

    @rt.consumes(PartnerMatched)
    async def on_partner_matched(uow: UnitOfWork, env: Envelope, ev: PartnerMatched) -> None:
        referral = await get_referral(uow, env.districtid, ev.referral_id)
        if await _advance(uow, env, ev, referral, Status.matched, "service:partners"):
            referral.partner_id = ev.partner_id
            referral.service_id = ev.service_id

    @rt.consumes(NoPartnerAvailable)
    async def on_no_partner(uow: UnitOfWork, env: Envelope, ev: NoPartnerAvailable) -> None:
        referral = await get_referral(uow, env.districtid, ev.referral_id)
        await _advance(uow, env, ev, referral, Status.no_partner, "service:partners")

    @rt.consumes(FamilyContacted)
    async def on_family_contacted(uow: UnitOfWork, env: Envelope, ev: FamilyContacted) -> None:
        if ev.referral_id is None:
            return
        referral = await get_referral(uow, env.districtid, ev.referral_id)
        if await _advance(uow, env, ev, referral, Status.family_contacted, "service:engagement"):
            referral.family_contacted_at = ev.contacted_at


async def family_is_known(uow: UnitOfWork, district_id: str, family_id: str) -> bool:
    found = await uow.session.scalar(
        select(KnownFamily.family_id).where(
            KnownFamily.district_id == district_id, KnownFamily.family_id == family_id
        )
    )
    return found is not None
