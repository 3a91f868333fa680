"""Announcements to every family of a school or district, over HTTP: queued at once, fanned out
in the background (announcements.py), progress read here."""

from datetime import datetime
from typing import Annotated
from uuid import NAMESPACE_URL, uuid4, uuid5

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from contracts.taxonomy import Urgency
from runtime.db import utcnow
from runtime.errors import DomainError, NotFound
from runtime.service import ServiceRuntime
from services.engagement.announcements import AnnouncementFanOut
from services.engagement.api import Token, caller
from services.engagement.tables import Announcement


class Forbidden(DomainError):
    status_code = 403


class Announce(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    school_id: Token | None = Field(default=None, description="the whole district if absent")
    title: Annotated[str, Field(min_length=1, max_length=200)]
    body: Annotated[str, Field(min_length=1, max_length=2000)]
    urgency: Urgency = Urgency.routine


class AnnouncementView(BaseModel):
    id: str
    district_id: str
    school_id: str | None
    title: str
    urgency: str
    status: str = Field(description="fanning_out, then queued (delivery: /message-batches/{id})")
    families_targeted: int
    families_unreachable: int
    chunks: int
    created_at: datetime
    finished_at: datetime | None


def build_announcements_router(rt: ServiceRuntime, fan_out: AnnouncementFanOut) -> APIRouter:
    router = APIRouter()

    @router.post("/announcements", status_code=202, response_model=AnnouncementView,
                 responses={200: {"model": AnnouncementView, "description": (
                     "the announcement this Idempotency-Key already made (Idempotent-Replay)")}})
    async def announce(
        body: Announce, request: Request, response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> AnnouncementView:
        """Queued at once; families are fanned out in the background in chunks. A coordinator
        announces to one of their schools; the whole district is for district admins. With an
        Idempotency-Key, a retried request answers the announcement it made (200), so no
        family hears it twice."""
        principal = getattr(request.state, "principal", None)
        if body.school_id is None and str(getattr(principal, "role", "")) == "coordinator":
            raise Forbidden("a coordinator announces to one of their schools (school_id)")
        if body.school_id and rt.districts.school(body.district_id, body.school_id) is None:
            raise NotFound(f"school {body.school_id} not found in district {body.district_id}")
        if rt.districts.get(body.district_id) is None:
            raise NotFound(f"district {body.district_id} not found")
        by = caller(request, "coordinator")
        # The key's announcement has an id made from it (per district and caller): a retry
        # finds it by primary key, and two racing copies cannot both insert it.
        announcement_id = str(uuid5(NAMESPACE_URL, f"ensemble:announcement:{body.district_id}:"
                                    f"{by}:{idempotency_key}")) if idempotency_key else str(uuid4())
        if idempotency_key:
            async with rt.unit_of_work() as uow:
                earlier = await uow.session.get(Announcement, announcement_id)
            if earlier is not None:
                return _replayed(earlier, response)
        announcement = Announcement(
            id=announcement_id, district_id=body.district_id, school_id=body.school_id,
            title=body.title, body=body.body, urgency=body.urgency.value, status="fanning_out",
            cursor="", families_targeted=0, families_unreachable=0, chunks=0,
            created_by=by, created_at=utcnow())
        try:
            async with rt.unit_of_work() as uow:
                uow.session.add(announcement)
                uow.after_commit.append(fan_out.wake)
        except IntegrityError:
            if not idempotency_key:
                raise
            async with rt.unit_of_work() as uow:  # the same request, committed just before
                earlier = await uow.session.get(Announcement, announcement_id)
            if earlier is None:
                raise
            return _replayed(earlier, response)
        return AnnouncementView.model_validate(announcement, from_attributes=True)

    def _replayed(earlier: Announcement, response: Response) -> AnnouncementView:
        response.status_code = 200
        response.headers["Idempotent-Replay"] = "true"
        return AnnouncementView.model_validate(earlier, from_attributes=True)

    @router.get("/announcements", response_model=list[AnnouncementView])
    async def announcement_list(district_id: Token, limit: Annotated[int, Query(ge=1, le=100)]
                                = 50) -> list[AnnouncementView]:
        """The newest first (a coordinator sees those of their schools)."""
        query = (select(Announcement).where(Announcement.district_id == district_id)
                 .order_by(Announcement.created_at.desc(), Announcement.id).limit(limit))
        async with rt.unit_of_work() as uow:
            rows = (await uow.session.scalars(query)).all()
        return [AnnouncementView.model_validate(r, from_attributes=True) for r in rows]

    @router.get("/announcements/{announcement_id}", response_model=AnnouncementView)
    async def announcement_detail(announcement_id: str, district_id: Token) -> AnnouncementView:
        async with rt.unit_of_work() as uow:
            row = await uow.session.get(Announcement, announcement_id)
        if row is None or row.district_id != district_id:
            raise NotFound(f"announcement {announcement_id} not found")
        return AnnouncementView.model_validate(row, from_attributes=True)

    return router
