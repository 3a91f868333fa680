"""Assembles the partners service."""

from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.partners import handlers
from services.partners.api import build_router
from services.partners.tables import Base

NAME = "partners"


def build(settings: Settings, districts: Districts | None = None) -> Service:
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    handlers.register(rt)
    return Service(rt, build_router(rt))
