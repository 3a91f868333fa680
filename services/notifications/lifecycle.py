"""A message's states and the only moves between them, in one place.

A message is queued, claimed by the dispatcher for a round (sending, under a lease), then sent,
or queued again (held by quiet hours or the daily cap, a transient failure to retry, or the
family's other channel next), or failed for good. The provider's report moves a sent SMS on:
delivered, or the other channel, or failed. ``decide(status, fact)`` is the whole machine:
pure, no I/O. The stored strings are the enum's values (``Message.status`` is a plain string
column).
"""

from dataclasses import dataclass
from enum import StrEnum


class MessageStatus(StrEnum):
    queued = "queued"  # waiting for its next_attempt_at
    sending = "sending"  # claimed by a dispatcher round until its lease runs out
    sent = "sent"  # a provider took it
    delivered = "delivered"  # the provider reports it reached the handset
    failed = "failed"  # for good, on every channel the family allows


PENDING = frozenset({MessageStatus.queued, MessageStatus.sending})  # the dispatcher's backlog
DONE = frozenset({MessageStatus.sent, MessageStatus.delivered})  # counted as delivered


def initial(channels: list[str]) -> MessageStatus:
    """A new message: queued, or failed at once when the family allows no channel."""
    return MessageStatus.queued if channels else MessageStatus.failed


# --- facts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A dispatcher round takes the message (a queued one, or one whose lease ran out)."""


@dataclass(frozen=True)
class Sent:
    """The round's provider took it."""


@dataclass(frozen=True)
class Requeued:
    """The round puts it back: held, a retry later, or the family's other channel next."""


@dataclass(frozen=True)
class GaveUp:
    """The round gives up: no channel left, or the tries ran out."""


@dataclass(frozen=True)
class Delivered:
    """The provider reports the SMS delivered."""


@dataclass(frozen=True)
class NotDelivered:
    """The provider reports the SMS failed or undelivered: the other channel when the family
    has one, else failed."""

    other_channel: bool


@dataclass(frozen=True)
class FamilyErased:
    """The family was erased: a message not yet sent never goes (failed)."""


Fact = Claimed | Sent | Requeued | GaveUp | Delivered | NotDelivered | FamilyErased


# --- outcomes other than a new status --------------------------------------------------------


class IllegalMove(Exception):
    """A move the dispatcher never asks for (a bug, not a request: no HTTP answer)."""

    def __init__(self, current: MessageStatus, fact: Fact) -> None:
        super().__init__(f"a message that is {current} cannot take {type(fact).__name__}")
        self.current = current


class Unchanged(Exception):
    """The fact came too late to matter (the message moved on meanwhile): nothing to apply."""


# --- the machine -----------------------------------------------------------------------------


def decide(status: MessageStatus, fact: Fact) -> MessageStatus:
    """The next status, or IllegalMove / Unchanged."""
    match fact:
        case Claimed():
            if status not in PENDING:
                raise IllegalMove(status, fact)
            return MessageStatus.sending
        case Sent() | Requeued() | GaveUp():
            if status != MessageStatus.sending:
                raise Unchanged  # another round, or a report, moved it on
            return {Sent: MessageStatus.sent, Requeued: MessageStatus.queued,
                    GaveUp: MessageStatus.failed}[type(fact)]
        case Delivered():
            if status != MessageStatus.sent:
                raise Unchanged  # reported before, or the message moved on
            return MessageStatus.delivered
        case FamilyErased():
            if status not in PENDING:
                raise Unchanged  # sent, delivered or failed before: it stays what it was
            return MessageStatus.failed
        case NotDelivered(other_channel=other):
            if status != MessageStatus.sent:
                raise Unchanged  # reported before (failed, then undelivered), or moved on
            return MessageStatus.queued if other else MessageStatus.failed
    raise TypeError(f"not a message fact: {fact!r}")
