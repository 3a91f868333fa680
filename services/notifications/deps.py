"""What notifications' handlers and routes are given, built once in service.py.

Handlers take ``NotificationsDeps`` (``rt.consume(HANDLERS, deps)``: they already have their
unit of work); routes take ``NotificationsRoutes``, ``Service.deps``, through ``Wired``
(``Depends(wired("notifications"))``)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import wired
from runtime.service import ServiceRuntime
from services.notifications.dispatch import Dispatcher
from services.notifications.policy import Holding
from services.notifications.providers import Provider
from services.notifications.settings import NotificationsSettings

NAME = "notifications"


@dataclass
class NotificationsDeps:
    holds: Holding  # quiet hours and the daily cap a new routine message waits for
    wake: Callable[[], None]  # the dispatcher, once queued messages have committed
    clock: Clock = utcnow  # tests fix time with their own
    email: Provider | None = None  # partner links go straight out by e-mail (partner_links.py)
    # The weekly staff digest (insights' StaffDigestRequested): each school's staff list.
    districts: Districts | None = None


@dataclass(frozen=True)
class NotificationsRoutes:
    runtime: ServiceRuntime  # units of work, the districts
    settings: NotificationsSettings  # the public base URL and the SMS provider's auth token
    dispatcher: Dispatcher  # what families' texts and STOP/START confirmations wake
    clock: Clock


Wired = Annotated[NotificationsRoutes, Depends(wired(NAME))]
