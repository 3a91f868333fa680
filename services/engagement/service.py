"""Assembles the engagement service."""

from runtime.auth import Policy, Role
from runtime.daily import retention_job
from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.engagement import erasure_api, handlers
from services.engagement.announcements import AnnouncementFanOut
from services.engagement.announcements_api import build_announcements_router
from services.engagement.api import build_router
from services.engagement.config import EngagementConfig
from services.engagement.deps import NAME, EngagementDeps
from services.engagement.erasure import expire_replies
from services.engagement.family_events_api import PUBLIC_ROUTES, build_family_events_router
from services.engagement.outreach_timers import OutreachTimers
from services.engagement.replies import build_replies_router
from services.engagement.roster_api import router as roster_router
from services.engagement.tables import JOB_RUNS, Base

# Erasing a family and importing the district's SIS roster are for district admins;
# every other route keeps the default (staff).
POLICY = Policy(rules={
    ("DELETE", "/families/{family_id}"): frozenset({Role.district_admin}),
    ("POST", "/rosters/import"): frozenset({Role.district_admin}),
})


def build(settings: Settings, districts: Districts | None = None, *,
          config: EngagementConfig | None = None, clock: Clock | None = None) -> Service:
    config = config or EngagementConfig()
    clock = clock or utcnow
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    deps = EngagementDeps(rt.districts, config, clock, runtime=rt)
    rt.consume(handlers.HANDLERS, deps)
    timers = OutreachTimers(rt, config, clock)
    fan_out = AnnouncementFanOut(rt, config, clock)
    rt.run_in_background(timers.run)
    rt.run_in_background(fan_out.run)
    router = build_router(rt, config)
    router.include_router(build_family_events_router(rt, config))
    router.include_router(build_announcements_router(rt, fan_out))
    router.include_router(build_replies_router(rt))
    router.include_router(erasure_api.router)
    router.include_router(roster_router)
    retention = retention_job(rt, JOB_RUNS,
                              lambda uow, now: expire_replies(uow, rt.districts, now), clock)
    service = Service(rt, router, Policy(rules=POLICY.rules), deps=deps)
    service.retention = retention  # type: ignore[attr-defined]  # for tests
    service.timers, service.fan_out = timers, fan_out  # type: ignore[attr-defined]  # for tests
    policy = getattr(service, "policy", None)  # signed RSVP links skip the bearer token
    if policy is not None and hasattr(policy, "public"):
        policy.public = frozenset(policy.public) | PUBLIC_ROUTES
    return service
