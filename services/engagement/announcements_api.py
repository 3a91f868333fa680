"""Announcements to every family of a school or district, over HTTP: queued at once, fanned out
in the background (announcements.py), progress read here.

Module-level routes on ``router``, given ``EngagementRoutes`` through ``Wired``; the models are
in schemas.py."""

from typing import Annotated
from uuid import NAMESPACE_URL, uuid4, uuid5

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from runtime.errors import DomainError, NotFound
from services.engagement.api import caller
from services.engagement.deps import EngagementRoutes, Wired
from services.engagement.schemas import Announce, AnnouncementView, Token
from services.engagement.tables import Announcement

router = APIRouter()


class Forbidden(DomainError):
    status_code = 403


@router.post("/announcements", status_code=202, response_model=AnnouncementView,
             responses={200: {"model": AnnouncementView, "description": (
                 "the announcement this Idempotency-Key already made (Idempotent-Replay)")}})
async def announce(
    deps: Wired, body: Announce, request: Request, response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> AnnouncementView:
    """Queued at once; families are fanned out in the background in chunks. A coordinator
    announces to one of their schools; the whole district is for district admins. With an
    Idempotency-Key, a retried request answers the announcement it made (200), so no
    family hears it twice."""
    _check_audience(deps, body, request)
    by = caller(request, "coordinator")
    # The key's announcement has an id made from it (per district and caller): a retry
    # finds it by primary key, and two racing copies cannot both insert it.
    announcement_id = str(uuid5(NAMESPACE_URL, f"ensemble:announcement:{body.district_id}:"
                                f"{by}:{idempotency_key}")) if idempotency_key else str(uuid4())
    if idempotency_key:
        earlier = await _earlier(deps, announcement_id)
        if earlier is not None:
            return _replayed(earlier, response)
    announcement = Announcement(
        id=announcement_id, district_id=body.district_id, school_id=body.school_id,
        title=body.title, body=body.body, urgency=body.urgency.value, status="fanning_out",
        cursor="", families_targeted=0, families_unreachable=0, chunks=0,
        created_by=by, created_at=deps.clock())
    try:
        async with deps.runtime.unit_of_work() as uow:
            uow.session.add(announcement)
            uow.after_commit.append(deps.wake_fan_out)
    except IntegrityError:
        if not idempotency_key:
            raise
        earlier = await _earlier(deps, announcement_id)  # the same request, committed just before
        if earlier is None:
            raise
        return _replayed(earlier, response)
    return AnnouncementView.model_validate(announcement, from_attributes=True)


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


async def _earlier(deps: EngagementRoutes, announcement_id: str) -> Announcement | None:
    async with deps.runtime.unit_of_work() as uow:
        return await uow.session.get(Announcement, announcement_id)


def _replayed(earlier: Announcement, response: Response) -> AnnouncementView:
    response.status_code = 200
    response.headers["Idempotent-Replay"] = "true"
    return AnnouncementView.model_validate(earlier, from_attributes=True)
