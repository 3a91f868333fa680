"""What the insights handlers and routes are given (``Service.deps``, through ``Wired``)."""

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends

from runtime.db import Clock, utcnow
from runtime.host import wired
from runtime.service import ServiceRuntime
from services.insights.settings import InsightsSettings

NAME = "insights"


@dataclass
class InsightsDeps:
    runtime: ServiceRuntime  # units of work, the districts
    config: InsightsSettings
    clock: Clock = field(default=utcnow)  # the digest's week; a pack's default month


Wired = Annotated[InsightsDeps, Depends(wired(NAME))]
