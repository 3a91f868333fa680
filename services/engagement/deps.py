"""What engagement's handlers need, in one object (``rt.consume(HANDLERS, deps)``)."""

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends

from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import wired
from services.engagement.config import EngagementConfig


@dataclass
class EngagementDeps:
    districts: Districts  # schools' names and zones, for the messages
    config: EngagementConfig = field(default_factory=EngagementConfig)
    clock: Clock = utcnow  # tests fix time with their own
    runtime: Any = None  # the ServiceRuntime, for module-level routes (roster_api.py)


Wired = Annotated[EngagementDeps, Depends(wired("engagement"))]
