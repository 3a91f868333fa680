"""The coordinator's HTTP interface to referrals."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from contracts.taxonomy import Consent, Need, Outcome, Urgency
from runtime.errors import Conflict, NotFound
from runtime.service import ServiceRuntime
from services.referrals.handlers import family_is_known
from services.referrals.referrals import (
    close_referral,
    find_open_duplicate,
    get_referral,
    open_referral,
)
from services.referrals.tables import Referral, TimelineEntry

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class OpenReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    school_id: Token
    student_ref: Annotated[str, Field(min_length=1, max_length=128,
                                      description="pseudonymous student reference")]
    family_id: Token
    need: Need
    urgency: Urgency = Urgency.routine
    consent: Consent = Consent.pending
    grade: int | None = Field(default=None, ge=-1, le=12)
    note: str | None = Field(default=None, max_length=2000,
                             description="free text kept in referrals, never sent in an event")
    opened_by: str = Field(default="coordinator", max_length=128)


class CloseReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    outcome: Outcome
    closed_by: str = Field(default="coordinator", max_length=128)


class ReferralView(BaseModel):
    id: str
    district_id: str
    school_id: str
    student_ref: str
    family_id: str
    need: str
    urgency: str
    consent: str
    grade: int | None
    status: str
    partner_id: str | None
    outcome: str | None
    opened_at: datetime
    updated_at: datetime
    family_contacted_at: datetime | None
    closed_at: datetime | None
    duplicate_of_open: bool = False

    @classmethod
    def of(cls, referral: Referral, duplicate: bool = False) -> "ReferralView":
        data = {k: getattr(referral, k) for k in cls.model_fields if k != "duplicate_of_open"}
        return cls(**data, duplicate_of_open=duplicate)


class TimelineView(BaseModel):
    at: datetime
    event: str
    actor: str
    status_after: str
    data: dict[str, Any]


class ReferralDetail(ReferralView):
    note: str | None
    timeline: list[TimelineView]


def build_router(rt: ServiceRuntime) -> APIRouter:
    router = APIRouter()

    @router.post("/referrals", status_code=201, response_model=ReferralView)
    async def open_(
        body: OpenReferral,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> ReferralView:
        if rt.districts.school(body.district_id, body.school_id) is None:
            raise NotFound(f"school {body.school_id} not found in district {body.district_id}")
        async with rt.unit_of_work() as uow:
            if idempotency_key:
                earlier = await uow.session.scalar(
                    select(Referral).where(
                        Referral.district_id == body.district_id,
                        Referral.idempotency_key == idempotency_key,
                    )
                )
                if earlier is not None:
                    response.status_code = 200
                    response.headers["Idempotent-Replay"] = "true"
                    return ReferralView.of(earlier)
            if not await family_is_known(uow, body.district_id, body.family_id):
                raise Conflict(
                    f"family {body.family_id} is not registered in district {body.district_id}"
                )
            duplicate = await find_open_duplicate(
                uow, body.district_id, body.student_ref, body.need
            )
            if duplicate is not None:
                response.status_code = 200
                response.headers["Duplicate-Of-Open-Referral"] = duplicate.id
                return ReferralView.of(duplicate, duplicate=True)
            referral = await open_referral(
                uow,
                district_id=body.district_id,
                school_id=body.school_id,
                student_ref=body.student_ref,
                family_id=body.family_id,
                need=body.need,
                urgency=body.urgency,
                consent=body.consent,
                grade=body.grade,
                note=body.note,
                idempotency_key=idempotency_key,
                actor=f"coordinator:{body.opened_by}",
            )
        response.headers["Location"] = f"/api/v1/referrals/{referral.id}"
        return ReferralView.of(referral)

    @router.get("/referrals", response_model=list[ReferralView])
    async def list_(
        district_id: Token,
        school_id: str | None = None,
        status: str | None = None,
        need: Need | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[ReferralView]:
        query = select(Referral).where(Referral.district_id == district_id)
        if school_id:
            query = query.where(Referral.school_id == school_id)
        if status:
            query = query.where(Referral.status == status)
        if need:
            query = query.where(Referral.need == need)
        query = query.order_by(Referral.opened_at.desc(), Referral.id).limit(limit).offset(offset)
        async with rt.unit_of_work() as uow:
            return [ReferralView.of(r) for r in (await uow.session.scalars(query)).all()]

    @router.get("/referrals/{referral_id}", response_model=ReferralDetail)
    async def detail(referral_id: str, district_id: Token) -> ReferralDetail:
        async with rt.unit_of_work() as uow:
            referral = await get_referral(uow, district_id, referral_id)
            entries = (
                await uow.session.scalars(
                    select(TimelineEntry)
                    .where(TimelineEntry.referral_id == referral_id)
                    .order_by(TimelineEntry.seq)
                )
            ).all()
        return ReferralDetail(
            **ReferralView.of(referral).model_dump(),
            note=referral.note,
            timeline=[
                TimelineView(at=e.at, event=e.event_type, actor=e.actor,
                             status_after=e.status_after, data=e.data)
                for e in entries
            ],
        )

    @router.post("/referrals/{referral_id}/close", response_model=ReferralView)
    async def close(referral_id: str, body: CloseReferral) -> ReferralView:
        async with rt.unit_of_work() as uow:
            referral = await close_referral(
                uow, body.district_id, referral_id, body.outcome, f"coordinator:{body.closed_by}"
            )
        return ReferralView.of(referral)

    return router
