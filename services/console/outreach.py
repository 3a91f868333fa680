"""Family events (create, invite, RSVPs, attendance) and announcements, with their sending
progress."""

from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from contracts.taxonomy import Urgency
from runtime.auth import Principal, Role
from services.console.api_client import Api, ApiError
from services.console.pages import (
    ApiDep,
    Console,
    ConsoleDep,
    PrincipalDep,
    SignedFormDep,
    my_schools,
    redirect,
    render,
    school_zone,
    staff_only,
)

router = APIRouter()


def _aware(c: Console, p: Principal, school_id: str, local: str) -> str:
    """A time typed in a datetime-local field means the school's clock; the API wants it
    with its offset. Unreadable text is passed on for the API to name the field."""
    try:
        moment = datetime.fromisoformat(local)
    except ValueError:
        return local
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(school_zone(c, p, school_id)))
    return moment.isoformat()


async def _progress(a: Api, p: Principal, batch_id: str) -> dict[str, Any] | None:
    """Sending progress of the messages of an event or announcement (none before the first)."""
    try:
        return await a.get(f"/message-batches/{quote(batch_id)}",  # type: ignore[no-any-return]
                           district_id=p.district)
    except ApiError as exc:
        if exc.status in (403, 404):
            return None
        raise


# --- family events ---------------------------------------------------------------------------


async def _events_page(request: Request, c: Console, p: Principal, a: Api, status: int = 200,
                       errors: dict[str, str] | None = None, message: str | None = None,
                       values: dict[str, str] | None = None) -> HTMLResponse:
    events = await a.get("/family-events", district_id=p.district)
    return render(request, "events.html.j2", status, events=events, errors=errors or {},
                  message=message, values=values or {}, schools=my_schools(c, p))


@router.get("/events", response_class=HTMLResponse)
async def event_list(request: Request, c: ConsoleDep, p: PrincipalDep,
                     a: ApiDep) -> HTMLResponse:
    staff_only(p)
    return await _events_page(request, c, p, a)


@router.post("/events", response_model=None)
async def event_create(request: Request, c: ConsoleDep, p: PrincipalDep, a: ApiDep,
                       form: SignedFormDep) -> Response:
    staff_only(p)
    values = {k: str(form.get(k) or "").strip() for k in ("school_id", "title", "starts_at",
                                                            "place")}
    body = {"district_id": p.district, **values,
            "starts_at": _aware(c, p, values["school_id"], values["starts_at"])}
    try:
        event = (await a.post("/family-events", body)).body
    except ApiError as exc:
        if exc.status not in (404, 409, 422):
            raise
        return await _events_page(request, c, p, a, exc.status, exc.fields, exc.message, values)
    return redirect(f"/events/{quote(event['id'])}")


async def _event_page(request: Request, p: Principal, a: Api, event_id: str,
                      status: int = 200, errors: dict[str, str] | None = None,
                      message: str | None = None) -> HTMLResponse:
    path = f"/family-events/{quote(event_id)}"
    event = await a.get(path, district_id=p.district)
    invitations = await a.get(f"{path}/invitations", district_id=p.district)
    families = await a.get("/families", district_id=p.district, school_id=event["school_id"],
                           limit=500)
    names = {f["id"]: f["name"] for f in families}
    return render(request, "event.html.j2", status, event=event, invitations=invitations,
                  names=names, progress=await _progress(a, p, event_id), errors=errors or {},
                  message=message)


@router.get("/events/{event_id}", response_class=HTMLResponse)
async def event_page(request: Request, event_id: str, p: PrincipalDep,
                     a: ApiDep) -> HTMLResponse:
    staff_only(p)
    return await _event_page(request, p, a, event_id)


@router.post("/events/{event_id}/invite", response_model=None)
async def event_invite(request: Request, event_id: str, p: PrincipalDep, a: ApiDep,
                       form: SignedFormDep) -> Response:
    staff_only(p)
    grades = [g.strip() for g in str(form.get("grades") or "").split(",") if g.strip()]
    body: dict[str, Any] = {"district_id": p.district, "grades": grades or None}
    try:
        await a.post(f"/family-events/{quote(event_id)}/invitations", body)
    except ApiError as exc:
        if exc.status not in (409, 422):
            raise
        return await _event_page(request, p, a, event_id, exc.status, exc.fields, exc.message)
    return redirect(f"/events/{quote(event_id)}")


@router.post("/events/{event_id}/attendance", response_model=None)
async def event_attendance(request: Request, event_id: str, p: PrincipalDep, a: ApiDep,
                           form: SignedFormDep) -> Response:
    staff_only(p)
    body = {"district_id": p.district, "family_ids": [str(f) for f in form.getlist("attended")]}
    try:
        await a.post(f"/family-events/{quote(event_id)}/attendance", body)
    except ApiError as exc:
        if exc.status not in (409, 422):
            raise
        return await _event_page(request, p, a, event_id, exc.status, exc.fields, exc.message)
    return redirect(f"/events/{quote(event_id)}#attendance")


# --- announcements ---------------------------------------------------------------------------


async def _announcements_page(request: Request, c: Console, p: Principal, a: Api,
                              status: int = 200, errors: dict[str, str] | None = None,
                              message: str | None = None,
                              values: dict[str, str] | None = None) -> HTMLResponse:
    announcements = await a.get("/announcements", district_id=p.district)
    return render(request, "announcements.html.j2", status, announcements=announcements,
                  errors=errors or {}, message=message, values=values or {},
                  schools=my_schools(c, p), urgencies=list(Urgency),
                  whole_district=p.role == Role.district_admin)


@router.get("/announcements", response_class=HTMLResponse)
async def announcement_list(request: Request, c: ConsoleDep, p: PrincipalDep,
                            a: ApiDep) -> HTMLResponse:
    staff_only(p)
    return await _announcements_page(request, c, p, a)


@router.post("/announcements", response_model=None)
async def announcement_create(request: Request, c: ConsoleDep, p: PrincipalDep, a: ApiDep,
                              form: SignedFormDep) -> Response:
    staff_only(p)
    values = {k: str(form.get(k) or "").strip() for k in ("school_id", "title", "body",
                                                            "urgency")}
    body = {"district_id": p.district, **{k: v for k, v in values.items() if v}}
    try:
        sent = (await a.post("/announcements", body)).body
    except ApiError as exc:
        if exc.status not in (403, 404, 409, 422):
            raise
        return await _announcements_page(request, c, p, a, exc.status, exc.fields,
                                          exc.message, values)
    return redirect(f"/announcements/{quote(sent['id'])}")


@router.get("/announcements/{announcement_id}", response_class=HTMLResponse)
async def announcement_page(request: Request, announcement_id: str, p: PrincipalDep,
                            a: ApiDep) -> HTMLResponse:
    staff_only(p)
    row = await a.get(f"/announcements/{quote(announcement_id)}", district_id=p.district)
    return render(request, "announcement.html.j2", a_=row,
                  progress=await _progress(a, p, announcement_id))
