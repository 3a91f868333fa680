"""A referral request's lifecycle in partners, as a pure function: every state against every
fact, each move it allows and each fact it refuses (Unchanged), and the stored strings."""

import pytest

from contracts.taxonomy import Consent
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

AWAITING = State(Status.awaiting_consent)
MATCHED = State(Status.matched, partner_id="p1")
ACCEPTED = State(Status.matched, partner_id="p1", accepted=True)
NO_PARTNER = State(Status.no_partner)
# The school's own supports were looked at and none could take it.
NO_PARTNER_INSIDE = State(Status.no_partner, consent=Consent.in_school)
CONSENT_DECLINED = State(Status.consent_declined)
ENDED = State(Status.ended)
STATES = [AWAITING, MATCHED, ACCEPTED, NO_PARTNER, NO_PARTNER_INSIDE, CONSENT_DECLINED, ENDED]

GIVEN = ConsentChanged(Consent.given)
INSIDE = ConsentChanged(Consent.in_school)
DECLINED = ConsentChanged(Consent.declined)
PENDING = ConsentChanged(Consent.pending)
FACTS: list[Fact] = [GIVEN, INSIDE, DECLINED, PENDING, Declined("p1"), Declined("p2"),
                     Accepted("p1"), Accepted("p2"), Ended()]

S = Status
# Every (state, fact) the lifecycle allows, and the move it makes. Anything else is Unchanged.
ALLOWED: dict[tuple[State, Fact], Move] = {
    # Consent given, or given for the school's own supports only: a waiting request, or one
    # declined before and given again, is matched; elsewhere it only records the consent.
    (AWAITING, GIVEN): Move(S.awaiting_consent, match=True),
    (MATCHED, GIVEN): Move(S.matched),
    (ACCEPTED, GIVEN): Move(S.matched),
    (NO_PARTNER, GIVEN): Move(S.no_partner),
    (CONSENT_DECLINED, GIVEN): Move(S.consent_declined, match=True),
    (AWAITING, INSIDE): Move(S.awaiting_consent, match=True),
    (MATCHED, INSIDE): Move(S.matched),
    (ACCEPTED, INSIDE): Move(S.matched),
    (NO_PARTNER, INSIDE): Move(S.no_partner),
    (NO_PARTNER_INSIDE, INSIDE): Move(S.no_partner),
    (CONSENT_DECLINED, INSIDE): Move(S.consent_declined, match=True),
    # Widened from inside the school to any partner after no in-school support could take it.
    (NO_PARTNER_INSIDE, GIVEN): Move(S.no_partner, match=True),
    (NO_PARTNER_INSIDE, DECLINED): Move(S.consent_declined),
    (NO_PARTNER_INSIDE, PENDING): Move(S.no_partner),
    (NO_PARTNER_INSIDE, Ended()): Move(S.ended),
    # Consent declined (or withdrawn after a match, which frees the partner's slot).
    (AWAITING, DECLINED): Move(S.consent_declined),
    (MATCHED, DECLINED): Move(S.consent_declined, release=True),
    (ACCEPTED, DECLINED): Move(S.consent_declined, release=True),
    (NO_PARTNER, DECLINED): Move(S.consent_declined),
    (CONSENT_DECLINED, DECLINED): Move(S.consent_declined),
    # Pending: nothing to do, the consent is recorded.
    (AWAITING, PENDING): Move(S.awaiting_consent),
    (MATCHED, PENDING): Move(S.matched),
    (ACCEPTED, PENDING): Move(S.matched),
    (NO_PARTNER, PENDING): Move(S.no_partner),
    (CONSENT_DECLINED, PENDING): Move(S.consent_declined),
    # The partner holding it declines: its slot is freed (a decline) and the next is matched.
    (MATCHED, Declined("p1")): Move(S.matched, release=True, declined=True, match=True),
    (ACCEPTED, Declined("p1")): Move(S.matched, release=True, declined=True, match=True),
    # The partner holding it accepts, once.
    (MATCHED, Accepted("p1")): Move(S.matched, accepted=True),
    # Closed or cancelled: it ends, and a matched one frees its slot.
    (AWAITING, Ended()): Move(S.ended),
    (MATCHED, Ended()): Move(S.ended, release=True),
    (ACCEPTED, Ended()): Move(S.ended, release=True),
    (NO_PARTNER, Ended()): Move(S.ended),
    (CONSENT_DECLINED, Ended()): Move(S.ended),
}
ALL = [(state, fact) for state in STATES for fact in FACTS]


@pytest.mark.parametrize(("state", "fact"), [pair for pair in ALL if pair in ALLOWED])
def test_an_allowed_fact_makes_its_move(state: State, fact: Fact) -> None:
    assert decide(state, fact) == ALLOWED[state, fact]


@pytest.mark.parametrize(("state", "fact"), [pair for pair in ALL if pair not in ALLOWED])
def test_any_other_fact_changes_nothing(state: State, fact: Fact) -> None:
    with pytest.raises(Unchanged):
        decide(state, fact)


def test_the_refused_facts_are_the_late_the_repeated_and_the_ended() -> None:
    refused = {pair for pair in ALL if pair not in ALLOWED}
    # Everything after the end; a partner's answer unless it holds the request; an acceptance
    # twice. Nothing else.
    assert refused == (
        {(ENDED, f) for f in FACTS}
        | {(s, f) for s in STATES for f in (Declined("p2"), Accepted("p2"))}
        | {(s, f) for s in (AWAITING, NO_PARTNER, NO_PARTNER_INSIDE, CONSENT_DECLINED)
           for f in (Declined("p1"), Accepted("p1"))}
        | {(ACCEPTED, Accepted("p1"))})


def test_a_move_frees_a_slot_only_where_a_partner_holds_one() -> None:
    for (state, _), move in ALLOWED.items():
        assert not move.release or state.status == Status.matched
        assert not move.declined or move.release


def test_the_states_are_the_strings_stored_before() -> None:
    assert [s.value for s in Status] == [
        "awaiting_consent", "matched", "no_partner", "consent_declined", "ended"]
    assert Status("matched") == "matched" and f"{Status.ended}" == "ended"


def test_an_unknown_fact_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        decide(AWAITING, object())  # type: ignore[arg-type]
