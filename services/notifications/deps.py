"""What notifications' handlers need, in one object (``rt.consume(HANDLERS, deps)``)."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from runtime.db import utcnow
from services.notifications.policy import Holding

Clock = Callable[[], datetime]


@dataclass
class NotificationsDeps:
    holds: Holding  # quiet hours and the daily cap a new routine message waits for
    wake: Callable[[], None]  # the dispatcher, once queued messages have committed
    clock: Clock = utcnow  # tests fix time with their own
