"""The partners HTTP API's request and response models (the routes are in api.py)."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationInfo, field_validator

from contracts.taxonomy import Need
from services.partners.tables import Partner, PartnerService, PartnerStats, ServiceCapacity

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Language = Annotated[
    str, Field(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")
]


class RegisterPartner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    name: Annotated[str, Field(min_length=1, max_length=200)]
    needs: Annotated[list[Need], Field(min_length=1)]
    in_school_of: Token | None = Field(None, description=(
        "an in-school support (the school's own counselor, psychologist, nurse, social "
        "worker...): the one school whose staff it is; it serves that school only"))
    schools: Annotated[list[Token], Field(validate_default=True, description=(
        "the schools it serves; for an in-school support, its school (the default)"))] = []
    languages: Annotated[list[Language], Field(min_length=1)] = ["en"]
    grades: list[Annotated[int, Field(ge=-1, le=12)]] = []
    capacity: Annotated[int, Field(ge=0, le=100_000, description="open slots at each school")]
    email: EmailStr | None = Field(None, description="the contact e-mailed a link to each "
                                                     "referral matched to the partner")

    @field_validator("schools")
    @classmethod
    def _schools(cls, schools: list[str], info: ValidationInfo) -> list[str]:
        own = info.data.get("in_school_of")
        if own is None:
            if not schools and "in_school_of" in info.data:
                raise ValueError("name at least one school (or in_school_of for an in-school "
                                 "support)")
            return schools
        if schools and schools != [own]:
            raise ValueError(f"an in-school support serves its own school only: [{own!r}]")
        return [own]


class SetCapacity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    school_id: Token
    capacity: Annotated[int, Field(ge=0, le=100_000)]


class SchoolCapacity(BaseModel):
    school_id: str
    capacity: int
    reserved: int
    open: int

    @classmethod
    def of(cls, row: ServiceCapacity) -> "SchoolCapacity":
        return cls(school_id=row.school_id, capacity=row.capacity, reserved=row.reserved,
                   open=max(0, row.capacity - row.reserved))


class ServiceView(BaseModel):
    id: str
    name: str | None
    need: str
    status: str
    schools: list[str]
    grades: list[int]
    min_age: int | None
    max_age: int | None
    languages: list[str]
    capacity: int = Field(description="slots at all its schools together")
    reserved: int
    capacity_by_school: list[SchoolCapacity]

    @classmethod
    def of(cls, service: PartnerService, partner: Partner,
           capacity: list[ServiceCapacity]) -> "ServiceView":
        rows = sorted(capacity, key=lambda r: r.school_id)
        return cls(
            id=service.id, name=service.name, need=service.need, status=service.status,
            schools=service.schools, grades=service.grades, min_age=service.min_age,
            max_age=service.max_age, languages=service.service_languages or partner.languages,
            capacity=sum(r.capacity for r in rows), reserved=sum(r.reserved for r in rows),
            capacity_by_school=[SchoolCapacity.of(r) for r in rows])


class PartnerAnswers(BaseModel):
    """What matching has learnt of the partner so far (it ranks by these)."""

    matched: int
    accepted: int
    declined: int
    active: int  # referrals it holds now


NO_ANSWERS = PartnerAnswers(matched=0, accepted=0, declined=0, active=0)


class PartnerView(BaseModel):
    id: str
    district_id: str
    name: str
    languages: list[str]
    status: str
    source: str
    hsds_id: str | None
    in_school_of: str | None = Field(description="the school whose own staff support it is")
    created_at: datetime
    services: list[ServiceView]
    answers: PartnerAnswers

    @classmethod
    def of(cls, partner: Partner, services: list[PartnerService],
           capacity: dict[str, list[ServiceCapacity]], stats: PartnerStats | None
           ) -> "PartnerView":
        """The partner with its services, their slots by school (``capacity`` by service id)
        and what matching has learnt of it (``stats``, None for a partner never matched)."""
        return cls(id=partner.id, district_id=partner.district_id, name=partner.name,
                   languages=partner.languages, status=partner.status, source=partner.source,
                   hsds_id=partner.hsds_id, in_school_of=partner.in_school_of,
                   created_at=partner.created_at,
                   services=[ServiceView.of(s, partner, capacity.get(s.id, []))
                             for s in services],
                   answers=PartnerAnswers.model_validate(stats, from_attributes=True)
                   if stats else NO_ANSWERS)
