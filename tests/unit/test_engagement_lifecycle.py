"""Outreach's lifecycle (services/engagement/lifecycle.py): every move it allows and every one
it refuses or ignores, as a pure function; and the stored strings stay the ones the table has
always held."""

import pytest

from services.engagement.lifecycle import (
    ENDED,
    OPEN,
    Answered,
    AttemptRequested,
    AttemptSent,
    Fact,
    GaveUp,
    IllegalMove,
    OutreachStatus,
    Unchanged,
    decide,
    out_of_attempts,
)

S = OutreachStatus


def test_the_stored_strings_are_unchanged() -> None:
    assert [s.value for s in S] == ["requested", "awaiting_reply", "contacted", "unreachable"]
    assert S("awaiting_reply") is S.awaiting_reply and S.contacted == "contacted"
    assert set(S) == OPEN | ENDED and not OPEN & ENDED


@pytest.mark.parametrize(("status", "fact", "after"), [
    (S.requested, AttemptRequested(), S.requested),  # the first attempt of a new outreach
    (S.awaiting_reply, AttemptRequested(), S.requested),  # the next after a silence
    (S.requested, AttemptSent(), S.awaiting_reply),
    (S.awaiting_reply, AttemptSent(), S.awaiting_reply),  # a second send waits again
    (S.requested, Answered(), S.contacted),
    (S.awaiting_reply, Answered(), S.contacted),
    (S.unreachable, Answered(), S.contacted),  # an answer after we gave up still counts
    (S.requested, GaveUp(), S.unreachable),  # no channel may be used
    (S.awaiting_reply, GaveUp(), S.unreachable),  # the last attempt went unanswered
])
def test_allowed_moves(status: OutreachStatus, fact: Fact, after: OutreachStatus) -> None:
    assert decide(status, fact) is after


@pytest.mark.parametrize(("status", "fact"), [
    (S.contacted, AttemptSent()),  # answered while the message was on its way
    (S.unreachable, AttemptSent()),
    (S.contacted, Answered()),  # a second answer is only logged
    (S.contacted, GaveUp()),  # a failure report after the family answered
    (S.unreachable, GaveUp()),
])
def test_facts_that_come_too_late_change_nothing(status: OutreachStatus, fact: Fact) -> None:
    with pytest.raises(Unchanged):
        decide(status, fact)


@pytest.mark.parametrize("status", sorted(ENDED))
def test_an_ended_outreach_is_never_attempted_again(status: OutreachStatus) -> None:
    with pytest.raises(IllegalMove) as refused:
        decide(status, AttemptRequested())
    assert refused.value.status_code == 409 and refused.value.current is status


def test_not_a_fact() -> None:
    with pytest.raises(TypeError):
        decide(S.requested, "answered")  # type: ignore[arg-type]


def test_the_last_try() -> None:
    assert not out_of_attempts(2, 3)
    assert out_of_attempts(3, 3) and out_of_attempts(4, 3)
