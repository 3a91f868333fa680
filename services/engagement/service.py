"""Assembles the engagement service."""

from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.engagement import handlers
from services.engagement.api import build_router
from services.engagement.tables import Base

NAME = "engagement"


def build(settings: Settings, districts: Districts | None = None) -> Service:
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    handlers.register(rt)
    return Service(rt, build_router(rt))
