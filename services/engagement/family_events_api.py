"""Family events (workshops, nights, conferences) with invitations and RSVPs, over HTTP.
(Announcements to every family of a school or district are in announcements_api.py.)

Module-level routes on ``router``, given ``EngagementRoutes`` through ``Wired``; the models are
in schemas.py."""

import secrets
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import uuid4
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from markupsafe import escape
from sqlalchemy import func, insert, select

from contracts.events import BulkRecipient, FamilyAttended, FamilyEventScheduled
from contracts.taxonomy import Urgency
from runtime.auth import caller
from runtime.erasure import erasure_barrier
from runtime.errors import NotFound
from runtime.idempotency import REPLAYED, IdempotencyKey, create_once, keyed_id
from runtime.uow import UnitOfWork
from services.engagement.contacts import emit_bulk, recipient
from services.engagement.deps import EngagementRoutes, Wired
from services.engagement.rsvp import record_rsvp
from services.engagement.schemas import (
    MAX_OFFSET,
    Attendance,
    EventView,
    InvitationView,
    Invite,
    InviteResult,
    ScheduleEvent,
    Token,
)
from services.engagement.tables import Family, FamilyEvent, Invitation, Student

PUBLIC_ROUTES = frozenset({("GET", "/rsvp/{invitation_id}"), ("POST", "/rsvp/{invitation_id}")})

router = APIRouter()


@router.post("/family-events", status_code=201, response_model=EventView, responses=REPLAYED)
async def schedule(deps: Wired, body: ScheduleEvent, request: Request, response: Response,
                   idempotency_key: IdempotencyKey = None) -> EventView:
    """With an Idempotency-Key, a retry answers the event it scheduled (200)."""
    school = deps.runtime.districts.school(body.district_id, body.school_id)
    if school is None:
        raise NotFound(f"school {body.school_id} not found in district {body.district_id}")
    by = caller(request, "coordinator")
    event_id = keyed_id("family-event", body.district_id, by, idempotency_key)

    async def find() -> EventView | None:
        async with deps.runtime.unit_of_work() as uow:
            earlier = await uow.session.get(FamilyEvent, event_id)
            return None if earlier is None else await _view(uow, earlier)

    async def create() -> EventView:
        event = FamilyEvent(id=event_id, district_id=body.district_id,
                            school_id=body.school_id, title=body.title,
                            # In UTC as stored, so this answer and every later read agree.
                            starts_at=body.starts_at.astimezone(UTC), place=body.place,
                            languages=body.languages or school.languages, created_by=by,
                            created_at=deps.clock())
        async with deps.runtime.unit_of_work() as uow:
            uow.session.add(event)
            uow.emit(FamilyEventScheduled(event_id=event.id, school_id=event.school_id,
                                          title=event.title, starts_at=event.starts_at,
                                          languages=event.languages),
                     district=event.district_id, school=event.school_id, subject=event.id)
        return EventView(id=event.id, district_id=event.district_id,
                         school_id=event.school_id, title=event.title,
                         starts_at=event.starts_at, place=event.place,
                         languages=event.languages)

    return await create_once(idempotency_key, find, create, response)


@router.get("/family-events", response_model=list[EventView])
async def event_list(deps: Wired, district_id: Token, school_id: Token | None = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 50) -> list[EventView]:
    """The latest first (by start), each with its invitation and RSVP counts."""
    query = select(FamilyEvent).where(FamilyEvent.district_id == district_id)
    if school_id:
        query = query.where(FamilyEvent.school_id == school_id)
    query = query.order_by(FamilyEvent.starts_at.desc(), FamilyEvent.id).limit(limit)
    async with deps.runtime.unit_of_work() as uow:
        return [await _view(uow, e) for e in (await uow.session.scalars(query)).all()]


@router.get("/family-events/{event_id}", response_model=EventView)
async def event_detail(deps: Wired, event_id: str, district_id: Token) -> EventView:
    async with deps.runtime.unit_of_work() as uow:
        return await _view(uow, await _event(uow, district_id, event_id))


@router.post("/family-events/{event_id}/invitations", response_model=InviteResult)
async def invite(deps: Wired, event_id: str, body: Invite) -> InviteResult:
    """Invite the school's families (or those with a student in the grades) in one go:
    invitations are written with one multi-row INSERT and reach notifications as a few
    bulk requests."""
    async with deps.runtime.unit_of_work() as uow:
        await erasure_barrier(uow)  # the families' details as an erasure left them
        event = await _event(uow, body.district_id, event_id)
        families = await _families_to_invite(uow, event, body.grades)
        already = set((await uow.session.scalars(
            select(Invitation.family_id).where(Invitation.event_id == event.id))).all())
        school = deps.runtime.districts.school(event.district_id, event.school_id)
        starts = local_time(event.starts_at, school.timezone if school else None)
        rows, recipients = _invitations(deps, event, school.name if school else event.school_id,
                                        [f for f in families if f.id not in already])
        if rows:
            await uow.session.execute(insert(Invitation), rows)
        requests = emit_bulk(uow, event.district_id, event.id, "family_event_invitation",
                             Urgency.routine, {"title": event.title, "place": event.place,
                                               "starts_at_local": starts},
                             recipients, deps.settings.bulk_chunk)
    return InviteResult(invited=len(recipients), unreachable=len(rows) - len(recipients),
                        already_invited=len(already), requests=requests)


@router.get("/family-events/{event_id}/invitations", response_model=list[InvitationView])
async def invitations(deps: Wired, event_id: str, district_id: Token,
                      limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                      offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                      ) -> list[InvitationView]:
    async with deps.runtime.unit_of_work() as uow:
        await _event(uow, district_id, event_id)
        rows = (await uow.session.scalars(
            select(Invitation).where(Invitation.event_id == event_id)
            .order_by(Invitation.family_id).limit(min(limit, 5000)).offset(offset))).all()
    return [InvitationView.model_validate(i, from_attributes=True) for i in rows]


