"""The audit trail: who read or changed a student's referral, when, kept per district.

Recorded by a dependency attached where the referrals routes are mounted, so no endpoint can
forget it; read by district admins only."""

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column

from runtime.auth import Principal, Role
from runtime.db import utcnow
from runtime.errors import NotFound
from runtime.service import write_with_request
from runtime.uow import SEQ
from services.referrals.deps import Wired
from services.referrals.schemas import AuditView
from services.referrals.tables import Base, Referral

AUDIT_ROUTE = "/referrals/{referral_id}/audit"


class AuditEntry(Base):
    __tablename__ = "referral_audit"

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    referral_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(24))
    action: Mapped[str] = mapped_column(String(64))  # "read", "list", or the change made
    at: Mapped[datetime]


def action_of(method: str, path: str) -> str:
    if method == "GET":
        return "read" if "{referral_id}" in path else "list"
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return "open" if last == "referrals" else last


async def audit(request: Request, deps: Wired) -> AsyncIterator[None]:
    """The dependency on every referrals route (``Service.dependencies``): one entry per
    request a principal made, written with what the route changed."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        yield
        return
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path).removeprefix("/api/v1")
    entry = write_with_request(AuditEntry.__table__, {  # type: ignore[arg-type]
        "district_id": principal.district, "referral_id": request.path_params.get("referral_id"),
        "actor": principal.subject, "role": principal.role.value,
        "action": action_of(request.method, path), "at": utcnow()})
    # Written by the route's own transaction when it commits; a refused request
    # (403/404/422) raises before it commits and before the line after the yield.
    yield
    if not entry.written:  # the route committed nothing: write it on its own
        async with deps.runtime.unit_of_work():
            pass


router = APIRouter()


@router.get(AUDIT_ROUTE, response_model=list[AuditView])
async def trail(deps: Wired, referral_id: str, district_id: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AuditView]:
    async with deps.runtime.unit_of_work() as uow:
        if await uow.session.get(Referral, referral_id) is None:
            raise NotFound(f"referral {referral_id} not found")
        rows = (await uow.session.scalars(
            select(AuditEntry).where(AuditEntry.referral_id == referral_id)
            .order_by(AuditEntry.seq).limit(limit))).all()
    return [AuditView(at=r.at, actor=r.actor, role=r.role, action=r.action) for r in rows]


AUDIT_READERS = frozenset({Role.district_admin})
