"""What the referrals routes are given: ``Service.deps``, received through ``Wired``
(``Depends(wired(NAME))``). The consumer handlers take the ``Desk`` alone
(``rt.consume(handlers.HANDLERS, desk)``): they already have their unit of work."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from runtime.host import wired
from runtime.service import ServiceRuntime
from services.referrals.referrals import Desk

NAME = "referrals"


@dataclass(frozen=True)
class ReferralsDeps:
    runtime: ServiceRuntime  # units of work, the districts
    desk: Desk  # the clock, the districts, the families arriving


Wired = Annotated[ReferralsDeps, Depends(wired(NAME))]
