"""A webhook delivery's lifecycle as a pure function: every status against every fact, each
move it allows and each it refuses (IllegalMove, a 409 for the replay command), and the stored
strings."""

import pytest

from runtime.errors import Conflict
from services.webhooks.lifecycle import (
    Delivered,
    Fact,
    Failed,
    IllegalMove,
    Replay,
    Status,
    decide,
)

S = Status
FACTS: list[Fact] = [Delivered(), Failed(1, 3), Failed(2, 3), Failed(3, 3), Failed(4, 3),
                     Failed(1, 3, final=True), Replay()]
# Every (status, fact) the lifecycle allows, and the status after. Anything else is refused.
ALLOWED: dict[tuple[Status, Fact], Status] = {
    (S.pending, Delivered()): S.delivered,
    (S.pending, Failed(1, 3)): S.pending,  # retried after a back-off
    (S.pending, Failed(2, 3)): S.pending,
    (S.pending, Failed(3, 3)): S.dead,  # the last attempt
    (S.pending, Failed(4, 3)): S.dead,  # past it (the setting was lowered meanwhile)
    (S.pending, Failed(1, 3, final=True)): S.dead,  # no point retrying: parked at once
    (S.dead, Replay()): S.pending,
}
ALL = [(status, fact) for status in Status for fact in FACTS]


@pytest.mark.parametrize(("status", "fact"), [pair for pair in ALL if pair in ALLOWED])
def test_an_allowed_fact_moves_the_delivery(status: Status, fact: Fact) -> None:
    assert decide(status, fact) == ALLOWED[status, fact]


@pytest.mark.parametrize(("status", "fact"), [pair for pair in ALL if pair not in ALLOWED])
def test_any_other_fact_is_refused_naming_the_status(status: Status, fact: Fact) -> None:
    with pytest.raises(IllegalMove) as refused:
        decide(status, fact)
    assert refused.value.current == status
    assert f"a webhook delivery that is {status} cannot" in str(refused.value)
    assert isinstance(refused.value, Conflict) and refused.value.status_code == 409


def test_only_a_pending_delivery_is_attempted_and_only_a_dead_one_replayed() -> None:
    refused = {pair for pair in ALL if pair not in ALLOWED}
    assert refused == ({(s, f) for s in (S.delivered, S.dead) for f in FACTS
                        if not isinstance(f, Replay)}
                       | {(s, Replay()) for s in (S.pending, S.delivered)})


def test_the_statuses_are_the_strings_stored_before() -> None:
    assert [s.value for s in Status] == ["pending", "delivered", "dead"]
    assert Status("dead") == "dead" and f"{Status.pending}" == "pending"


def test_an_unknown_fact_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        decide(S.pending, object())  # type: ignore[arg-type]
