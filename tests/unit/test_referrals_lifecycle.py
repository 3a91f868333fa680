"""The referral state machine and the school calendar, as pure functions: examples and
properties over random sequences of commands and events (hypothesis)."""

from dataclasses import replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.taxonomy import Consent, Outcome, Urgency
from runtime.districts import District
from services.referrals.lifecycle import (
    CLOSED,
    MATCHED_PHASE,
    Accepted,
    Cancelled,
    Closed,
    ConsentChanged,
    Contacted,
    Declined,
    Fact,
    IllegalMove,
    InService,
    Matched,
    NoPartner,
    NotThePartner,
    State,
    Status,
    TooEarly,
    Unchanged,
    decide,
    replay,
)
from services.referrals.school_calendar import add_school_days, window_end

GIVEN = State(consent=Consent.given)


def run(state: State, *facts: Fact) -> State:
    for fact in facts:
        state = decide(state, fact)
    return state


def test_the_whole_path_partner_first_then_family() -> None:
    s = run(GIVEN, Matched("p1", 1))
    assert s.status == Status.matched and s.partner_id == "p1"
    s = decide(s, Accepted("p1"))
    assert s.status == Status.accepted
    s = decide(s, Contacted(automated=True))
    assert s.status == Status.family_contacted and s.accepted
    s = run(s, InService("p1"), Closed(Outcome.services_received))
    assert (s.status, s.outcome) == (Status.closed, Outcome.services_received)


def test_family_reached_before_the_partner_accepts() -> None:
    s = run(GIVEN, Matched("p1", 1), Contacted(automated=True))
    assert s.status == Status.family_contacted and not s.accepted
    with pytest.raises(IllegalMove, match="family_contacted cannot go into service"):
        decide(s, InService())
    s = decide(s, Accepted("p1"))
    assert s.status == Status.family_contacted and s.accepted
    assert decide(s, InService()).status == Status.in_service


def test_decline_then_rematch_to_the_next_partner() -> None:
    s = run(GIVEN, Matched("p1", 1), Contacted(automated=True), Declined("p1"))
    assert s.status == Status.declined and s.partner_id is None and not s.contacted
    with pytest.raises(TooEarly):  # outreach for the next match overtook PartnerMatched
        decide(s, Contacted(automated=True))
    with pytest.raises(Unchanged):  # the first match again (a late duplicate)
        decide(s, Matched("p1", 1))
    s = decide(s, Matched("p2", 2))
    assert (s.status, s.partner_id, s.attempt) == (Status.matched, "p2", 2)
    with pytest.raises(Unchanged):  # ignored once matched
        decide(s, NoPartner())
    s = run(GIVEN, Matched("p1", 1), Declined("p1"), NoPartner())
    assert s.status == Status.no_partner


def test_only_the_matched_partner_answers() -> None:
    s = decide(GIVEN, Matched("p1", 1))
    with pytest.raises(NotThePartner):
        decide(s, Accepted("p2"))
    with pytest.raises(NotThePartner):
        decide(s, Declined("p2"))
    with pytest.raises(IllegalMove, match="a referral that is opened cannot be accepted"):
        decide(GIVEN, Accepted("p1"))
    accepted = decide(s, Accepted("p1"))
    with pytest.raises(IllegalMove, match="already accepted"):
        decide(accepted, Declined("p1"))
    with pytest.raises(Unchanged):  # a retried accept is harmless
        decide(accepted, Accepted("p1"))


def test_matching_waits_for_consent_and_declined_consent_stays_in_school() -> None:
    pending = State()
    with pytest.raises(IllegalMove, match="consent is pending"):
        decide(pending, Matched("p1", 1))
    declined = decide(pending, ConsentChanged(Consent.declined))
    assert declined.status == Status.opened and declined.consent == Consent.declined
    with pytest.raises(IllegalMove):
        decide(declined, Matched("p1", 1))
    assert decide(declined, Closed(Outcome.no_longer_needed)).status == Status.closed
    given_ = decide(declined, ConsentChanged(Consent.given))  # the family changed its mind
    assert decide(given_, Matched("p1", 1)).status == Status.matched
    with pytest.raises(IllegalMove, match="consent_withdrawn"):
        decide(given_, ConsentChanged(Consent.declined))
    with pytest.raises(IllegalMove, match="back to pending"):
        decide(declined, ConsentChanged(Consent.pending))


