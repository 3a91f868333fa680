"""What the referrals routes are given: ``Service.deps``, received through ``Wired``
(``Depends(referrals_deps)``). The consumer handlers take the ``Desk`` alone
(``rt.consume(handlers.HANDLERS, desk)``): they already have their unit of work."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from runtime.service import ServiceRuntime
from services.referrals.referrals import Desk

NAME = "referrals"


@dataclass(frozen=True)
class ReferralsDeps:
    runtime: ServiceRuntime  # units of work, the districts
    desk: Desk  # the clock, the districts, the families arriving


async def referrals_deps(request: Request) -> ReferralsDeps:
    """``runtime.host.wired(NAME)``, but a coroutine: FastAPI runs a plain-function dependency
    in its thread pool, a thread hop per request that cost more than the lookup it made."""
    deps: ReferralsDeps = request.app.state.deps[NAME]
    return deps


Wired = Annotated[ReferralsDeps, Depends(referrals_deps)]
