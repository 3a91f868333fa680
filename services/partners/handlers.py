"""How partners follows referrals: match when consent allows, match the next partner after a
decline, learn from acceptances, release the slot when the referral ends.

What each event does to the request is lifecycle.decide's answer; a handler finds the request,
carries the move out (frees a slot, matches) and stores it.

Each event type has its own consumer, so a ReferralDeclined may be handled before the
ReferralOpened it follows: an event about a referral partners has not heard of yet is retried
later (RetryLater), never dropped.
"""

from datetime import datetime

from contracts.envelope import Envelope
from contracts.events import (
    ConsentRecorded,
    Event,
    FamilyRegistered,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralDeclined,
    ReferralOpened,
)
from contracts.taxonomy import Consent
from runtime import prefetch
from runtime.errors import RetryLater
from runtime.uow import UnitOfWork
from services.partners.assign import add_to_stats, match, release_slot
from services.partners.deps import PartnersDeps
from services.partners.lifecycle import (
    Accepted,
    ConsentChanged,
    Declined,
    Ended,
    Fact,
    Move,
    State,
    Status,
    Unchanged,
    decide,
)
from services.partners.links import issue_link
from services.partners.tables import FamilyLanguage, ReferralRequest


async def _request(uow: UnitOfWork, env: Envelope, referral_id: str) -> ReferralRequest:
    request = await prefetch.get(uow, ReferralRequest, referral_id)
    if request is None or request.district_id != env.districtid:
        raise RetryLater(f"referral {referral_id} not known yet")
    return request


def _decide(request: ReferralRequest, fact: Fact) -> Move | None:
    """What ``fact`` does to the request (lifecycle.decide); None when it changes nothing."""
    state = State(Status(request.state), request.partner_id, request.accepted,
                  Consent(request.consent))
    try:
        return decide(state, fact)
    except Unchanged:
        return None


def in_school_first(deps: PartnersDeps, district_id: str) -> bool:
    """The district file's match_in_school_first (False for a district it does not list)."""
    district = deps.runtime.districts.get(district_id)
    return bool(district and district.match_in_school_first)


async def _carry_out(uow: UnitOfWork, request: ReferralRequest, move: Move, deps: PartnersDeps,
                     *, released_at: datetime, now: datetime) -> None:
    """Do what the lifecycle decided: free the partner's slot (as of ``released_at``), record
    an acceptance, then match (as of ``now``: the matched partner's contact is e-mailed a link
    to the referral) or take the state it named."""
    if move.release:
        await release_slot(uow, request, at=released_at, declined=move.declined)
    if move.accepted:
        request.accepted = True
    if move.match:  # the state becomes matched or no_partner
        await match(uow, request, now,
                    in_school_first=in_school_first(deps, request.district_id))
        await issue_link(uow, request, deps.links, now)
    else:
        request.state = move.to


async def on_referral_opened(uow: UnitOfWork, env: Envelope, ev: ReferralOpened,
                             deps: PartnersDeps) -> None:
    if await prefetch.get(uow, ReferralRequest, ev.referral_id) is not None:
        return
    now = deps.clock()
    request = ReferralRequest(
        referral_id=ev.referral_id, district_id=env.districtid, school_id=ev.school_id,
        family_id=ev.family_id, need=ev.need, urgency=ev.urgency, grade=ev.grade,
        consent=ev.consent, state=Status.awaiting_consent, tried_partners=[], attempts=0,
        opened_at=ev.opened_at, updated_at=now, accepted=False, ever_matched=False,
        declines=0,
    )
    prefetch.add(uow, request)
    # It waits for consent; the consent it was opened with is its first change.
    move = decide(State(Status.awaiting_consent), ConsentChanged(ev.consent))
    await _carry_out(uow, request, move, deps, released_at=now, now=now)


async def on_consent(uow: UnitOfWork, env: Envelope, ev: ConsentRecorded,
                     deps: PartnersDeps) -> None:
    """Given: match if it was waiting. Declined, or withdrawn after a match: never shared."""
    request = await _request(uow, env, ev.referral_id)
    move = _decide(request, ConsentChanged(ev.consent))
    if move is None:
        return  # the referral ended
    request.consent = ev.consent
    await _carry_out(uow, request, move, deps, released_at=ev.recorded_at, now=deps.clock())


