"""Assembles the referrals service."""

from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.referrals import handlers
from services.referrals.api import build_router
from services.referrals.tables import Base

NAME = "referrals"


def build(settings: Settings, districts: Districts | None = None) -> Service:
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    handlers.register(rt)
    return Service(rt, build_router(rt))
