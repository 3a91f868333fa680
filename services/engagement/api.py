"""Families and their contact log over HTTP. Personal data lives here and leaves only on
internal subjects, to notifications.

Every route is a module-level function on ``router``; each takes what the service was built
with (``EngagementRoutes``: its runtime, settings and clock) through ``Wired``. The request and
response models are in schemas.py; family events, announcements and replies waiting for a
coordinator have their own routers (family_events_api.py, announcements_api.py,
replies_api.py)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select

from contracts.events import FamilyRegistered
from contracts.taxonomy import Channel
from runtime.auth import caller
from runtime.errors import Conflict, NotFound
from runtime.idempotency import REPLAYED, IdempotencyKey, create_once, keyed_id
from runtime.uow import UnitOfWork
from services.engagement.contacts import (
    REACHED,
    answered,
    log_contact,
    mark_unreachable,
    referral_chain,
)
from services.engagement.deps import EngagementRoutes, Wired
from services.engagement.lifecycle import OPEN, out_of_attempts
from services.engagement.schemas import (
    MAX_OFFSET,
    ContactView,
    FamilyView,
    LinkStudent,
    LogContact,
    OutreachView,
    RegisterFamily,
    StudentLink,
    StudentView,
    Token,
    UpdateFamily,
)
from services.engagement.tables import ContactLogEntry, Family, Outreach, Student

router = APIRouter()

ALREADY_APPLIED = {"Already-Applied": {"description": "true when the request was a retry that "
                                      "changed nothing", "schema": {"type": "string"}}}


@router.post("/families", status_code=201, response_model=FamilyView, responses=REPLAYED)
async def register(deps: Wired, body: RegisterFamily, request: Request, response: Response,
                   idempotency_key: IdempotencyKey = None) -> FamilyView:
    """With an Idempotency-Key, a retried registration answers the family it made (200)."""
    rt = deps.runtime
    if rt.districts.school(body.district_id, body.school_id) is None:
        raise NotFound(f"school {body.school_id} not found in district {body.district_id}")
    family_id = keyed_id("family", body.district_id, caller(request, "anonymous"),
                         idempotency_key)

    async def find() -> FamilyView | None:
        async with rt.unit_of_work() as uow:
            earlier = await uow.session.get(Family, family_id)
        return _family_view(earlier) if earlier is not None else None

    async def create() -> FamilyView:
        family = Family(id=family_id, created_at=deps.clock(), sms_opted_out=False,
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

    return await create_once(idempotency_key, find, create, response)


@router.get("/families", response_model=list[FamilyView])
async def list_(deps: Wired, district_id: Token, school_id: str | None = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100,
                offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> list[FamilyView]:
    query = select(Family).where(Family.district_id == district_id)
    if school_id:
        query = query.where(Family.school_id == school_id)
    query = query.order_by(Family.created_at, Family.id).limit(min(limit, 500)).offset(offset)
    async with deps.runtime.unit_of_work() as uow:
        return [_family_view(f) for f in (await uow.session.scalars(query)).all()]


@router.get("/families/{family_id}", response_model=FamilyView)
async def detail(deps: Wired, family_id: str, district_id: Token) -> FamilyView:
    async with deps.runtime.unit_of_work() as uow:
        return _family_view(await _family(uow, district_id, family_id))


@router.patch("/families/{family_id}", response_model=FamilyView)
async def update(deps: Wired, family_id: str, body: UpdateFamily) -> FamilyView:
    async with deps.runtime.unit_of_work() as uow:
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
async def link_student(deps: Wired, family_id: str, body: LinkStudent) -> StudentView:
    async with deps.runtime.unit_of_work() as uow:
        family = await _family(uow, body.district_id, family_id)
        student = await _link_student(uow, family, body)
    return StudentView.model_validate(student, from_attributes=True)


@router.get("/families/{family_id}/students", response_model=list[StudentView])
async def students(deps: Wired, family_id: str, district_id: Token) -> list[StudentView]:
    async with deps.runtime.unit_of_work() as uow:
        await _family(uow, district_id, family_id)
        rows = (await uow.session.scalars(select(Student).where(
            Student.district_id == district_id, Student.family_id == family_id)
            .order_by(Student.student_ref))).all()
    return [StudentView.model_validate(s, from_attributes=True) for s in rows]


@router.get("/families/{family_id}/outreach", response_model=list[OutreachView])
async def outreach(deps: Wired, family_id: str, district_id: Token) -> list[OutreachView]:
    async with deps.runtime.unit_of_work() as uow:
        await _family(uow, district_id, family_id)
        rows = (await uow.session.scalars(select(Outreach).where(
            Outreach.family_id == family_id).order_by(Outreach.created_at))).all()
    return [OutreachView.model_validate(o, from_attributes=True) for o in rows]


@router.post("/families/{family_id}/contacts", status_code=201, response_model=ContactView,
             responses={200: {"model": ContactView, "headers": ALREADY_APPLIED,
                              "description": "the same contact again, logged once"}})
async def log(deps: Wired, family_id: str, body: LogContact, request: Request,
              response: Response) -> ContactView:
    """A coordinator's call, visit, conference or meeting. Reached: the family is contacted
    (FamilyContacted). Not reached, about a referral: one more attempt for it. The same
    contact sent again (same kind, outcome, referral, author and `at`) answers 200 with
    Already-Applied: true and counts nothing twice."""
    now = deps.clock()
    by = f"coordinator:{caller(request, body.by)}"
    async with deps.runtime.unit_of_work() as uow:
        family = await _family(uow, body.district_id, family_id)
        same = await _same_contact(uow, family, body, by)
        if same is not None:
            response.status_code = 200
            response.headers["Already-Applied"] = "true"
            return ContactView.model_validate(same, from_attributes=True)
        open_outreach = await _open_outreach(uow, family, body.referral_id)
        chain = (open_outreach.correlation_id if open_outreach else
                 await referral_chain(uow.session, family.id, body.referral_id))
        entry = log_contact(uow, family, kind=body.kind, at=body.at or now, by=by,
                            outcome=body.outcome, referral_id=body.referral_id,
                            outreach_id=open_outreach.id if open_outreach else None,
                            note=body.note, correlation=chain)
        if open_outreach is not None:
            _count_call(deps, uow, open_outreach, body.outcome == REACHED, now)
    return ContactView.model_validate(entry, from_attributes=True)


@router.get("/families/{family_id}/contacts", response_model=list[ContactView])
async def contacts(deps: Wired, family_id: str, district_id: Token) -> list[ContactView]:
    async with deps.runtime.unit_of_work() as uow:
        await _family(uow, district_id, family_id)
        entries = (await uow.session.scalars(
            select(ContactLogEntry).where(ContactLogEntry.family_id == family_id)
            .order_by(ContactLogEntry.at))).all()
    return [ContactView.model_validate(e, from_attributes=True) for e in entries]


# What the routes share (family_events_api.py, announcements_api.py and replies_api.py too).


def field_error(field: str, message: str) -> RequestValidationError:
    """A 422 naming the field, as FastAPI answers for a body that fails validation."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def _family_view(f: Family) -> FamilyView:
    return FamilyView.model_validate(f, from_attributes=True)


