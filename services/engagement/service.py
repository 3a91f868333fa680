"""Assembles the engagement service."""

from collections.abc import Callable
from datetime import datetime

from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.engagement import handlers
from services.engagement.api import build_router
from services.engagement.background import Background
from services.engagement.config import EngagementConfig
from services.engagement.outreach_api import PUBLIC_ROUTES, build_outreach_router
from services.engagement.replies import build_replies_router
from services.engagement.tables import Base

NAME = "engagement"


def build(settings: Settings, districts: Districts | None = None, *,
          config: EngagementConfig | None = None,
          clock: Callable[[], datetime] | None = None) -> Service:
    config = config or EngagementConfig()
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    handlers.register(rt, config)
    background = Background(rt, config, **({"clock": clock} if clock else {}))
    rt.run_in_background(background.run)
    router = build_router(rt, config)
    router.include_router(build_outreach_router(rt, config, background))
    router.include_router(build_replies_router(rt))
    service = Service(rt, router)
    service.background = background  # type: ignore[attr-defined]  # for tests
    policy = getattr(service, "policy", None)  # signed RSVP links skip the bearer token
    if policy is not None and hasattr(policy, "public"):
        policy.public = frozenset(policy.public) | PUBLIC_ROUTES
    return service
