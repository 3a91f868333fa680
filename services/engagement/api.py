"""Families and their contact log over HTTP. Personal data lives here and leaves only on
internal subjects, to notifications."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import uuid4

import phonenumbers
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)
from sqlalchemy import select

from contracts.events import FamilyRegistered
from contracts.taxonomy import Channel, ContactKind
from runtime.db import utcnow
from runtime.errors import Conflict, NotFound
from runtime.outbox import UnitOfWork
from runtime.service import ServiceRuntime
from services.engagement.config import EngagementConfig
from services.engagement.contacts import REACHED, log_contact, mark_unreachable, referral_chain
from services.engagement.tables import ContactLogEntry, Family, Outreach, Student

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


ALREADY_APPLIED = {"Already-Applied": {"description": "true when the request was a retry that "
                                      "changed nothing", "schema": {"type": "string"}}}
MAX_OFFSET = 10_000_000  # past any district's size; keeps the database's integers in range


class StudentLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student_ref: Token = Field(description="the district's pseudonymous reference, not a name")
    grade: int | None = Field(default=None, ge=-1, le=12)


class LinkStudent(StudentLink):
    """A student linked to a family later; the district in the body, as in every write."""

    district_id: Token


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
    students: list[StudentLink] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _reachable_by_preference(self) -> "RegisterFamily":
        if self.preferred_channel == Channel.sms and not self.phone:
            raise ValueError("preferred_channel sms needs a phone")
        if self.preferred_channel == Channel.email and not self.email:
            raise ValueError("preferred_channel email needs an email")
        return self


class UpdateFamily(BaseModel):
    """Preferences and consent as the family states them; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    district_id: Token
    preferred_language: Language | None = None
    preferred_channel: Channel | None = None
    phone: Phone | None = None
    email: EmailStr | None = None
    sms_consent: bool | None = None
    email_consent: bool | None = None


class StudentView(BaseModel):
    student_ref: str
    school_id: str
    grade: int | None


class OutreachView(BaseModel):
    id: str
    referral_id: str | None
    kind: str
    status: str
    attempts: int
    next_check_at: datetime | None
    created_at: datetime
    updated_at: datetime


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
    erased_at: datetime | None = None
    erased_by: str | None = None
    retired_at: datetime | None = None  # no longer in the district's roster (ensemble roster)


class LogContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    kind: ContactKind
    outcome: Literal["reached", "no_answer", "left_message", "wrong_number"] = "reached"
    referral_id: str | None = Field(default=None, max_length=64)
    by: str = Field(default="coordinator", max_length=128)
    note: str | None = Field(default=None, max_length=500)
    at: AwareDatetime | None = Field(default=None, description="with its UTC offset")


class ContactView(BaseModel):
    id: str
    kind: str
    outcome: str
    at: datetime
    by: str
    referral_id: str | None
    note: str | None


def field_error(field: str, message: str) -> RequestValidationError:
    """A 422 naming the field, as FastAPI answers for a body that fails validation."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def _family_view(f: Family) -> FamilyView:
    return FamilyView.model_validate(f, from_attributes=True)


async def _link_student(uow: UnitOfWork, family: Family, link: StudentLink) -> Student:
    student = await uow.session.get(Student, (family.district_id, link.student_ref))
    if student is None:
        student = Student(district_id=family.district_id, student_ref=link.student_ref,
                          family_id=family.id, school_id=family.school_id, grade=link.grade)
        uow.session.add(student)
    else:
        student.family_id, student.school_id, student.grade = (family.id, family.school_id,
                                                               link.grade)
    return student


def caller(request: Request, fallback: str) -> str:
    """Who is asking: the bearer token's subject when the host checks tokens."""
    principal = getattr(request.state, "principal", None)
    return str(getattr(principal, "subject", None) or fallback)[:100]


