"""Assembles the partners service."""

from runtime.auth import Policy, Role
from runtime.db import Clock
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.partners import handlers
from services.partners.api import build_router
from services.partners.deps import PartnersDeps
from services.partners.tables import Base

# An HSDS import loads the district's whole directory, whichever schools its rows serve: it is
# the district admin's. A coordinator registers partners for their own schools (POST /partners).
POLICY = Policy(rules={("POST", "/partners/import/hsds"): frozenset({Role.district_admin})})

NAME = "partners"


def build(settings: Settings, districts: Districts | None = None, *,
          clock: Clock | None = None) -> Service:
    """``clock`` is for tests; a deployment reads the wall clock."""
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    deps = PartnersDeps(clock=clock) if clock else PartnersDeps()
    rt.consume(handlers.HANDLERS, deps)
    return Service(rt, build_router(rt), POLICY, deps=deps)
