"""What the webhooks service is built with, given once to its handler
(``rt.consume(handlers.HANDLERS, deps)``) and to its routes (``Service.deps``, received through
``Wired``: ``Depends(wired("webhooks"))``)."""

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends

from runtime.db import Clock, utcnow
from runtime.host import wired
from runtime.service import ServiceRuntime
from services.webhooks.dispatch import Dispatcher
from services.webhooks.settings import WebhooksSettings

NAME = "webhooks"


@dataclass
class WebhooksDeps:
    runtime: ServiceRuntime  # the routes' units of work and the districts
    config: WebhooksSettings
    dispatcher: Dispatcher  # woken once deliveries are committed (by a consumer or a replay)
    clock: Clock = field(default=utcnow)  # when a delivery is created or replayed and is due


Wired = Annotated[WebhooksDeps, Depends(wired(NAME))]
