"""How referrals follows what partners and engagement report."""

from sqlalchemy import bindparam, select

from contracts.envelope import Envelope
from contracts.events import (
    Event,
    FamilyContacted,
    FamilyErased,
    FamilyRegistered,
    FamilyUnreachable,
    NoPartnerAvailable,
    PartnerMatched,
)
from runtime import prefetch
from runtime.errors import RetryLater
from runtime.uow import UnitOfWork
from services.referrals.erasure import on_family_erased
from services.referrals.lifecycle import OPEN, Contacted, Matched, NoPartner, Status, TooEarly
from services.referrals.metrics import NO_PARTNER
from services.referrals.referrals import (
    Desk,
    get_referral,
    load_referrals,
    record,
    reported,
    restart_follow_up,
)
from services.referrals.tables import KnownFamily


async def on_family_registered(uow: UnitOfWork, env: Envelope, ev: FamilyRegistered,
                               desk: Desk) -> None:
    if await prefetch.get(uow, KnownFamily, (env.districtid, ev.family_id)) is None:
        prefetch.add(uow, KnownFamily(district_id=env.districtid, family_id=ev.family_id,
                                      school_id=ev.school_id))
        uow.after_commit.append(desk.arrivals.arrived)


async def on_partner_matched(uow: UnitOfWork, env: Envelope, ev: PartnerMatched,
                             desk: Desk) -> None:
    referral = await get_referral(uow, env.districtid, ev.referral_id, lock=True)
    if reported(uow, desk, referral, Matched(ev.partner_id, ev.attempt), env, ev,
                "service:partners"):
        referral.service_id = ev.service_id


async def on_no_partner(uow: UnitOfWork, env: Envelope, ev: NoPartnerAvailable, desk: Desk) -> None:
    referral = await get_referral(uow, env.districtid, ev.referral_id, lock=True)
    if reported(uow, desk, referral, NoPartner(), env, ev, "service:partners"):
        district, need = env.districtid, referral.need
        uow.after_commit.append(lambda: NO_PARTNER.labels(district, need).inc())


async def on_family_contacted(uow: UnitOfWork, env: Envelope, ev: FamilyContacted,
                              desk: Desk) -> None:
    if ev.referral_id is None:
        return
    referral = await get_referral(uow, env.districtid, ev.referral_id, lock=True)
    fact = Contacted(automated=ev.outreach_id is not None)
    try:
        reported(uow, desk, referral, fact, env, ev, "service:engagement", ev.contacted_at)
    except TooEarly as exc:
        raise RetryLater(str(exc)) from exc


async def on_family_unreachable(uow: UnitOfWork, env: Envelope, ev: FamilyUnreachable,
                                desk: Desk) -> None:
    if ev.referral_id is None:
        return
    referral = await get_referral(uow, env.districtid, ev.referral_id, lock=True)
    open_ = Status(referral.status) in OPEN
    if open_:  # not progress, but a reason for a person to step in now
        restart_follow_up(desk, referral, desk.clock(), reason="family_unreachable")
    record(uow, referral, env.id, type(ev).__name__, "service:engagement",
           {**env.data, "applied": open_}, env.time)


async def load_referrals_of(uow: UnitOfWork, batch: list[tuple[Envelope, Event]],
                            desk: Desk) -> None:
    """PREFETCH of the events about a referral: the batch's referrals in one statement."""
    await load_referrals(uow, (ev.referral_id for _, ev in batch
                               if getattr(ev, "referral_id", None) is not None))


async def load_known_families(uow: UnitOfWork, batch: list[tuple[Envelope, Event]],
                              desk: Desk) -> None:
    """PREFETCH of FamilyRegistered: which of the batch's families are known already, in one
    statement."""
    await prefetch.load(uow, KnownFamily, ((env.districtid, str(getattr(ev, "family_id", "")))
                                           for env, ev in batch))


HANDLERS = {
    FamilyRegistered: on_family_registered,
    PartnerMatched: on_partner_matched,
    NoPartnerAvailable: on_no_partner,
    FamilyContacted: on_family_contacted,
    FamilyUnreachable: on_family_unreachable,
    FamilyErased: on_family_erased,
}


# Per event type, run once per consumer batch before its handlers (runtime.uow.Prefetch).
PREFETCH = {
    FamilyRegistered: load_known_families,
    PartnerMatched: load_referrals_of,
    NoPartnerAvailable: load_referrals_of,
    FamilyContacted: load_referrals_of,
    FamilyUnreachable: load_referrals_of,
}


_KNOWN = select(KnownFamily.family_id).where(KnownFamily.district_id == bindparam("district"),
                                             KnownFamily.family_id == bindparam("family"))


async def family_is_known(uow: UnitOfWork, district_id: str, family_id: str) -> bool:
    found = await uow.session.scalar(_KNOWN, {"district": district_id, "family": family_id})
    return found is not None
