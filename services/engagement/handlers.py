"""How engagement turns a match into outreach, and a delivered message into a contact."""

from uuid import uuid4

from contracts.envelope import Envelope
from contracts.events import (
    FamilyUnreachable,
    NotificationFailed,
    NotificationSent,
    OutreachRequested,
    PartnerMatched,
)
from contracts.taxonomy import ContactKind
from runtime.db import utcnow
from runtime.errors import RetryLater
from runtime.outbox import UnitOfWork
from runtime.service import ServiceRuntime
from services.engagement.contacts import log_contact, usable_channels
from services.engagement.tables import Family, Outreach


def register(rt: ServiceRuntime) -> None:
    @rt.consumes(PartnerMatched)
    async def on_partner_matched(uow: UnitOfWork, env: Envelope, ev: PartnerMatched) -> None:
        family = await uow.session.get(Family, ev.family_id)
        if family is None or family.district_id != env.districtid:
            raise RetryLater(f"family {ev.family_id} not registered here")
        now = utcnow()
        outreach = Outreach(id=str(uuid4()), district_id=family.district_id, family_id=family.id,
                            referral_id=ev.referral_id, kind="partner_matched",
                            status="requested", attempts=0, created_at=now, updated_at=now)
        uow.session.add(outreach)
        channels = usable_channels(family)
        if not channels:
            outreach.status = "unreachable"
            uow.emit(FamilyUnreachable(family_id=family.id, referral_id=ev.referral_id,
                                       outreach_id=outreach.id, attempts=0),
                     subject=ev.referral_id)
            return
        school = rt.districts.school(family.district_id, family.school_id)
        uow.emit(
            OutreachRequested(
                outreach_id=outreach.id,
                family_id=family.id,
                referral_id=ev.referral_id,
                kind="partner_matched",
                language=family.preferred_language,
                channels=channels,
                email=family.email,
                phone=family.phone,
                family_name=family.name,
                school_id=family.school_id,
                urgency=ev.urgency,
                variables={
                    "partner_name": ev.partner_name,
                    "need": ev.need,
                    "school_name": school.name if school else family.school_id,
                },
            ),
            subject=outreach.id,
        )

    @rt.consumes(NotificationSent)
    async def on_notification_sent(uow: UnitOfWork, env: Envelope, ev: NotificationSent) -> None:
        outreach = await uow.session.get(Outreach, ev.outreach_id)
        family = await uow.session.get(Family, ev.family_id)
        if outreach is None or family is None:
            return  # an announcement or invitation: no referral outreach to advance
        outreach.attempts += 1
        outreach.updated_at = utcnow()
        if outreach.status in ("contacted", "unreachable"):
            return
        outreach.status = "contacted"
        log_contact(uow, family, kind=ContactKind(ev.channel), at=env.time,
                    by="service:notifications", referral_id=outreach.referral_id,
                    outreach_id=outreach.id)

    @rt.consumes(NotificationFailed)
    async def on_notification_failed(
        uow: UnitOfWork, env: Envelope, ev: NotificationFailed
    ) -> None:
        outreach = await uow.session.get(Outreach, ev.outreach_id)
        if outreach is None or outreach.status in ("contacted", "unreachable"):
            return
        outreach.attempts += 1
        outreach.updated_at = utcnow()
        if ev.permanent:
            outreach.status = "unreachable"
            uow.emit(FamilyUnreachable(family_id=outreach.family_id,
                                       referral_id=outreach.referral_id,
                                       outreach_id=outreach.id, attempts=outreach.attempts),
                     subject=outreach.referral_id or outreach.id)