def build_router(rt: ServiceRuntime, config: EngagementConfig | None = None) -> APIRouter:
    router = APIRouter()
    config = config or EngagementConfig()

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
                        email_opted_out=False, **body.model_dump(exclude={"students"}))
        async with rt.unit_of_work() as uow:
            uow.session.add(family)
            for link in body.students:
                await _link_student(uow, family, link)
            uow.emit(
                FamilyRegistered(family_id=family.id, school_id=family.school_id,
                                 preferred_language=family.preferred_language,
                                 preferred_channel=body.preferred_channel),
                district=family.district_id, school=family.school_id, subject=family.id,
            )
        return _family_view(family)

    @router.get("/families", response_model=list[FamilyView])
    async def list_(district_id: Token, school_id: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> list[FamilyView]:
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

    @router.patch("/families/{family_id}", response_model=FamilyView)
    async def update(family_id: str, body: UpdateFamily) -> FamilyView:
        async with rt.unit_of_work() as uow:
            family = await _family(uow, body.district_id, family_id)
            if family.erased_at is not None:
                raise Conflict(f"family {family_id} was erased: register the family anew")
            for name, value in body.model_dump(exclude={"district_id"}, exclude_none=True).items():
                setattr(family, name, value)
            if family.preferred_channel == Channel.sms and not family.phone:
                raise field_error("preferred_channel", "sms needs a phone")
            if family.preferred_channel == Channel.email and not family.email:
                raise field_error("preferred_channel", "email needs an email")
        return _family_view(family)

    @router.post("/families/{family_id}/students", status_code=201, response_model=StudentView)
    async def link_student(family_id: str, body: LinkStudent) -> StudentView:
        async with rt.unit_of_work() as uow:
            family = await _family(uow, body.district_id, family_id)
            student = await _link_student(uow, family, body)
        return StudentView.model_validate(student, from_attributes=True)

    @router.get("/families/{family_id}/students", response_model=list[StudentView])
    async def students(family_id: str, district_id: Token) -> list[StudentView]:
        async with rt.unit_of_work() as uow:
            await _family(uow, district_id, family_id)
            rows = (await uow.session.scalars(select(Student).where(
                Student.district_id == district_id, Student.family_id == family_id)
                .order_by(Student.student_ref))).all()
        return [StudentView.model_validate(s, from_attributes=True) for s in rows]

    @router.get("/families/{family_id}/outreach", response_model=list[OutreachView])
    async def outreach(family_id: str, district_id: Token) -> list[OutreachView]:
        async with rt.unit_of_work() as uow:
            await _family(uow, district_id, family_id)
            rows = (await uow.session.scalars(select(Outreach).where(
                Outreach.family_id == family_id).order_by(Outreach.created_at))).all()
        return [OutreachView.model_validate(o, from_attributes=True) for o in rows]

    @router.post("/families/{family_id}/contacts", status_code=201, response_model=ContactView,
                 responses={200: {"model": ContactView, "headers": ALREADY_APPLIED,
                                  "description": "the same contact again, logged once"}})
    async def log(family_id: str, body: LogContact, request: Request,
                  response: Response) -> ContactView:
        """A coordinator's call, visit, conference or meeting. Reached: the family is contacted
        (FamilyContacted). Not reached, about a referral: one more attempt for it. The same
        contact sent again (same kind, outcome, referral, author and `at`) answers 200 with
        Already-Applied: true and counts nothing twice."""
        now = utcnow()
        by = f"coordinator:{caller(request, body.by)}"
        async with rt.unit_of_work() as uow:
            family = await _family(uow, body.district_id, family_id)
            if body.at is not None:
                same = await uow.session.scalar(select(ContactLogEntry).where(
                    ContactLogEntry.family_id == family.id, ContactLogEntry.kind == body.kind,
                    ContactLogEntry.outcome == body.outcome, ContactLogEntry.at == body.at,
                    ContactLogEntry.by == by,
                    ContactLogEntry.referral_id.is_(None) if body.referral_id is None
                    else ContactLogEntry.referral_id == body.referral_id).limit(1))
                if same is not None:
                    response.status_code = 200
                    response.headers["Already-Applied"] = "true"
                    return ContactView.model_validate(same, from_attributes=True)
            open_outreach = None
            if body.referral_id:
                open_outreach = await uow.session.scalar(
                    select(Outreach).where(Outreach.family_id == family.id,
                                           Outreach.referral_id == body.referral_id,
                                           Outreach.status.in_(("requested", "awaiting_reply")))
                    .order_by(Outreach.created_at.desc()).limit(1)
                    .with_for_update())  # an event about it may be applied at the same time
            chain = (open_outreach.correlation_id if open_outreach else
                     await referral_chain(uow.session, family.id, body.referral_id))
            entry = log_contact(uow, family, kind=body.kind, at=body.at or now, by=by,
                                outcome=body.outcome, referral_id=body.referral_id,
                                outreach_id=open_outreach.id if open_outreach else None,
                                note=body.note, correlation=chain)
            if open_outreach is not None:
                if body.outcome == REACHED:
                    open_outreach.status = "contacted"
                    open_outreach.next_check_at = None
                    open_outreach.updated_at = now
                else:
                    open_outreach.attempts += 1
                    if open_outreach.attempts >= config.outreach_max_attempts:
                        mark_unreachable(uow, open_outreach, now)
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
