"""Erasing a family over HTTP (district admins only: service.POLICY), a module-level route as
in services/referrals/api.py."""

from fastapi import APIRouter, Request

from runtime.auth import caller
from runtime.erasure import erasure_barrier
from runtime.errors import NotFound
from services.engagement.deps import Wired
from services.engagement.erasure import erase_family
from services.engagement.schemas import FamilyView, Token
from services.engagement.tables import Family

router = APIRouter()


@router.delete("/families/{family_id}", response_model=FamilyView)
async def erase(deps: Wired, family_id: str, district_id: Token, request: Request) -> FamilyView:
    """Erase the family's personal data here and, through the internal FamilyErased event, in
    every service that holds it (docs/privacy.md). The record stays with its ids, blanked,
    with who erased it and when; erasing again is harmless."""
    async with deps.runtime.unit_of_work() as uow:
        await erasure_barrier(uow, exclusive=True)
        family = await uow.session.get(Family, family_id)
        if family is None or family.district_id != district_id:
            raise NotFound(f"family {family_id} not found")
        await erase_family(uow, family, caller(request, "district_admin"), deps.clock())
    return FamilyView.model_validate(family, from_attributes=True)
