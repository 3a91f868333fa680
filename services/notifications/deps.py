"""What notifications' handlers need, in one object (``rt.consume(HANDLERS, deps)``)."""

from collections.abc import Callable
from dataclasses import dataclass

from runtime.db import Clock, utcnow
from runtime.districts import Districts
from services.notifications.policy import Holding
from services.notifications.providers import Provider


@dataclass
class NotificationsDeps:
    holds: Holding  # quiet hours and the daily cap a new routine message waits for
    wake: Callable[[], None]  # the dispatcher, once queued messages have committed
    clock: Clock = utcnow  # tests fix time with their own
    email: Provider | None = None  # partner links go straight out by e-mail (partner_links.py)
    # The weekly staff digest (insights' StaffDigestRequested): each school's staff list.
    districts: Districts | None = None
