"""Assembles the webhooks service: a consumer per public event, the dispatcher, the API."""

from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.webhooks import handlers
from services.webhooks.api import POLICY, build_router
from services.webhooks.config import webhooks_settings
from services.webhooks.dispatch import Dispatcher
from services.webhooks.tables import Base

NAME = "webhooks"


def build(settings: Settings, districts: Districts | None = None) -> Service:
    config = webhooks_settings(settings)
    rt = ServiceRuntime(NAME, config, Base.metadata, districts)
    dispatcher = Dispatcher(rt, config)
    rt.run_in_background(dispatcher.run)
    handlers.register(rt, dispatcher)
    return Service(rt, build_router(rt, config, dispatcher), POLICY)
