"""An outreach's states and the only moves between them, in one place.

An outreach is one effort to reach a family about a referral: attempts are asked of
notifications (requested), each sent one waits for the family's answer (awaiting_reply), until
the family answers or a person reaches it (contacted) or the attempts run out (unreachable).
``decide(status, fact)`` is the whole machine: pure, no I/O. The stored strings are the enum's
values (``Outreach.status`` is a plain string column).
"""

from dataclasses import dataclass
from enum import StrEnum

from runtime.errors import Conflict


class OutreachStatus(StrEnum):
    requested = "requested"  # an attempt was asked of notifications
    awaiting_reply = "awaiting_reply"  # it was sent; the family has until next_check_at
    contacted = "contacted"  # the family answered, or a person reached it
    unreachable = "unreachable"  # the attempts ran out, or every channel failed for good


OPEN = frozenset({OutreachStatus.requested, OutreachStatus.awaiting_reply})
ENDED = frozenset({OutreachStatus.contacted, OutreachStatus.unreachable})


# --- facts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptRequested:
    """The next attempt is asked of notifications (the first at the match, then after a
    silence)."""


@dataclass(frozen=True)
class AttemptSent:
    """Notifications sent an attempt: wait for the answer."""


@dataclass(frozen=True)
class Answered:
    """The family answered (a reply), or a coordinator reached it (a logged contact)."""


@dataclass(frozen=True)
class GaveUp:
    """The last attempt went unanswered, every channel failed for good, or none may be used."""


Fact = AttemptRequested | AttemptSent | Answered | GaveUp


# --- outcomes other than a new status --------------------------------------------------------


class IllegalMove(Conflict):
    def __init__(self, current: OutreachStatus, fact: Fact) -> None:
        super().__init__(f"an outreach that is {current} cannot take {type(fact).__name__}")
        self.current = current


class Unchanged(Exception):
    """The fact no longer matters (the outreach ended, or was answered before): nothing to
    apply, and nothing to announce."""


# --- the machine -----------------------------------------------------------------------------


def decide(status: OutreachStatus, fact: Fact) -> OutreachStatus:
    """The next status, or IllegalMove / Unchanged."""
    match fact:
        case AttemptRequested():
            if status in ENDED:
                raise IllegalMove(status, fact)
            return OutreachStatus.requested
        case AttemptSent():
            if status in ENDED:
                raise Unchanged  # answered or given up while the message was on its way
            return OutreachStatus.awaiting_reply
        case Answered():
            # Even after it was given up on: an answer is an answer. A second one is only
            # logged.
            if status == OutreachStatus.contacted:
                raise Unchanged
            return OutreachStatus.contacted
        case GaveUp():
            if status in ENDED:
                raise Unchanged
            return OutreachStatus.unreachable
    raise TypeError(f"not an outreach fact: {fact!r}")


def out_of_attempts(attempts: int, max_attempts: int) -> bool:
    """After a silence or an unanswered call: whether that was the last try."""
    return attempts >= max_attempts
