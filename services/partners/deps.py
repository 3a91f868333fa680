"""What the partners service's handlers are given (``rt.consume(handlers.HANDLERS, deps)``)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from runtime.db import utcnow

Clock = Callable[[], datetime]


@dataclass
class PartnersDeps:
    # When a request is matched, released or changed (tests fix it).
    clock: Clock = field(default=utcnow)
