"""How partners answers referrals: match and reserve, or say why not; release at the end."""

from sqlalchemy import select

from contracts.envelope import Envelope
from contracts.events import (
    FamilyRegistered,
    NoPartnerAvailable,
    PartnerMatched,
    ReferralCancelled,
    ReferralClosed,
    ReferralOpened,
)
from contracts.taxonomy import Consent
from runtime.db import utcnow
from runtime.outbox import UnitOfWork
from runtime.service import ServiceRuntime
from services.partners.capacity import release, reserve
from services.partners.matching import rank
from services.partners.tables import FamilyLanguage, Partner, PartnerService, ReferralRequest


async def match(uow: UnitOfWork, request: ReferralRequest) -> None:
    """Reserve the best eligible service and emit PartnerMatched, or NoPartnerAvailable."""
    rows = (
        await uow.session.execute(
            select(PartnerService, Partner)
            .join(Partner, Partner.id == PartnerService.partner_id)
            .where(
                PartnerService.district_id == request.district_id,
                PartnerService.need == request.need,
            )
        )
    ).all()
    language = await uow.session.get(FamilyLanguage, (request.district_id, request.family_id))
    candidates = rank(request, [(s, p) for s, p in rows], language.language if language else None)
    request.updated_at = utcnow()
    for candidate in candidates:
        if not await reserve(uow, candidate.service.id):
            continue  # another referral took the last slot first
        request.state = "matched"
        request.service_id = candidate.service.id
        request.partner_id = candidate.partner.id
        request.attempts += 1
        request.tried_partners = [*request.tried_partners, candidate.partner.id]
        uow.emit(
            PartnerMatched(
                referral_id=request.referral_id,
                family_id=request.family_id,
                partner_id=candidate.partner.id,
                service_id=candidate.service.id,
                partner_name=candidate.partner.name,
                need=request.need,
                urgency=request.urgency,
                score=candidate.score,
                reasons=candidate.reasons,
                attempt=request.attempts,
            ),
            district=request.district_id,
            school=request.school_id,
            subject=request.referral_id,
        )
        return
    request.state = "no_partner"
    request.service_id = request.partner_id = None
    reason = (
        f"no active partner offers {request.need} at school {request.school_id} with an open slot"
        if not rows
        else f"{len(rows)} services offer {request.need}; none eligible with an open slot"
    )
    uow.emit(
        NoPartnerAvailable(
            referral_id=request.referral_id,
            family_id=request.family_id,
            need=request.need,
            reason=reason,
            candidates_considered=len(rows),
        ),
        district=request.district_id,
        school=request.school_id,
        subject=request.referral_id,
    )


async def end(uow: UnitOfWork, referral_id: str) -> None:
    request = await uow.session.get(ReferralRequest, referral_id)
    if request is None or request.state == "ended":
        return
    if request.state == "matched" and request.service_id:
        await release(uow, request.service_id)
    request.state = "ended"
    request.updated_at = utcnow()


def register(rt: ServiceRuntime) -> None:
    @rt.consumes(ReferralOpened)
    async def on_referral_opened(uow: UnitOfWork, env: Envelope, ev: ReferralOpened) -> None:
        if await uow.session.get(ReferralRequest, ev.referral_id) is not None:
            return
        now = utcnow()
        request = ReferralRequest(
            referral_id=ev.referral_id,
            district_id=env.districtid,
            school_id=ev.school_id,
            family_id=ev.family_id,
            need=ev.need,
            urgency=ev.urgency,
            grade=ev.grade,
            consent=ev.consent,
            state="awaiting_consent",
            tried_partners=[],
            attempts=0,
            opened_at=ev.opened_at,
            updated_at=now,
        )
        uow.session.add(request)
        if ev.consent == Consent.given:
            await match(uow, request)

    @rt.consumes(ReferralClosed)
    async def on_referral_closed(uow: UnitOfWork, env: Envelope, ev: ReferralClosed) -> None:
        await end(uow, ev.referral_id)

    @rt.consumes(ReferralCancelled)
    async def on_referral_cancelled(uow: UnitOfWork, env: Envelope, ev: ReferralCancelled) -> None:
        await end(uow, ev.referral_id)

    @rt.consumes(FamilyRegistered)
    async def on_family_registered(uow: UnitOfWork, env: Envelope, ev: FamilyRegistered) -> None:
        known = await uow.session.get(FamilyLanguage, (env.districtid, ev.family_id))
        if known is None:
            uow.session.add(FamilyLanguage(district_id=env.districtid, family_id=ev.family_id,
                                           language=ev.preferred_language))
        else:
            known.language = ev.preferred_language
