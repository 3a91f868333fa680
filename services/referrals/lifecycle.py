"""The referral's states and the only moves allowed between them, in one place.

``decide(state, fact)`` is the whole state machine: a pure function from the current state and
one fact (a coordinator's or partner's command, or an event another service reported) to the
next state. Everything that changes a referral goes through it, and replaying a referral's
timeline through it rebuilds the stored state.

Outreach starts at the match, so the family may be reached before or after the partner
accepts. The model keeps the two as flags of the matched phase and derives the status from
them: matched -> accepted / family_contacted (whichever happened; contacted wins once both
did) -> in_service (needs the partner's acceptance).
"""

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from contracts.taxonomy import Consent, Outcome
from runtime.errors import Conflict, DomainError


class Status(StrEnum):
    opened = "opened"
    matched = "matched"
    declined = "declined"  # the partner declined; partners is finding the next one
    no_partner = "no_partner"
    accepted = "accepted"
    family_contacted = "family_contacted"
    in_service = "in_service"
    closed = "closed"
    cancelled = "cancelled"


OPEN = frozenset(Status) - {Status.closed, Status.cancelled}
CLOSED = frozenset({Status.closed, Status.cancelled})
MATCHED_PHASE = frozenset({Status.matched, Status.accepted, Status.family_contacted})
WITHOUT_PARTNER = frozenset({Status.opened, Status.declined, Status.no_partner})


@dataclass(frozen=True)
class State:
    status: Status = Status.opened
    consent: Consent = Consent.pending
    partner_id: str | None = None
    attempt: int = 0  # the match attempt partners last reported
    accepted: bool = False  # the current partner accepted
    contacted: bool = False  # the family was reached since the current match (or before any)
    outcome: Outcome | None = None


# --- facts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matched:
    partner_id: str
    attempt: int


@dataclass(frozen=True)
class NoPartner:
    pass


@dataclass(frozen=True)
class Accepted:
    partner_id: str


@dataclass(frozen=True)
class Declined:
    partner_id: str


@dataclass(frozen=True)
class Contacted:
    automated: bool  # reached by the outreach a match started (not a coordinator's call)


@dataclass(frozen=True)
class InService:
    partner_id: str | None = None


@dataclass(frozen=True)
class Closed:
    outcome: Outcome


@dataclass(frozen=True)
class Cancelled:
    pass


@dataclass(frozen=True)
class ConsentChanged:
    consent: Consent


Fact = Matched | NoPartner | Accepted | Declined | Contacted | InService | Closed | Cancelled | \
    ConsentChanged


# --- outcomes other than a new state ---------------------------------------------------------


class IllegalMove(Conflict):
    """HTTP 409 for a command; for a reported event, kept in the timeline as not applied."""

    def __init__(self, current: Status, what: str, why: str = "") -> None:
        message = f"a referral that is {current} cannot {what}"
        super().__init__(f"{message}: {why}" if why else message)
        self.current = current


class NotThePartner(DomainError):
    status_code = 403

    def __init__(self, partner_id: str) -> None:
        super().__init__(f"only the matched partner may answer; {partner_id} is not it")


class TooEarly(Exception):
    """An event overtook the one it follows (the consumer retries it later)."""


class Unchanged(Exception):
    """The fact is already true, or no longer matters: nothing to apply (idempotent)."""


# --- the machine -----------------------------------------------------------------------------


def widens(before: Consent, after: Consent) -> bool:
    """From sharing inside the school only to sharing with any partner."""
    return before == Consent.in_school and after == Consent.given


def _derive(state: State) -> State:
    if state.status not in MATCHED_PHASE:
        return state
    if state.contacted:
        return replace(state, status=Status.family_contacted)
    return replace(state, status=Status.accepted if state.accepted else Status.matched)


