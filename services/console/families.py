"""Families: find one, its contact details, consent and opt-outs, and the contacts a person
logged (a call, a home visit, a conference)."""

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from contracts.taxonomy import ContactKind
from runtime.auth import Principal
from services.console.api_client import Api, ApiError
from services.console.pages import (
    ApiDep,
    ConsoleDep,
    PrincipalDep,
    SignedFormDep,
    my_schools,
    redirect,
    render,
    staff_only,
)

router = APIRouter()

PERSON_KINDS = (ContactKind.phone_call, ContactKind.home_visit, ContactKind.conference,
                ContactKind.in_person)
CONTACT_OUTCOMES = ("reached", "no_answer", "left_message", "wrong_number")
EDITABLE = ("preferred_language", "preferred_channel", "phone", "email")


@router.get("/families", response_class=HTMLResponse)
async def family_list(request: Request, c: ConsoleDep, p: PrincipalDep, a: ApiDep,
                      school_id: str = "", q: str = "") -> HTMLResponse:
    staff_only(p)
    families = await a.get("/families", district_id=p.district, school_id=school_id or None,
                           limit=500)
    # Finding by name narrows what the API already answered for this person; it decides
    # nothing about who may see what.
    wanted = q.strip().casefold()
    found = [f for f in families if wanted in f["name"].casefold()] if wanted else families
    return render(request, "families.html.j2", families=found, q=q,
                  filters={"school_id": school_id}, schools=my_schools(c, p))


async def _family_page(request: Request, p: Principal, a: Api, family_id: str,
                       status: int = 200, errors: dict[str, str] | None = None,
                       message: str | None = None, failed_form: str | None = None,
                       values: dict[str, str] | None = None) -> HTMLResponse:
    path = f"/families/{quote(family_id)}"
    family = await a.get(path, district_id=p.district)
    contacts = await a.get(f"{path}/contacts", district_id=p.district)
    outreach = await a.get(f"{path}/outreach", district_id=p.district)
    students = await a.get(f"{path}/students", district_id=p.district)
    return render(request, "family.html.j2", status, f=family, contacts=contacts,
                  outreach=outreach, students=students, kinds=PERSON_KINDS,
                  outcomes=CONTACT_OUTCOMES, errors=errors or {}, message=message,
                  failed_form=failed_form, values=values or {})


@router.get("/families/{family_id}", response_class=HTMLResponse)
async def family_page(request: Request, family_id: str, p: PrincipalDep,
                      a: ApiDep) -> HTMLResponse:
    staff_only(p)
    return await _family_page(request, p, a, family_id)


@router.post("/families/{family_id}/edit", response_model=None)
async def family_edit(request: Request, family_id: str, p: PrincipalDep, a: ApiDep,
                      form: SignedFormDep) -> Response:
    staff_only(p)
    values = {k: str(form.get(k) or "").strip() for k in EDITABLE}
    body: dict[str, Any] = {"district_id": p.district, **{k: v for k, v in values.items() if v},
                            "sms_consent": form.get("sms_consent") == "on",
                            "email_consent": form.get("email_consent") == "on"}
    try:
        await a.patch(f"/families/{quote(family_id)}", body)
    except ApiError as exc:
        if exc.status not in (409, 422):
            raise
        return await _family_page(request, p, a, family_id, exc.status, exc.fields,
                                  exc.message, "edit", values)
    return redirect(f"/families/{quote(family_id)}?saved=1")


@router.post("/families/{family_id}/contacts", response_model=None)
async def family_contact(request: Request, family_id: str, p: PrincipalDep, a: ApiDep,
                         form: SignedFormDep) -> Response:
    staff_only(p)
    values = {k: str(form.get(k) or "").strip() for k in ("kind", "outcome", "note",
                                                            "referral_id")}
    body = {"district_id": p.district, "by": p.subject[:128],
            **{k: v for k, v in values.items() if v}}
    try:
        await a.post(f"/families/{quote(family_id)}/contacts", body)
    except ApiError as exc:
        if exc.status not in (409, 422):
            raise
        return await _family_page(request, p, a, family_id, exc.status, exc.fields,
                                  exc.message, "contact", values)
    return redirect(f"/families/{quote(family_id)}?logged=1#contacts")