@router.post("/family-events/{event_id}/attendance", response_model=EventView)
async def attendance(deps: Wired, event_id: str, body: Attendance) -> EventView:
    async with deps.runtime.unit_of_work() as uow:
        event = await _event(uow, body.district_id, event_id)
        rows = (await uow.session.scalars(select(Invitation).where(
            Invitation.event_id == event.id,
            Invitation.family_id.in_(body.family_ids)))).all()
        if len(rows) != len(set(body.family_ids)):
            raise NotFound("some families were not invited to this event")
        for invitation in rows:
            if body.attended and not invitation.attended:
                uow.emit(FamilyAttended(event_id=event.id, family_id=invitation.family_id),
                         district=event.district_id, school=event.school_id,
                         subject=event.id)
            invitation.attended = body.attended
        return await _view(uow, event)


# The family's side: the signed link in the invitation (no bearer token, see PUBLIC_ROUTES).


@router.get("/rsvp/{invitation_id}", response_class=HTMLResponse)
async def rsvp_page(deps: Wired, invitation_id: str, token: str) -> HTMLResponse:
    async with deps.runtime.unit_of_work() as uow:
        invitation = await _invitation(uow, invitation_id, token)
        event = await uow.session.get(FamilyEvent, invitation.event_id)
    assert event is not None
    action = f"/api/v1/rsvp/{escape(invitation_id)}?token={escape(token)}"
    return HTMLResponse(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>RSVP</title></head><body>'
        f"<p>{escape(event.title)}</p>"
        f'<form method="post" action="{action}&amp;response=yes"><button>Yes</button></form>'
        f'<form method="post" action="{action}&amp;response=no"><button>No</button></form>'
        "</body></html>")


@router.post("/rsvp/{invitation_id}", response_class=HTMLResponse)
async def rsvp(deps: Wired, invitation_id: str, token: str, response: Literal["yes", "no"]
               ) -> HTMLResponse:
    async with deps.runtime.unit_of_work() as uow:
        invitation = await _invitation(uow, invitation_id, token)
        record_rsvp(uow, invitation, response, "link", deps.clock())
    return HTMLResponse("<!DOCTYPE html><html><body><p>Thank you.</p></body></html>")


# What the routes share.


def local_time(at: datetime, zone: str | None) -> str:
    return at.astimezone(ZoneInfo(zone or "UTC")).strftime("%Y-%m-%d %H:%M")


async def _event(uow: UnitOfWork, district_id: str, event_id: str) -> FamilyEvent:
    event = await uow.session.get(FamilyEvent, event_id)
    if event is None or event.district_id != district_id:
        raise NotFound(f"family event {event_id} not found")
    return event


async def _view(uow: UnitOfWork, event: FamilyEvent) -> EventView:
    counts = dict((await uow.session.execute(
        select(Invitation.reachable, func.count()).where(Invitation.event_id == event.id)
        .group_by(Invitation.reachable))).all())
    answers = dict((await uow.session.execute(
        select(Invitation.response, func.count()).where(Invitation.event_id == event.id)
        .group_by(Invitation.response))).all())
    attended = await uow.session.scalar(select(func.count()).where(
        Invitation.event_id == event.id, Invitation.attended.is_(True)))
    return EventView(id=event.id, district_id=event.district_id, school_id=event.school_id,
                     title=event.title, starts_at=event.starts_at, place=event.place,
                     languages=event.languages, invited=counts.get(True, 0),
                     unreachable=counts.get(False, 0), yes=answers.get("yes", 0),
                     no=answers.get("no", 0), attended=attended or 0)


async def _families_to_invite(uow: UnitOfWork, event: FamilyEvent,
                              grades: list[int] | None) -> list[Family]:
    """The school's families, or those with a student in ``grades``."""
    query = select(Family).where(Family.district_id == event.district_id,
                                 Family.school_id == event.school_id,
                                 Family.retired_at.is_(None))  # left the roster
    if grades is not None:
        query = query.where(Family.id.in_(
            select(Student.family_id).where(Student.district_id == event.district_id,
                                            Student.school_id == event.school_id,
                                            Student.grade.in_(grades))))
    return list((await uow.session.scalars(query.order_by(Family.id))).all())


def _invitations(deps: EngagementRoutes, event: FamilyEvent, school_name: str,
                 families: list[Family]) -> tuple[list[dict[str, object]], list[BulkRecipient]]:
    """An invitation row for each family (with its signed RSVP link), and the recipients of
    the bulk requests: those a channel may reach."""
    base = deps.runtime.settings.public_base_url
    now = deps.clock()
    rows, recipients = [], []
    for family in families:
        invitation_id, token = str(uuid4()), secrets.token_hex(16)
        made = recipient(family, school_name,
                         rsvp_url=f"{base}/api/v1/rsvp/{invitation_id}?token={token}")
        rows.append({"id": invitation_id, "event_id": event.id,
                     "district_id": event.district_id, "school_id": event.school_id,
                     "family_id": family.id, "token": token, "reachable": made is not None,
                     "attended": False, "invited_at": now})
        if made:
            recipients.append(made)
    return rows, recipients


async def _invitation(uow: UnitOfWork, invitation_id: str, token: str) -> Invitation:
    invitation = await uow.session.get(Invitation, invitation_id)
    if invitation is None or not secrets.compare_digest(invitation.token, token):
        raise NotFound("unknown invitation link")
    return invitation
