"""Assembles the referrals service."""

from fastapi import APIRouter, Depends

from runtime.auth import STAFF, Policy, Role
from runtime.daily import retention_job
from runtime.db import Clock
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.referrals import api, audit, handlers
from services.referrals.audit import AUDIT_READERS, AUDIT_ROUTE
from services.referrals.deps import NAME, ReferralsDeps
from services.referrals.erasure import expire_referrals
from services.referrals.follow_up import run_metrics, run_timers
from services.referrals.referrals import Desk
from services.referrals.settings import ReferralsSettings
from services.referrals.tables import JOB_RUNS, Base

# A partner answers the referrals it was matched to (tenancy hides the others); staff may
# record an answer given on the phone. A partner also lists and reads those referrals (the
# console's partner view), without the school's notes (api.detail).
PARTNER_ANSWERS = Policy(rules={
    **{("POST", f"/referrals/{{referral_id}}/{action}"): STAFF | {Role.partner}
       for action in ("accept", "decline", "in-service")},
    ("GET", "/referrals"): STAFF | {Role.partner},
    ("GET", "/referrals/{referral_id}"): STAFF | {Role.partner},
})


def build(
    settings: Settings,
    districts: Districts | None = None,
    *,
    clock: Clock | None = None,
    follow_up_scan_seconds: float | None = None,
    metrics_seconds: float | None = None,
) -> Service:
    """``settings`` may be the shared ones (this service's own are then read from the
    environment) or a ``ReferralsSettings``; ``clock`` and the intervals are for tests."""
    own = ReferralsSettings.of(settings)
    rt = ServiceRuntime(NAME, own, Base.metadata, districts)
    desk = Desk(rt.districts, family_wait_seconds=own.family_wait_seconds)
    if clock:
        desk.clock = clock
    scan = follow_up_scan_seconds or own.follow_up_scan_seconds
    gauges = metrics_seconds or own.referral_metrics_seconds
    rt.consume(handlers.HANDLERS, desk, prefetch=handlers.PREFETCH)
    rt.run_in_background(lambda: run_timers(rt, desk, scan))
    rt.run_in_background(lambda: run_metrics(rt, desk, gauges))
    retention = retention_job(rt, JOB_RUNS,
                              lambda uow, now: expire_referrals(uow, rt.districts, now),
                              clock or desk.clock)
    router = APIRouter()  # the module-level routers, in the order they are matched
    router.include_router(api.router)
    router.include_router(audit.router)
    rules = {**PARTNER_ANSWERS.rules, ("GET", AUDIT_ROUTE): AUDIT_READERS}
    service = Service(rt, router, Policy(rules=rules), dependencies=[Depends(audit.audit)],
                      deps=ReferralsDeps(rt, desk))
    service.retention = retention  # type: ignore[attr-defined]  # for tests
    return service
