"""The partner-link routes: public (the signed token is the credential), answered for the
console's /p/<token> page, which then acts for the partner on that one referral only. They are
registered on the partners router (services/partners/api.py) with RESPONSES."""

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel

from runtime.host import ERRORS
from services.partners.deps import Wired
from services.partners.links import LinkUnknown, describe, find_link, status_of, use_link

PUBLIC_ROUTES = frozenset({("GET", "/partner-links/{token}"),
                           ("POST", "/partner-links/{token}/use")})
Deps = Wired
# A compact JWS: three base64url parts.
Token = Annotated[str, Path(min_length=16, max_length=1000,
                            pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")]


class LinkUse(BaseModel):
    action: Literal["accept", "decline", "in_service"]


# Each keeps the JSON error body every API error has (runtime.host.ERRORS), with its own words.
_NOT_OURS = {**ERRORS[404], "description": "not a link of ours"}
RESPONSES: dict[str, dict[int | str, dict[str, Any]]] = {
    "get": {404: _NOT_OURS},
    "use": {404: _NOT_OURS,
            410: {**ERRORS[404], "description": "the link opens nothing any more: expired, "
                                                "used or match_ended"}},
}


async def partner_link(token: Token, deps: Deps) -> dict[str, Any]:
    """What the link opens, and whether it still does (``status``: open, expired, used,
    match_ended)."""
    if deps.links is None:
        raise LinkUnknown
    async with deps.runtime.unit_of_work() as uow:
        now = deps.clock()
        link, token_expired = await find_link(uow, deps.links, token, now)
        return describe(link, await status_of(uow, link, now, token_expired))


async def partner_link_use(token: Token, body: LinkUse, deps: Deps) -> dict[str, Any]:
    """Spend the link on its one answer (the caller then gives the answer to referrals)."""
    if deps.links is None:
        raise LinkUnknown
    async with deps.runtime.unit_of_work() as uow:
        return describe(await use_link(uow, deps.links, token, body.action, deps.clock()))
