"""Assembles the webhooks service: a consumer per public event, the dispatcher, the API."""

from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.webhooks import handlers
from services.webhooks.api import POLICY, router
from services.webhooks.deps import NAME, WebhooksDeps
from services.webhooks.dispatch import Dispatcher
from services.webhooks.settings import webhooks_settings
from services.webhooks.tables import Base


def build(settings: Settings, districts: Districts | None = None, *,
          clock: Clock | None = None) -> Service:
    """``clock`` is for tests; a deployment reads the wall clock."""
    config = webhooks_settings(settings)
    rt = ServiceRuntime(NAME, config, Base.metadata, districts)
    dispatcher = Dispatcher(rt, config, clock or utcnow)
    deps = WebhooksDeps(rt, config, dispatcher, clock or utcnow)
    rt.run_in_background(dispatcher.run)
    rt.consume(handlers.HANDLERS, deps)
    return Service(rt, router, POLICY, deps=deps)
