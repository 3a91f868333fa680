"""What engagement's handlers need, in one object (``rt.consume(HANDLERS, deps)``), and what
its module-level routes receive as ``Service.deps`` (``Wired``)."""

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends

from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import wired
from runtime.service import ServiceRuntime
from runtime.uow import UnitOfWork
from services.engagement.config import EngagementConfig


@dataclass
class EngagementDeps:
    districts: Districts  # schools' names and zones, for the messages
    config: EngagementConfig = field(default_factory=EngagementConfig)
    clock: Clock = utcnow  # tests fix time with their own
    runtime: ServiceRuntime | None = None  # units of work, for the module-level routes

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        assert self.runtime is not None, "built without its runtime"
        return self.runtime.unit_of_work()


NAME = "engagement"
Wired = Annotated[EngagementDeps, Depends(wired(NAME))]
