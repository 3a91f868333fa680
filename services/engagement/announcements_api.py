"""Announcements to every family of a school or district, over HTTP: queued at once, fanned out
in the background (announcements.py), progress read here.

Module-level routes on ``router``, given ``EngagementRoutes`` through ``Wired``; the models are
in schemas.py."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from runtime.auth import caller
from runtime.errors import DomainError, NotFound
from runtime.idempotency import REPLAYED, IdempotencyKey, create_once, keyed_id
from services.engagement.deps import EngagementRoutes, Wired
from services.engagement.schemas import Announce, AnnouncementView, Token
from services.engagement.tables import Announcement

router = APIRouter()


class Forbidden(DomainError):
    status_code = 403


@router.post("/announcements", status_code=202, response_model=AnnouncementView,
             responses=REPLAYED)
async def announce(deps: Wired, body: Announce, request: Request, response: Response,
                   idempotency_key: IdempotencyKey = None) -> AnnouncementView:
    """Queued at once; families are fanned out in the background in chunks. A coordinator
    announces to one of their schools; the whole district is for district admins. With an
    Idempotency-Key, a retried request answers the announcement it made (200), so no
    family hears it twice."""
    _check_audience(deps, body, request)
    by = caller(request, "coordinator")
    announcement_id = keyed_id("announcement", body.district_id, by, idempotency_key)

    async def find() -> AnnouncementView | None:
        async with deps.runtime.unit_of_work() as uow:
            earlier = await uow.session.get(Announcement, announcement_id)
        return None if earlier is None else AnnouncementView.model_validate(
            earlier, from_attributes=True)

    async def create() -> AnnouncementView:
        announcement = Announcement(
            id=announcement_id, district_id=body.district_id, school_id=body.school_id,
            title=body.title, body=body.body, urgency=body.urgency.value,
            status="fanning_out", cursor="", families_targeted=0, families_unreachable=0,
            chunks=0, created_by=by, created_at=deps.clock())
        async with deps.runtime.unit_of_work() as uow:
            uow.session.add(announcement)
            uow.after_commit.append(deps.wake_fan_out)
        return AnnouncementView.model_validate(announcement, from_attributes=True)

    return await create_once(idempotency_key, find, create, response)


@router.get("/announcements", response_model=list[AnnouncementView])
async def announcement_list(deps: Wired, district_id: Token,
                            limit: Annotated[int, Query(ge=1, le=100)] = 50
                            ) -> list[AnnouncementView]:
    """The newest first (a coordinator sees those of their schools)."""
    query = (select(Announcement).where(Announcement.district_id == district_id)
             .order_by(Announcement.created_at.desc(), Announcement.id).limit(limit))
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.scalars(query)).all()
    return [AnnouncementView.model_validate(r, from_attributes=True) for r in rows]


@router.get("/announcements/{announcement_id}", response_model=AnnouncementView)
async def announcement_detail(deps: Wired, announcement_id: str,
                              district_id: Token) -> AnnouncementView:
    async with deps.runtime.unit_of_work() as uow:
        row = await uow.session.get(Announcement, announcement_id)
    if row is None or row.district_id != district_id:
        raise NotFound(f"announcement {announcement_id} not found")
    return AnnouncementView.model_validate(row, from_attributes=True)


# What the routes share.


def _check_audience(deps: EngagementRoutes, body: Announce, request: Request) -> None:
    """A coordinator announces to one of their schools; the school and district exist."""
    principal = getattr(request.state, "principal", None)
    if body.school_id is None and str(getattr(principal, "role", "")) == "coordinator":
        raise Forbidden("a coordinator announces to one of their schools (school_id)")
    districts = deps.runtime.districts
    if body.school_id and districts.school(body.district_id, body.school_id) is None:
        raise NotFound(f"school {body.school_id} not found in district {body.district_id}")
    if districts.get(body.district_id) is None:
        raise NotFound(f"district {body.district_id} not found")