def test_consent_inside_the_school_only_may_widen_but_never_narrow_once_given() -> None:
    inside = decide(State(), ConsentChanged(Consent.in_school))
    assert inside.consent == Consent.in_school
    assert decide(inside, Matched("counselor", 1)).status == Status.matched
    # None of the school's own supports could take it: the family agrees to outside partners.
    none_inside = decide(inside, NoPartner())
    widened = decide(none_inside, ConsentChanged(Consent.given))
    assert (widened.status, widened.consent) == (Status.no_partner, Consent.given)
    assert decide(widened, Matched("outside", 2)).status == Status.matched
    # Widening while a partner holds it is refused; so is narrowing or withdrawing after.
    with pytest.raises(IllegalMove, match="a partner holds it"):
        decide(decide(inside, Matched("counselor", 1)), ConsentChanged(Consent.given))
    with pytest.raises(IllegalMove, match="consent_withdrawn"):
        decide(GIVEN, ConsentChanged(Consent.in_school))
    with pytest.raises(IllegalMove, match="consent_withdrawn"):
        decide(inside, ConsentChanged(Consent.declined))


def test_ended_referrals_take_nothing_more() -> None:
    for end in (Closed(Outcome.unable_to_contact), Cancelled()):
        s = run(GIVEN, Matched("p1", 1), end)
        for command in (Accepted("p1"), Declined("p1"), InService("p1"),
                        Closed(Outcome.services_received), Cancelled(),
                        ConsentChanged(Consent.declined)):
            with pytest.raises(IllegalMove, match=f"a referral that is {s.status} cannot"):
                decide(s, command)
        for event in (Matched("p2", 2), NoPartner(), Contacted(automated=True)):
            with pytest.raises(Unchanged):
                decide(s, event)


# --- properties ------------------------------------------------------------------------------

PARTNERS = st.sampled_from(["p1", "p2", "p3"])
FACTS = st.one_of(
    st.builds(Matched, PARTNERS, st.integers(1, 4)),
    st.just(NoPartner()),
    st.builds(Accepted, PARTNERS),
    st.builds(Declined, PARTNERS),
    st.builds(Contacted, st.booleans()),
    st.builds(InService, st.one_of(st.none(), PARTNERS)),
    st.builds(Closed, st.sampled_from(list(Outcome))),
    st.just(Cancelled()),
    st.builds(ConsentChanged, st.sampled_from(list(Consent))),
)
REJECTED = (IllegalMove, NotThePartner, TooEarly)


def legal(state: State) -> None:
    """What must hold in every reachable state."""
    assert state.status in Status
    if state.status in MATCHED_PHASE | {Status.in_service}:
        assert state.partner_id is not None and state.consent.shares
        assert state.attempt >= 1
    else:
        assert state.partner_id is None or state.status in CLOSED
    if state.status == Status.in_service:
        assert state.accepted
    if state.status == Status.accepted:
        assert state.accepted and not state.contacted
    if state.status == Status.family_contacted:
        assert state.contacted
    assert (state.outcome is not None) == (state.status == Status.closed)


def timeline_data(fact: Fact, applied: bool) -> tuple[str, dict[str, object]]:
    """The timeline entry the service writes for a fact (as the events carry it)."""
    match fact:
        case Matched(partner_id=p, attempt=a):
            entry = ("PartnerMatched", {"partner_id": p, "attempt": a})
        case NoPartner():
            entry = ("NoPartnerAvailable", {})
        case Accepted(partner_id=p):
            entry = ("ReferralAccepted", {"partner_id": p})
        case Declined(partner_id=p):
            entry = ("ReferralDeclined", {"partner_id": p})
        case Contacted(automated=auto):
            entry = ("FamilyContacted", {"outreach_id": "o1" if auto else None})
        case InService(partner_id=p):
            entry = ("ReferralInService", {"partner_id": p})
        case Closed(outcome=o):
            entry = ("ReferralClosed", {"outcome": o.value})
        case Cancelled():
            entry = ("ReferralCancelled", {})
        case ConsentChanged(consent=c):
            entry = ("ConsentRecorded", {"consent": c.value})
    return entry[0], {**entry[1], "applied": applied}


