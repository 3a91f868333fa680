"""What the partners service's handlers are given (``rt.consume(handlers.HANDLERS, deps)``),
and its module-level routes through ``Depends(wired("partners"))``."""

from dataclasses import dataclass, field

from runtime.db import Clock, utcnow
from runtime.service import ServiceRuntime
from services.partners.links import LinkIssuer


@dataclass
class PartnersDeps:
    # When a request is matched, released or changed (tests fix it).
    clock: Clock = field(default=utcnow)
    # Signs the links a matched partner's contact is e-mailed (None: no links).
    links: LinkIssuer | None = None
    runtime: ServiceRuntime | None = None  # units of work, for the link routes
