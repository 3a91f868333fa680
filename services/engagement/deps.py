"""What engagement's handlers and routes are given, built once in service.py.

Handlers take ``EngagementDeps`` (``rt.consume(HANDLERS, deps)``: they already have their unit
of work); routes take ``EngagementRoutes``, ``Service.deps``, through ``Wired``
(``Depends(wired("engagement"))``)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends

from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import wired
from runtime.service import ServiceRuntime
from services.engagement.settings import EngagementSettings

NAME = "engagement"


@dataclass
class EngagementDeps:
    districts: Districts  # schools' names and zones, for the messages
    settings: EngagementSettings = field(default_factory=EngagementSettings)
    clock: Clock = utcnow  # tests fix time with their own


@dataclass(frozen=True)
class EngagementRoutes:
    runtime: ServiceRuntime  # units of work, the districts
    settings: EngagementSettings
    clock: Clock
    wake_fan_out: Callable[[], None]  # once an announcement has committed

    @property
    def districts(self) -> Districts:
        return self.runtime.districts


Wired = Annotated[EngagementRoutes, Depends(wired(NAME))]
