"""A webhook delivery's states and the only moves between them, in one place.

    pending --2xx--> delivered
    pending --failed, attempts left--> pending (retried after a back-off)
    pending --failed, the last attempt or no point retrying--> dead (parked as a dead letter)
    dead --an admin replays it--> pending (its attempts start again)

``decide(status, fact)`` is the whole machine: the dispatcher records each attempt's answer
through it, the replay route its command. Pure: no I/O, no clock.
"""

from dataclasses import dataclass
from enum import StrEnum

from runtime.errors import Conflict


class Status(StrEnum):
    """``webhook_deliveries.status``: the stored strings, unchanged."""

    pending = "pending"  # waiting for its next attempt, or in flight
    delivered = "delivered"  # the receiver answered 2xx
    dead = "dead"  # every attempt failed, or the address was refused: a dead letter


@dataclass(frozen=True)
class Delivered:
    """The receiver answered 2xx."""


@dataclass(frozen=True)
class Failed:
    attempt: int  # the attempt that failed, from 1
    max_attempts: int  # the deployment's ENSEMBLE_WEBHOOKS_MAX_ATTEMPTS
    final: bool = False  # no point retrying (a refused address): parked now


@dataclass(frozen=True)
class Replay:
    """A district admin or integrator replays the delivery's dead letter."""


Fact = Delivered | Failed | Replay


class IllegalMove(Conflict):
    """HTTP 409 for a command; the dispatcher skips an answer for a delivery that is no longer
    pending."""

    def __init__(self, current: Status, what: str) -> None:
        super().__init__(f"a webhook delivery that is {current} cannot {what}")
        self.current = current


def decide(status: Status, fact: Fact) -> Status:
    """The status after ``fact``, or IllegalMove."""
    match fact:
        case Delivered():
            if status != Status.pending:
                raise IllegalMove(status, "be delivered")
            return Status.delivered
        case Failed(attempt=attempt, max_attempts=most, final=final):
            if status != Status.pending:
                raise IllegalMove(status, "fail an attempt")
            return Status.dead if final or attempt >= most else Status.pending
        case Replay():
            if status != Status.dead:
                raise IllegalMove(status, "be replayed")
            return Status.pending
    raise TypeError(f"unknown fact {fact!r}")
