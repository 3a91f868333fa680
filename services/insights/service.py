"""Assembles the insights service: a consumer per public event it keeps, the weekly staff
digest, the data pack's routes. It reads only the public streams (its NATS user has an
integrator's reach: ensemble.> and its own durables) into its own database."""

from runtime.auth import Policy
from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.insights import api, handlers
from services.insights.deps import NAME, InsightsDeps
from services.insights.digest import run_digests
from services.insights.settings import insights_settings
from services.insights.tables import Base

POLICY = Policy(rules={("GET", route): api.READERS for route in api.ROUTES})


def runtime(settings: Settings, districts: Districts | None = None) -> ServiceRuntime:
    """The runtime with its consumers, for the service and for `ensemble insights rebuild`."""
    rt = ServiceRuntime(NAME, insights_settings(settings), Base.metadata, districts)
    return rt


def build(settings: Settings, districts: Districts | None = None, *,
          clock: Clock | None = None) -> Service:
    """``clock`` is for tests; a deployment reads the wall clock."""
    config = insights_settings(settings)
    rt = runtime(config, districts)
    deps = InsightsDeps(rt, config, clock or utcnow)
    rt.consume(handlers.HANDLERS, deps)
    if config.digest_enabled:
        rt.run_in_background(lambda: run_digests(deps))
    return Service(rt, api.router, POLICY, deps=deps)
