"""What the partners service is built with, given once to its handlers
(``rt.consume(handlers.HANDLERS, deps)``) and to its routes (``Service.deps``, received through
``Wired``: ``Depends(wired("partners"))``)."""

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends

from runtime.db import Clock, utcnow
from runtime.host import wired
from runtime.service import ServiceRuntime
from services.partners.links import LinkIssuer

NAME = "partners"


@dataclass
class PartnersDeps:
    runtime: ServiceRuntime  # the routes' units of work and the districts
    # When a request is matched, released or changed, and "now" for a report (tests fix it).
    clock: Clock = field(default=utcnow)
    # Signs the links a matched partner's contact is e-mailed (None: no links).
    links: LinkIssuer | None = None


Wired = Annotated[PartnersDeps, Depends(wired(NAME))]
