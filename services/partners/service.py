"""Assembles the partners service."""

from runtime.auth import Policy, Role
from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.partners import api, handlers
from services.partners.deps import NAME, PartnersDeps
from services.partners.tables import Base

# An HSDS import loads the district's whole directory, whichever schools its rows serve: it is
# the district admin's. A coordinator registers partners for their own schools (POST /partners).
POLICY = Policy(rules={("POST", "/partners/import/hsds"): frozenset({Role.district_admin})})


def build(settings: Settings, districts: Districts | None = None, *,
          clock: Clock | None = None) -> Service:
    """``clock`` is for tests; a deployment reads the wall clock."""
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    deps = PartnersDeps(rt, clock or utcnow)
    rt.consume(handlers.HANDLERS, deps)
    return Service(rt, api.router, POLICY, deps=deps)
