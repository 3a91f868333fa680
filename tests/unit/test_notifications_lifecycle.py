"""A message's lifecycle (services/notifications/lifecycle.py): every move it allows and every
one it refuses or ignores, as a pure function; and the stored strings stay the ones the table
has always held."""

import pytest

from services.notifications.lifecycle import (
    DONE,
    PENDING,
    Claimed,
    Delivered,
    Fact,
    FamilyErased,
    GaveUp,
    IllegalMove,
    MessageStatus,
    NotDelivered,
    Requeued,
    Sent,
    Unchanged,
    decide,
    initial,
)

S = MessageStatus


def test_the_stored_strings_are_unchanged() -> None:
    assert [s.value for s in S] == ["queued", "sending", "sent", "delivered", "failed"]
    assert {"queued", "sending"} == PENDING and {"sent", "delivered"} == DONE


def test_a_new_message_is_queued_unless_no_channel_may_be_used() -> None:
    assert initial(["sms", "email"]) is S.queued
    assert initial([]) is S.failed


@pytest.mark.parametrize(("status", "fact", "after"), [
    (S.queued, Claimed(), S.sending),
    (S.sending, Claimed(), S.sending),  # its lease ran out: another round takes it
    (S.sending, Sent(), S.sent),
    (S.sending, Requeued(), S.queued),  # held, retried later, or the other channel next
    (S.sending, GaveUp(), S.failed),
    (S.sent, Delivered(), S.delivered),
    (S.sent, NotDelivered(other_channel=True), S.queued),
    (S.sent, NotDelivered(other_channel=False), S.failed),
    (S.queued, FamilyErased(), S.failed),  # an erased family's message never goes
    (S.sending, FamilyErased(), S.failed),
])
def test_allowed_moves(status: MessageStatus, fact: Fact, after: MessageStatus) -> None:
    assert decide(status, fact) is after


@pytest.mark.parametrize("status", [S.sent, S.delivered, S.failed])
def test_only_a_pending_message_is_claimed(status: MessageStatus) -> None:
    with pytest.raises(IllegalMove) as refused:
        decide(status, Claimed())
    assert refused.value.current is status


@pytest.mark.parametrize(("status", "fact"), [
    # A round's outcome for a message that moved on meanwhile (a delivery report came first).
    *[(s, f) for s in (S.queued, S.sent, S.delivered, S.failed)
      for f in (Sent(), Requeued(), GaveUp())],
    # Reports again, or for a message that has moved on (failed, then undelivered).
    *[(s, f) for s in (S.queued, S.sending, S.delivered, S.failed)
      for f in (Delivered(), NotDelivered(other_channel=True),
                NotDelivered(other_channel=False))],
])
def test_facts_that_come_too_late_change_nothing(status: MessageStatus, fact: Fact) -> None:
    with pytest.raises(Unchanged):
        decide(status, fact)


@pytest.mark.parametrize("status", [S.sent, S.delivered, S.failed])
def test_an_erasure_leaves_a_finished_message_as_it_was(status: MessageStatus) -> None:
    with pytest.raises(Unchanged):
        decide(status, FamilyErased())


def test_not_a_fact() -> None:
    with pytest.raises(TypeError):
        decide(S.sending, "sent")  # type: ignore[arg-type]
