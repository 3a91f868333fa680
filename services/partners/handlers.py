"""How partners follows referrals: match when consent allows, match the next partner after a
decline, learn from acceptances, release the slot when the referral ends.

Each event type has its own consumer, so a ReferralDeclined may be handled before the
ReferralOpened it follows: an event about a referral partners has not heard of yet is retried
later (RetryLater), never dropped.
"""

from datetime import datetime

from contracts.envelope import Envelope
from contracts.events import (
    ConsentRecorded,
    FamilyRegistered,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralDeclined,
    ReferralOpened,
)
from contracts.taxonomy import Consent
from runtime.errors import RetryLater
from runtime.uow import UnitOfWork
from services.partners.assign import add_to_stats, match, release_slot
from services.partners.deps import PartnersDeps
from services.partners.links import issue_link
from services.partners.tables import FamilyLanguage, ReferralRequest

ENDED = ("ended", "consent_declined")


async def _request(uow: UnitOfWork, env: Envelope, referral_id: str) -> ReferralRequest:
    request = await uow.session.get(ReferralRequest, referral_id)
    if request is None or request.district_id != env.districtid:
        raise RetryLater(f"referral {referral_id} not known yet")
    return request


async def _match(uow: UnitOfWork, request: ReferralRequest, now: datetime,
                 deps: PartnersDeps) -> None:
    """Match, and e-mail the matched partner's contact a link to the referral."""
    await match(uow, request, now)
    await issue_link(uow, request, deps.links, now)


async def on_referral_opened(uow: UnitOfWork, env: Envelope, ev: ReferralOpened,
                             deps: PartnersDeps) -> None:
    if await uow.session.get(ReferralRequest, ev.referral_id) is not None:
        return
    now = deps.clock()
    request = ReferralRequest(
        referral_id=ev.referral_id, district_id=env.districtid, school_id=ev.school_id,
        family_id=ev.family_id, need=ev.need, urgency=ev.urgency, grade=ev.grade,
        consent=ev.consent, state="awaiting_consent", tried_partners=[], attempts=0,
        opened_at=ev.opened_at, updated_at=now, accepted=False, ever_matched=False,
        declines=0,
    )
    uow.session.add(request)
    if ev.consent == Consent.given:
        await _match(uow, request, now, deps)
    elif ev.consent == Consent.declined:
        request.state = "consent_declined"


async def on_consent(uow: UnitOfWork, env: Envelope, ev: ConsentRecorded,
                     deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    if request.state == "ended":
        return
    request.consent = ev.consent
    if ev.consent == Consent.given and request.state == "awaiting_consent":
        await _match(uow, request, deps.clock(), deps)
    elif ev.consent == Consent.declined:  # declined, or withdrawn after a match
        await release_slot(uow, request, at=ev.recorded_at)
        request.state = "consent_declined"


async def on_declined(uow: UnitOfWork, env: Envelope, ev: ReferralDeclined,
                      deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    if request.state != "matched" or request.partner_id != ev.partner_id:
        return  # an old partner's late answer: the referral has moved on
    now = deps.clock()
    await release_slot(uow, request, at=now, declined=True)
    request.declines += 1
    await _match(uow, request, now, deps)  # the tried partners are skipped


async def on_accepted(uow: UnitOfWork, env: Envelope, ev: ReferralAccepted,
                      deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    if request.state != "matched" or request.partner_id != ev.partner_id or request.accepted:
        return
    request.accepted = True
    waited = (env.time - request.matched_at).total_seconds() if request.matched_at else 0.0
    await add_to_stats(uow, ev.partner_id, request.district_id, accepted=1,
                       accept_seconds=max(0.0, waited))


async def on_referral_closed(uow: UnitOfWork, env: Envelope, ev: ReferralClosed,
                             deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    request.outcome = ev.outcome
    request.closed_at = ev.closed_at
    if request.state != "ended":
        await release_slot(uow, request, at=ev.closed_at)
        request.state = "ended"


async def on_referral_cancelled(uow: UnitOfWork, env: Envelope, ev: ReferralCancelled,
                                deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    request.closed_at = request.closed_at or env.time
    if request.state != "ended":
        await release_slot(uow, request, at=deps.clock())
        request.state = "ended"


async def on_family_registered(uow: UnitOfWork, env: Envelope, ev: FamilyRegistered,
                               deps: PartnersDeps) -> None:
    known = await uow.session.get(FamilyLanguage, (env.districtid, ev.family_id))
    if known is None:
        uow.session.add(FamilyLanguage(district_id=env.districtid, family_id=ev.family_id,
                                       language=ev.preferred_language))
    else:
        known.language = ev.preferred_language


HANDLERS = {
    ReferralOpened: on_referral_opened,
    ConsentRecorded: on_consent,
    ReferralDeclined: on_declined,
    ReferralAccepted: on_accepted,
    ReferralClosed: on_referral_closed,
    ReferralCancelled: on_referral_cancelled,
    FamilyRegistered: on_family_registered,
}