async def on_declined(uow: UnitOfWork, env: Envelope, ev: ReferralDeclined,
                      deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    move = _decide(request, Declined(ev.partner_id))
    if move is None:
        return  # an old partner's late answer: the referral has moved on
    now = deps.clock()
    request.declines += 1
    await _carry_out(uow, request, move, deps, released_at=now, now=now)  # tried ones skipped


async def on_accepted(uow: UnitOfWork, env: Envelope, ev: ReferralAccepted,
                      deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    move = _decide(request, Accepted(ev.partner_id))
    if move is None:
        return  # another partner's, or already counted
    now = deps.clock()
    await _carry_out(uow, request, move, deps, released_at=now, now=now)
    waited = (env.time - request.matched_at).total_seconds() if request.matched_at else 0.0
    await add_to_stats(uow, ev.partner_id, request.district_id, accepted=1,
                       accept_seconds=max(0.0, waited))


async def on_referral_closed(uow: UnitOfWork, env: Envelope, ev: ReferralClosed,
                             deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    request.outcome = ev.outcome
    request.closed_at = ev.closed_at
    move = _decide(request, Ended())
    if move is not None:
        await _carry_out(uow, request, move, deps, released_at=ev.closed_at, now=deps.clock())


async def on_referral_cancelled(uow: UnitOfWork, env: Envelope, ev: ReferralCancelled,
                                deps: PartnersDeps) -> None:
    request = await _request(uow, env, ev.referral_id)
    request.closed_at = request.closed_at or env.time
    move = _decide(request, Ended())
    if move is not None:
        now = deps.clock()
        await _carry_out(uow, request, move, deps, released_at=now, now=now)


async def on_family_registered(uow: UnitOfWork, env: Envelope, ev: FamilyRegistered,
                               deps: PartnersDeps) -> None:
    known = await prefetch.get(uow, FamilyLanguage, (env.districtid, ev.family_id))
    if known is None:
        prefetch.add(uow, FamilyLanguage(district_id=env.districtid, family_id=ev.family_id,
                                         language=ev.preferred_language))
    else:
        known.language = ev.preferred_language


Batch = list[tuple[Envelope, Event]]


async def load_requests(uow: UnitOfWork, batch: Batch, deps: PartnersDeps
                        ) -> list[ReferralRequest]:
    """A batch's referral requests, in one statement (runtime.prefetch)."""
    return await prefetch.load(uow, ReferralRequest, [ev.referral_id for _, ev in batch])


async def load_for_matching(uow: UnitOfWork, batch: Batch, deps: PartnersDeps) -> None:
    """A batch's referral requests and the languages of their families, which a match reads."""
    requests = await load_requests(uow, batch, deps)
    families = [(env.districtid, ev.family_id) for env, ev in batch
                if isinstance(ev, ReferralOpened)]
    families += [(request.district_id, request.family_id) for request in requests]
    await prefetch.load(uow, FamilyLanguage, families)


async def load_languages(uow: UnitOfWork, batch: Batch, deps: PartnersDeps) -> None:
    await prefetch.load(uow, FamilyLanguage, [(env.districtid, ev.family_id)
                                              for env, ev in batch])


HANDLERS = {
    ReferralOpened: on_referral_opened,
    ConsentRecorded: on_consent,
    ReferralDeclined: on_declined,
    ReferralAccepted: on_accepted,
    ReferralClosed: on_referral_closed,
    ReferralCancelled: on_referral_cancelled,
    FamilyRegistered: on_family_registered,
}

PREFETCH = {
    ReferralOpened: load_for_matching,
    ConsentRecorded: load_for_matching,
    ReferralDeclined: load_for_matching,
    ReferralAccepted: load_requests,
    ReferralClosed: load_requests,
    ReferralCancelled: load_requests,
    FamilyRegistered: load_languages,
}
