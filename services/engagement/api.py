"""Families and their contact log over HTTP. Personal data lives here and leaves only on
internal subjects, to notifications."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import uuid4

import phonenumbers
from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator
from sqlalchemy import select

from contracts.events import FamilyRegistered
from contracts.taxonomy import Channel, ContactKind
from runtime.db import utcnow
from runtime.errors import NotFound
from runtime.service import ServiceRuntime
from services.engagement.contacts import log_contact
from services.engagement.tables import ContactLogEntry, Family

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Language = Annotated[
    str, Field(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")
]


def e164(value: str) -> str:
    """Validate a phone number and store it in E.164 (numbers without +country are US)."""
    try:
        number = phonenumbers.parse(value, "US")
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


Phone = Annotated[str, Field(max_length=32), AfterValidator(e164)]


class RegisterFamily(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    school_id: Token
    name: Annotated[str, Field(min_length=1, max_length=200)]
    preferred_language: Language = "en"
    phone: Phone | None = None
    email: EmailStr | None = None
    preferred_channel: Channel = Channel.email
    sms_consent: bool = False
    email_consent: bool = True

    @model_validator(mode="after")
    def _reachable_by_preference(self) -> "RegisterFamily":
        if self.preferred_channel == Channel.sms and not self.phone:
            raise ValueError("preferred_channel sms needs a phone")
        if self.preferred_channel == Channel.email and not self.email:
            raise ValueError("preferred_channel email needs an email")
        return self


class FamilyView(BaseModel):
    id: str
    district_id: str
    school_id: str
    name: str
    preferred_language: str
    phone: str | None
    email: str | None
    preferred_channel: str
    sms_consent: bool
    email_consent: bool
    sms_opted_out: bool
    email_opted_out: bool
    created_at: datetime


class LogContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    kind: ContactKind
    outcome: Literal["reached", "no_answer", "left_message", "wrong_number"] = "reached"
    referral_id: str | None = Field(default=None, max_length=64)
    by: str = Field(default="coordinator", max_length=128)
    note: str | None = Field(default=None, max_length=500)
    at: datetime | None = None


class ContactView(BaseModel):
    id: str
    kind: str
    outcome: str
    at: datetime
    by: str
    referral_id: str | None
    note: str | None


def _family_view(f: Family) -> FamilyView:
    return FamilyView.model_validate(f, from_attributes=True)


def build_router(rt: ServiceRuntime) -> APIRouter:
    router = APIRouter()

    async def _family(uow, district_id: str, family_id: str) -> Family:  # type: ignore[no-untyped-def]
        family = await uow.session.get(Family, family_id)
        if family is None or family.district_id != district_id:
            raise NotFound(f"family {family_id} not found")
        return family

    @router.post("/families", status_code=201, response_model=FamilyView)
    async def register(body: RegisterFamily) -> FamilyView:
        if rt.districts.school(body.district_id, body.school_id) is None:
            raise NotFound(f"school {body.school_id} not found in district {body.district_id}")
        family = Family(id=str(uuid4()), created_at=utcnow(), sms_opted_out=False,
                        email_opted_out=False, **body.model_dump())
        async with rt.unit_of_work() as uow:
            uow.session.add(family)
            uow.emit(
                FamilyRegistered(family_id=family.id, school_id=family.school_id,
                                 preferred_language=family.preferred_language,
                                 preferred_channel=body.preferred_channel),
                district=family.district_id, school=family.school_id, subject=family.id,
            )
        return _family_view(family)

    @router.get("/families", response_model=list[FamilyView])
    async def list_(district_id: Token, school_id: str | None = None, limit: int = 100,
                    offset: int = 0) -> list[FamilyView]:
        query = select(Family).where(Family.district_id == district_id)
        if school_id:
            query = query.where(Family.school_id == school_id)
        query = query.order_by(Family.created_at, Family.id).limit(min(limit, 500)).offset(offset)
        async with rt.unit_of_work() as uow:
            return [_family_view(f) for f in (await uow.session.scalars(query)).all()]

    @router.get("/families/{family_id}", response_model=FamilyView)
    async def detail(family_id: str, district_id: Token) -> FamilyView:
        async with rt.unit_of_work() as uow:
            return _family_view(await _family(uow, district_id, family_id))

    @router.post("/families/{family_id}/contacts", status_code=201, response_model=ContactView)
    async def log(family_id: str, body: LogContact) -> ContactView:
        async with rt.unit_of_work() as uow:
            family = await _family(uow, body.district_id, family_id)
            entry = log_contact(uow, family, kind=body.kind, at=body.at or utcnow(),
                                by=f"coordinator:{body.by}", outcome=body.outcome,
                                referral_id=body.referral_id, note=body.note)
        return ContactView.model_validate(entry, from_attributes=True)

    @router.get("/families/{family_id}/contacts", response_model=list[ContactView])
    async def contacts(family_id: str, district_id: Token) -> list[ContactView]:
        async with rt.unit_of_work() as uow:
            await _family(uow, district_id, family_id)
            entries = (await uow.session.scalars(
                select(ContactLogEntry).where(ContactLogEntry.family_id == family_id)
                .order_by(ContactLogEntry.at))).all()
        return [ContactView.model_validate(e, from_attributes=True) for e in entries]

    return router
