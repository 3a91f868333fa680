"""Partner links: when a referral is matched to a partner with a contact e-mail, that contact
is sent (through notifications, PartnerLinkRequested) a link to the referral in the partner's
view. The link's token is a JWT signed with this service's own secret, for one purpose
(``partner_referral``), expiring; its row here says whether it was used. It opens the referral
for one answer (accept, decline with a reason, in service) while the match it was sent for is
the referral's current one, and never after that answer, its expiry, or the match's end."""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import update

from contracts.events import PartnerLinkRequested
from contracts.taxonomy import Need, Urgency
from runtime.errors import DomainError
from runtime.uow import UnitOfWork
from services.partners.tables import Partner, PartnerLink, ReferralRequest

PURPOSE = "partner_referral"
ACTIONS = ("accept", "decline", "in_service")


class LinkRefused(DomainError):
    """The link opens nothing any more: ``reason`` is expired, used or match_ended."""

    status_code = 410

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkUnknown(LinkRefused):
    """Not a link of ours: a bad signature, another purpose, an id never issued (404)."""

    status_code = 404

    def __init__(self) -> None:
        super().__init__("invalid")


@dataclass(frozen=True)
class LinkIssuer:
    secret: str
    base_url: str  # the console's public address
    hours: float

    def token(self, link_id: str, expires_at: datetime) -> str:
        return jwt.encode({"jti": link_id, "purpose": PURPOSE,
                           "exp": int(expires_at.timestamp())}, self.secret, algorithm="HS256")

    def read(self, token: str) -> tuple[str, float]:
        """The link's id and the token's expiry, once its signature and purpose check out
        (the expiry is the caller's to compare with its clock)."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"],
                                options={"require": ["exp", "jti"], "verify_exp": False})
        except jwt.PyJWTError:
            raise LinkUnknown from None
        if claims.get("purpose") != PURPOSE or not isinstance(claims["exp"], int | float):
            raise LinkUnknown
        return str(claims["jti"]), float(claims["exp"])


async def issue_link(uow: UnitOfWork, request: ReferralRequest, issuer: LinkIssuer | None,
                     now: datetime) -> None:
    """After a match: a link for the partner's contact, if the partner has an e-mail."""
    if issuer is None or request.state != "matched" or not request.partner_id:
        return
    partner = await uow.session.get(Partner, request.partner_id)
    if partner is None or not partner.email:
        return
    link = PartnerLink(id=secrets.token_urlsafe(18), district_id=request.district_id,
                       referral_id=request.referral_id, partner_id=request.partner_id,
                       attempt=request.attempts, created_at=now,
                       expires_at=now + timedelta(hours=issuer.hours))
    uow.session.add(link)
    url = f"{issuer.base_url.rstrip('/')}/p/{issuer.token(link.id, link.expires_at)}"
    uow.emit(PartnerLinkRequested(
        link_id=link.id, referral_id=request.referral_id, partner_id=partner.id,
        partner_name=partner.name, email=partner.email,
        language=(partner.languages or ["en"])[0], need=Need(request.need),
        urgency=Urgency(request.urgency), url=url, expires_at=link.expires_at),
        district=request.district_id, school=request.school_id, subject=request.referral_id)


async def find_link(uow: UnitOfWork, issuer: LinkIssuer, token: str,
                    now: datetime) -> tuple[PartnerLink, bool]:
    """The link a genuine token names, and whether the token has expired; else
    LinkUnknown."""
    link_id, expires = issuer.read(token)
    link = await uow.session.get(PartnerLink, link_id)
    if link is None:
        raise LinkUnknown
    return link, expires <= now.timestamp()


async def status_of(uow: UnitOfWork, link: PartnerLink, now: datetime,
                    token_expired: bool = False) -> str:
    """open, or why the link opens nothing any more: expired, used, match_ended."""
    if token_expired or link.expires_at <= now:
        return "expired"
    if link.used_at is not None:
        return "used"
    request = await uow.session.get(ReferralRequest, link.referral_id)
    if (request is None or request.state != "matched" or request.partner_id != link.partner_id
            or request.attempts != link.attempt):
        return "match_ended"
    return "open"


async def open_link(uow: UnitOfWork, issuer: LinkIssuer, token: str,
                    now: datetime) -> PartnerLink:
    """The link, if it still opens its referral; else LinkRefused naming why."""
    link, token_expired = await find_link(uow, issuer, token, now)
    status = await status_of(uow, link, now, token_expired)
    if status != "open":
        raise LinkRefused(status)
    return link


async def use_link(uow: UnitOfWork, issuer: LinkIssuer, token: str, action: str,
                   now: datetime) -> PartnerLink:
    """Spend the link on one answer: whoever comes second (a replay, a second tab) is refused."""
    link = await open_link(uow, issuer, token, now)
    spent = await uow.session.execute(
        update(PartnerLink).where(PartnerLink.id == link.id, PartnerLink.used_at.is_(None))
        .values(used_at=now, used_for=action))
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise LinkRefused("used")
    return link


def describe(link: PartnerLink, status: str = "open") -> dict[str, Any]:
    return {"link_id": link.id, "district_id": link.district_id,
            "referral_id": link.referral_id, "partner_id": link.partner_id,
            "expires_at": link.expires_at.isoformat(), "status": status,
            "used_for": link.used_for}
