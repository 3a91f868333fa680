"""What the partners service's handlers are given (``rt.consume(handlers.HANDLERS, deps)``)."""

from dataclasses import dataclass, field

from runtime.db import Clock, utcnow


@dataclass
class PartnersDeps:
    # When a request is matched, released or changed (tests fix it).
    clock: Clock = field(default=utcnow)
