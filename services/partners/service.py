"""Assembles the partners service."""

from runtime.auth import Policy, Role
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.partners import handlers
from services.partners.api import build_router
from services.partners.tables import Base

# An HSDS import loads the district's whole directory, whichever schools its rows serve: it is
# the district admin's. A coordinator registers partners for their own schools (POST /partners).
POLICY = Policy(rules={("POST", "/partners/import/hsds"): frozenset({Role.district_admin})})

NAME = "partners"


def build(settings: Settings, districts: Districts | None = None) -> Service:
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    handlers.register(rt)
    return Service(rt, build_router(rt), POLICY)
