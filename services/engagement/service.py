"""Assembles the engagement service."""

from fastapi import APIRouter

from runtime.auth import Policy, Role
from runtime.daily import retention_job
from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.engagement import (
    announcements_api,
    api,
    erasure_api,
    family_events_api,
    handlers,
    replies_api,
    roster_api,
)
from services.engagement.announcements import AnnouncementFanOut
from services.engagement.deps import NAME, EngagementDeps, EngagementRoutes
from services.engagement.erasure import expire_replies
from services.engagement.family_events_api import PUBLIC_ROUTES
from services.engagement.outreach_timers import OutreachTimers
from services.engagement.settings import EngagementSettings
from services.engagement.tables import JOB_RUNS, Base

# Erasing a family and importing the district's SIS roster are for district admins;
# every other route keeps the default (staff).
POLICY = Policy(rules={
    ("DELETE", "/families/{family_id}"): frozenset({Role.district_admin}),
    ("POST", "/rosters/import"): frozenset({Role.district_admin}),
})


def build(settings: Settings, districts: Districts | None = None, *,
          clock: Clock | None = None) -> Service:
    """``settings`` may be the shared ones (this service's own are then read from the
    environment) or an ``EngagementSettings``; ``clock`` is for tests."""
    own = EngagementSettings.of(settings)
    clock = clock or utcnow
    rt = ServiceRuntime(NAME, own, Base.metadata, districts)
    rt.consume(handlers.HANDLERS, EngagementDeps(rt.districts, own, clock),
               prefetch=handlers.PREFETCH)
    timers = OutreachTimers(rt, own, clock)
    fan_out = AnnouncementFanOut(rt, own, clock)
    rt.run_in_background(timers.run)
    rt.run_in_background(fan_out.run)
    router = APIRouter()  # the module-level routers, in the order they are matched
    for routes in (api, family_events_api, announcements_api, replies_api, erasure_api,
                   roster_api):
        router.include_router(routes.router)
    retention = retention_job(rt, JOB_RUNS,
                              lambda uow, now: expire_replies(uow, rt.districts, now), clock)
    service = Service(rt, router, Policy(rules=POLICY.rules),
                      deps=EngagementRoutes(rt, own, clock, fan_out.wake))
    service.retention = retention  # type: ignore[attr-defined]  # for tests
    service.timers, service.fan_out = timers, fan_out  # type: ignore[attr-defined]  # for tests
    service.policy.public = frozenset(service.policy.public) | PUBLIC_ROUTES  # signed RSVP links
    return service
