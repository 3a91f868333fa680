"""The referral's states and the only moves allowed between them, in one place."""

from enum import StrEnum

from runtime.errors import Conflict


class Status(StrEnum):
    opened = "opened"
    matched = "matched"
    no_partner = "no_partner"
    accepted = "accepted"
    family_contacted = "family_contacted"
    in_service = "in_service"
    closed = "closed"
    cancelled = "cancelled"


OPEN = frozenset(Status) - {Status.closed, Status.cancelled}
CLOSED = frozenset({Status.closed, Status.cancelled})

# Outreach starts at the match, so the family may be reached before or after the partner
# accepts: both orders lead to in_service.
MOVES: dict[Status, frozenset[Status]] = {
    Status.opened: frozenset({Status.matched, Status.no_partner}),
    Status.matched: frozenset(
        {Status.matched, Status.accepted, Status.no_partner, Status.family_contacted}
    ),
    Status.no_partner: frozenset({Status.matched}),
    Status.accepted: frozenset({Status.family_contacted, Status.in_service}),
    Status.family_contacted: frozenset({Status.accepted, Status.in_service, Status.matched}),
    Status.in_service: frozenset(),
    Status.closed: frozenset(),
    Status.cancelled: frozenset(),
}
for _status in OPEN:  # any open referral can be closed with an outcome, or cancelled
    MOVES[_status] = MOVES[_status] | {Status.closed, Status.cancelled}


class IllegalMove(Conflict):
    def __init__(self, current: Status, target: Status) -> None:
        super().__init__(f"a referral that is {current} cannot become {target}")
        self.current = current
        self.target = target


def check_move(current: Status, target: Status) -> None:
    if target not in MOVES[current]:
        raise IllegalMove(current, target)