@settings(max_examples=400, deadline=None)
@given(consent=st.sampled_from(list(Consent)), facts=st.lists(FACTS, max_size=30))
def test_no_sequence_reaches_an_illegal_state_and_replay_rebuilds_it(
    consent: Consent, facts: list[Fact]
) -> None:
    state = State(consent=consent)
    timeline: list[tuple[str, dict[str, object]]] = [("ReferralOpened",
                                                      {"consent": consent.value})]
    for fact in facts:
        before = state
        try:
            state = decide(state, fact)
        except REJECTED:
            assert state == before  # a refused fact leaves no trace
            continue
        except Unchanged:
            timeline.append(timeline_data(fact, applied=False))  # kept, changes nothing
            continue
        legal(state)
        if before.status in CLOSED:
            raise AssertionError(f"{fact} moved an ended referral")
        timeline.append(timeline_data(fact, applied=True))
    assert replay(timeline) == state


@settings(max_examples=200, deadline=None)
@given(facts=st.lists(FACTS, max_size=30))
def test_commands_are_idempotent(facts: list[Fact]) -> None:
    """Applying a fact that just applied again changes nothing (a retried HTTP request)."""
    state = GIVEN
    for fact in facts:
        try:
            state = decide(state, fact)
        except (*REJECTED, Unchanged):
            continue
        if isinstance(fact, Matched | Closed | Cancelled):
            continue  # a second close is refused (409), a second match is an older attempt
        try:
            again = decide(state, fact)
        except (Unchanged, IllegalMove, TooEarly):
            continue
        assert again == state or isinstance(fact, Declined | NoPartner), fact


def test_derived_status_cannot_be_forged() -> None:
    """The status follows the flags, whatever order the facts came in."""
    a = run(GIVEN, Matched("p1", 1), Accepted("p1"), Contacted(True))
    b = run(GIVEN, Matched("p1", 1), Contacted(True), Accepted("p1"))
    assert a == b == replace(a, status=Status.family_contacted)


# --- the school calendar ---------------------------------------------------------------------

LA = ZoneInfo("America/Los_Angeles")
DISTRICT = District(id="d", name="D", timezone="America/Los_Angeles", schools=[],
                    non_school_days=[date(2026, 11, 26), date(2026, 11, 27)])


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=LA)  # type: ignore[misc]


def test_school_days_skip_weekends_and_holidays_in_the_district_zone() -> None:
    friday = local(2026, 11, 20, 15, 0)
    assert add_school_days(friday, 1, LA) == local(2026, 11, 23, 15, 0).astimezone(UTC)
    saturday = local(2026, 11, 21, 10, 0)
    assert add_school_days(saturday, 1, LA) == local(2026, 11, 23, 10, 0)
    wednesday = local(2026, 11, 25, 9, 30)  # Thanksgiving Thursday and Friday off
    assert add_school_days(wednesday, 1, LA, DISTRICT.non_school_days) == \
        local(2026, 11, 30, 9, 30)
    # 5 school days from Monday 23 Nov: 24, 25, 30 Nov, 1, 2 Dec
    assert window_end(local(2026, 11, 23, 8, 0), Urgency.routine, DISTRICT) == \
        local(2026, 12, 2, 8, 0)
    # Evening in Los Angeles is already the next day in UTC: the local day counts.
    evening = local(2026, 11, 20, 20, 0)  # Friday 20:00 PST = Saturday 04:00 UTC
    assert add_school_days(evening.astimezone(UTC), 1, LA) == local(2026, 11, 23, 20, 0)


def test_school_days_keep_the_wall_clock_across_dst() -> None:
    before = local(2026, 10, 30, 9, 0)  # Friday, PDT; DST ends Sunday 1 Nov
    after = add_school_days(before, 1, LA)
    assert after == local(2026, 11, 2, 9, 0) and after.astimezone(LA).hour == 9
    assert (after - before).total_seconds() == (3 * 24 + 1) * 3600


def test_crisis_windows_are_hours_even_on_a_weekend() -> None:
    saturday_night = local(2026, 11, 21, 23, 30)
    assert window_end(saturday_night, Urgency.crisis, DISTRICT) == local(2026, 11, 22, 0, 30)
    assert window_end(saturday_night, Urgency.urgent, DISTRICT) == local(2026, 11, 23, 23, 30)
