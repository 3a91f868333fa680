"""Assembles the partners service."""

from runtime.auth import Policy, Role
from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.partners import api, handlers, links_api
from services.partners.deps import NAME, PartnersDeps
from services.partners.links import LinkIssuer
from services.partners.tables import Base

# An HSDS import loads the district's whole directory, whichever schools its rows serve: it is
# the district admin's. A coordinator registers partners for their own schools (POST /partners).
POLICY = Policy(rules={("POST", "/partners/import/hsds"): frozenset({Role.district_admin})},
                public=links_api.PUBLIC_ROUTES)


def build(settings: Settings, districts: Districts | None = None, *,
          clock: Clock | None = None) -> Service:
    """``clock`` is for tests; a deployment reads the wall clock."""
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    links = LinkIssuer(settings.partner_link_secret, settings.public_base_url,
                       settings.partner_link_hours)
    deps = PartnersDeps(rt, clock or utcnow, links)
    rt.consume(handlers.HANDLERS, deps, prefetch=handlers.PREFETCH)
    return Service(rt, api.router, POLICY, deps=deps)