def decide(state: State, fact: Fact) -> State:
    """The next state, or IllegalMove / NotThePartner / TooEarly / Unchanged."""
    s = state.status
    closed = s in CLOSED
    match fact:
        case Matched(partner_id=partner, attempt=attempt):
            if closed or attempt <= state.attempt:
                raise Unchanged  # an earlier attempt, or the referral ended meanwhile
            if s not in WITHOUT_PARTNER:
                raise IllegalMove(s, "be matched again", f"partner {state.partner_id} holds it")
            if not state.consent.shares:
                raise IllegalMove(s, "be matched", f"consent is {state.consent}")
            return _derive(State(Status.matched, state.consent, partner, attempt))
        case NoPartner():
            if s in (Status.opened, Status.declined):
                return replace(state, status=Status.no_partner, partner_id=None, accepted=False)
            raise Unchanged  # already without partner, matched since, or ended
        case Accepted(partner_id=partner):
            if s not in MATCHED_PHASE:
                raise IllegalMove(s, "be accepted", "no partner is matched")
            if partner != state.partner_id:
                raise NotThePartner(partner)
            if state.accepted:
                raise Unchanged
            return _derive(replace(state, accepted=True))
        case Declined(partner_id=partner):
            if s not in MATCHED_PHASE:
                raise IllegalMove(s, "be declined", "no partner is matched")
            if partner != state.partner_id:
                raise NotThePartner(partner)
            if state.accepted:
                raise IllegalMove(s, "be declined", "the partner already accepted it")
            return replace(state, status=Status.declined, partner_id=None, accepted=False,
                           contacted=False)
        case Contacted(automated=automated):
            if closed or s == Status.in_service or state.contacted:
                raise Unchanged
            if automated and s in (Status.opened, Status.declined):
                raise TooEarly(f"referral is {s}; the match this contact follows is not here yet")
            return _derive(replace(state, contacted=True))
        case InService(partner_id=partner):
            if s == Status.in_service and partner in (None, state.partner_id):
                raise Unchanged
            if s not in MATCHED_PHASE:
                raise IllegalMove(s, "go into service", "no partner is matched")
            if partner is not None and partner != state.partner_id:
                raise NotThePartner(partner)
            if not state.accepted:
                raise IllegalMove(s, "go into service", "the partner has not accepted it")
            return replace(state, status=Status.in_service)
        case Closed(outcome=outcome):
            if closed:
                raise IllegalMove(s, "be closed")
            return replace(state, status=Status.closed, outcome=Outcome(outcome))
        case Cancelled():
            if closed:
                raise IllegalMove(s, "be cancelled")
            return replace(state, status=Status.cancelled)
        case ConsentChanged(consent=consent):
            return _consent(state, Consent(consent))
    raise TypeError(f"unknown fact {fact!r}")


def _consent(state: State, consent: Consent) -> State:
    """Consent recorded: pending only at first; widening from inside the school to any partner
    while no partner holds it; otherwise only before it may have been shared."""
    s = state.status
    if s in CLOSED:
        raise IllegalMove(s, "record consent")
    if consent == state.consent:
        raise Unchanged
    if consent == Consent.pending:
        raise IllegalMove(s, "record consent", "consent cannot go back to pending")
    if widens(state.consent, consent):
        # Inside the school to any partner: nothing shared is taken back. Before a
        # match, or after none of the school's own supports could take it.
        if s not in (Status.opened, Status.no_partner):
            raise IllegalMove(s, "record consent", "a partner holds it")
        return replace(state, consent=Consent(consent))
    if state.consent.shares:
        raise IllegalMove(s, "record consent", "consent was given and the referral may "
                          "already be shared; cancel it (reason consent_withdrawn)")
    if s != Status.opened:
        raise IllegalMove(s, "record consent")
    return replace(state, consent=Consent(consent))


# --- the timeline as facts -------------------------------------------------------------------


def fact_of(event_type: str, data: dict[str, Any]) -> Fact | None:
    """The fact a timeline entry carries; None for entries that do not move the lifecycle."""
    match event_type:
        case "PartnerMatched":
            return Matched(data["partner_id"], int(data["attempt"]))
        case "NoPartnerAvailable":
            return NoPartner()
        case "ReferralAccepted":
            return Accepted(data["partner_id"])
        case "ReferralDeclined":
            return Declined(data["partner_id"])
        case "FamilyContacted":
            return Contacted(automated=data.get("outreach_id") is not None)
        case "ReferralInService":
            return InService(data.get("partner_id"))
        case "ReferralClosed":
            return Closed(Outcome(data["outcome"]))
        case "ReferralCancelled":
            return Cancelled()
        case "ConsentRecorded":
            return ConsentChanged(Consent(data["consent"]))
    return None


def replay(entries: list[tuple[str, dict[str, Any]]]) -> State:
    """Rebuild a referral's state from its timeline (event type, data), oldest first."""
    (first_type, first), *rest = entries
    assert first_type == "ReferralOpened", first_type
    state = State(consent=Consent(first["consent"]))
    for event_type, data in rest:
        fact = fact_of(event_type, data)
        if fact is None or data.get("applied") is False:
            continue
        state = decide(state, fact)
    return state
