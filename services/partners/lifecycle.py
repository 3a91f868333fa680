"""A referral request's states and the only moves between them, in one place.

Partners follows referrals: each event referrals publishes is a fact, and ``decide(state, fact)``
says what it does to the request (``Move``): the state it goes to, whether the slot its partner
holds is freed first, and whether to look for a partner (matching then decides between
``matched`` and ``no_partner``). A fact that changes nothing (a late answer from a partner that
no longer holds it, a redelivery, consent after the referral ended) raises ``Unchanged``: the
handler leaves the request as it is. Pure: no I/O, no clock.

    awaiting_consent, consent_declined --given or in_school--> (match) --> matched | no_partner
    no_partner (inside the school only) --consent given--> (match) --> matched | no_partner
    awaiting_consent, no_partner, matched --consent declined--> consent_declined
    matched --its partner declines--> (free the slot, match the next) --> matched | no_partner
    any but ended --closed or cancelled--> ended (a matched one frees its slot)
"""

from dataclasses import dataclass
from enum import StrEnum

from contracts.taxonomy import Consent


class Status(StrEnum):
    """``referral_requests.state``: the stored strings, unchanged."""

    awaiting_consent = "awaiting_consent"  # consent pending: nothing may be shared yet
    matched = "matched"  # a partner's service holds a slot for it
    no_partner = "no_partner"  # the last look found no eligible service
    consent_declined = "consent_declined"  # declined or withdrawn: matched only if given again
    ended = "ended"  # closed or cancelled


@dataclass(frozen=True)
class State:
    """What the lifecycle reads of a request. A new one is ``State(Status.awaiting_consent)``;
    the consent it was opened with is then its first ConsentChanged."""

    status: Status
    partner_id: str | None = None  # the partner holding it, while matched
    accepted: bool = False  # that partner accepted it
    consent: Consent = Consent.pending  # the consent matching last went by


# --- facts (what referrals reported) ---------------------------------------------------------


@dataclass(frozen=True)
class ConsentChanged:
    consent: Consent


@dataclass(frozen=True)
class Declined:
    partner_id: str


@dataclass(frozen=True)
class Accepted:
    partner_id: str


@dataclass(frozen=True)
class Ended:
    """The referral was closed or cancelled."""


Fact = ConsentChanged | Declined | Accepted | Ended


# --- what a fact does ------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    to: Status  # the state after; with ``match``, matching replaces it (matched or no_partner)
    release: bool = False  # first free the slot the current partner holds
    match: bool = False  # then look for a partner (the tried ones are skipped)
    declined: bool = False  # the freed slot counts as the partner's decline
    accepted: bool = False  # the current partner accepted


class Unchanged(Exception):
    """The fact changes nothing: a redelivery, an answer from a partner that no longer holds
    the request, or anything after it ended."""


def decide(state: State, fact: Fact) -> Move:
    """The move ``fact`` makes from ``state``, or Unchanged."""
    s = state.status
    if s == Status.ended:
        raise Unchanged(f"the request ended; {type(fact).__name__} changes nothing")
    match fact:
        case ConsentChanged(consent=Consent.given | Consent.in_school as consent):
            # Referrals refuses a change once consent was given or the request shared, except
            # widening (in_school to given) and given again after a decline, before a match.
            if s in (Status.awaiting_consent, Status.consent_declined):
                return Move(s, match=True)
            if s == Status.no_partner and state.consent == Consent.in_school \
                    and consent == Consent.given:
                return Move(s, match=True)  # widened: outside partners may now be looked at
            return Move(s)  # already matched or tried
        case ConsentChanged(consent=Consent.declined):
            return Move(Status.consent_declined, release=s == Status.matched)
        case ConsentChanged():
            return Move(s)  # pending again: nothing to do
        case Declined(partner_id=partner):
            if s != Status.matched or partner != state.partner_id:
                raise Unchanged(f"{partner} does not hold the request (it is {s})")
            return Move(s, release=True, declined=True, match=True)
        case Accepted(partner_id=partner):
            if s != Status.matched or partner != state.partner_id:
                raise Unchanged(f"{partner} does not hold the request (it is {s})")
            if state.accepted:
                raise Unchanged(f"{partner} already accepted")
            return Move(s, accepted=True)
        case Ended():
            return Move(Status.ended, release=s == Status.matched)
    raise TypeError(f"unknown fact {fact!r}")