async def _family(uow: UnitOfWork, district_id: str, family_id: str) -> Family:
    family = await uow.session.get(Family, family_id)
    if family is None or family.district_id != district_id:
        raise NotFound(f"family {family_id} not found")
    return family


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


async def _same_contact(uow: UnitOfWork, family: Family, body: LogContact,
                        by: str) -> ContactLogEntry | None:
    """This very contact, logged before (a retry names the same `at`)."""
    if body.at is None:
        return None
    return await uow.session.scalar(select(ContactLogEntry).where(
        ContactLogEntry.family_id == family.id, ContactLogEntry.kind == body.kind,
        ContactLogEntry.outcome == body.outcome, ContactLogEntry.at == body.at,
        ContactLogEntry.by == by,
        ContactLogEntry.referral_id.is_(None) if body.referral_id is None
        else ContactLogEntry.referral_id == body.referral_id).limit(1))


async def _open_outreach(uow: UnitOfWork, family: Family,
                         referral_id: str | None) -> Outreach | None:
    """The referral's outreach still awaiting the family, locked: an event about it may be
    applied at the same time."""
    if not referral_id:
        return None
    return await uow.session.scalar(
        select(Outreach).where(Outreach.family_id == family.id,
                               Outreach.referral_id == referral_id,
                               Outreach.status.in_(sorted(OPEN)))
        .order_by(Outreach.created_at.desc()).limit(1)
        .with_for_update())


def _count_call(deps: EngagementRoutes, uow: UnitOfWork, outreach: Outreach, reached: bool,
                now: datetime) -> None:
    """A coordinator's call about an open outreach: the answer, or one more try."""
    if reached:
        answered(outreach, now)
        return
    outreach.attempts += 1
    if out_of_attempts(outreach.attempts, deps.settings.outreach_max_attempts):
        mark_unreachable(uow, outreach, now)
