"""The partner directory over HTTP."""

from datetime import datetime
from typing import Annotated
from uuid import uuid4

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from contracts.taxonomy import Need
from runtime.db import utcnow
from runtime.errors import NotFound
from runtime.service import ServiceRuntime
from services.partners.tables import Partner, PartnerService

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Language = Annotated[
    str, Field(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")
]


class RegisterPartner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    name: Annotated[str, Field(min_length=1, max_length=200)]
    needs: Annotated[list[Need], Field(min_length=1)]
    schools: Annotated[list[Token], Field(min_length=1)]
    languages: Annotated[list[Language], Field(min_length=1)] = ["en"]
    grades: list[Annotated[int, Field(ge=-1, le=12)]] = []
    capacity: Annotated[int, Field(ge=0, le=100_000)]


class ServiceView(BaseModel):
    id: str
    need: str
    schools: list[str]
    grades: list[int]
    capacity: int
    reserved: int


class PartnerView(BaseModel):
    id: str
    district_id: str
    name: str
    languages: list[str]
    status: str
    created_at: datetime
    services: list[ServiceView]


def _view(partner: Partner, services: list[PartnerService]) -> PartnerView:
    return PartnerView(
        id=partner.id,
        district_id=partner.district_id,
        name=partner.name,
        languages=partner.languages,
        status=partner.status,
        created_at=partner.created_at,
        services=[
            ServiceView(id=s.id, need=s.need, schools=s.schools, grades=s.grades,
                        capacity=s.capacity, reserved=s.reserved)
            for s in services
        ],
    )


def build_router(rt: ServiceRuntime) -> APIRouter:
    router = APIRouter()

    @router.post("/partners", status_code=201, response_model=PartnerView)
    async def register(body: RegisterPartner) -> PartnerView:
        district = rt.districts.get(body.district_id)
        if district is None:
            raise NotFound(f"district {body.district_id} not found")
        unknown = [s for s in body.schools if district.school(s) is None]
        if unknown:
            raise NotFound(f"schools not in district {body.district_id}: {', '.join(unknown)}")
        partner = Partner(id=str(uuid4()), district_id=body.district_id, name=body.name,
                          languages=body.languages, status="active", created_at=utcnow())
        services = [
            PartnerService(id=str(uuid4()), partner_id=partner.id, district_id=body.district_id,
                           need=need, schools=list(body.schools), grades=list(body.grades),
                           capacity=body.capacity, reserved=0)
            for need in dict.fromkeys(body.needs)
        ]
        async with rt.unit_of_work() as uow:
            uow.session.add(partner)
            await uow.session.flush()
            uow.session.add_all(services)
        return _view(partner, services)

    @router.get("/partners", response_model=list[PartnerView])
    async def list_(district_id: Token, need: Need | None = None) -> list[PartnerView]:
        async with rt.unit_of_work() as uow:
            partners = (
                await uow.session.scalars(
                    select(Partner).where(Partner.district_id == district_id).order_by(Partner.name)
                )
            ).all()
            services = (
                await uow.session.scalars(
                    select(PartnerService).where(PartnerService.district_id == district_id)
                )
            ).all()
        by_partner: dict[str, list[PartnerService]] = {}
        for service in services:
            by_partner.setdefault(service.partner_id, []).append(service)
        views = [_view(p, by_partner.get(p.id, [])) for p in partners]
        return [v for v in views if need is None or any(s.need == need for s in v.services)]

    @router.get("/partners/{partner_id}", response_model=PartnerView)
    async def detail(partner_id: str, district_id: Token) -> PartnerView:
        async with rt.unit_of_work() as uow:
            partner = await uow.session.get(Partner, partner_id)
            if partner is None or partner.district_id != district_id:
                raise NotFound(f"partner {partner_id} not found")
            services = (
                await uow.session.scalars(
                    select(PartnerService).where(PartnerService.partner_id == partner_id)
                )
            ).all()
        return _view(partner, list(services))

    return router
