"""What the webhooks service's handlers are given (``rt.consume(handlers.HANDLERS, deps)``)."""

from dataclasses import dataclass, field

from runtime.db import Clock, utcnow
from services.webhooks.dispatch import Dispatcher
from services.webhooks.settings import WebhooksSettings


@dataclass
class WebhooksDeps:
    config: WebhooksSettings
    dispatcher: Dispatcher  # woken once a consumer's deliveries are committed
    clock: Clock = field(default=utcnow)  # when a delivery is created and first due
