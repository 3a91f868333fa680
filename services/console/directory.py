"""Partners: the directory (by need, school and language), a partner's services, open slots
and answers, capacity edits, the HSDS import with its row-by-row report; and the gap map."""

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from contracts.taxonomy import Need
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

LANGUAGES = ("en", "es", "vi", "zh", "ar")
GAP_COUNTS = ("opened", "matched", "unmatched", "declined", "services_received")


@router.get("/partners", response_class=HTMLResponse)
async def partner_list(request: Request, c: ConsoleDep, p: PrincipalDep, a: ApiDep,
                       need: str = "", school_id: str = "", language: str = "",
                       q: str = "") -> HTMLResponse:
    staff_only(p)
    partners = await a.get("/partners", district_id=p.district, need=need or None)

    # Narrowing the directory the API answered (school, language, name) decides nothing about
    # who may see what.
    def fits(partner: dict[str, Any]) -> bool:
        services = partner["services"]
        return ((not school_id or any(school_id in s["schools"] for s in services))
                and (not language or language in partner["languages"])
                and (not q or q.strip().casefold() in partner["name"].casefold()))

    return render(request, "partners.html.j2", partners=[x for x in partners if fits(x)],
                  filters={"need": need, "school_id": school_id, "language": language},
                  q=q, needs=list(Need), schools=my_schools(c, p), languages=LANGUAGES)


async def _partner_page(request: Request, p: Principal, a: Api, partner_id: str,
                        status: int = 200, errors: dict[str, str] | None = None,
                        message: str | None = None, failed: str | None = None) -> HTMLResponse:
    partner = await a.get(f"/partners/{quote(partner_id)}", district_id=p.district)
    return render(request, "partner.html.j2", status, partner=partner, errors=errors or {},
                  message=message, failed=failed,
                  saved=request.query_params.get("saved") == "1")


@router.get("/partners/import", response_class=HTMLResponse)
async def import_page(request: Request, p: PrincipalDep) -> HTMLResponse:
    staff_only(p)
    return render(request, "partners_import.html.j2", report=None, errors={}, message=None)


@router.post("/partners/import", response_model=None)
async def import_upload(request: Request, p: PrincipalDep, a: ApiDep,
                        form: SignedFormDep) -> Response:
    """An HSDS zip or JSON file straight to the partners API; its report shown as it is."""
    staff_only(p)
    upload = form.get("file")
    data = await upload.read() if isinstance(upload, UploadFile) else b""
    capacity = str(form.get("capacity") or "").strip()
    if not data:
        return render(request, "partners_import.html.j2", 422, report=None, message=None,
                      errors={"file": "choose an HSDS zip or JSON file"})
    try:
        answer = await a.call("POST", "/partners/import/hsds", content=data,
                              params={"district_id": p.district, "capacity": capacity})
        report, status = answer.body, 200
    except ApiError as exc:
        if exc.status != 422:
            raise
        if not isinstance(exc.detail, dict):  # a field refused (capacity), not a report
            return render(request, "partners_import.html.j2", 422, report=None,
                          errors=exc.fields, message=exc.message)
        report, status = exc.detail, 422
    return render(request, "partners_import.html.j2", status, report=report, errors={},
                  message=None)


@router.get("/partners/{partner_id}", response_class=HTMLResponse)
async def partner_page(request: Request, partner_id: str, p: PrincipalDep,
                       a: ApiDep) -> HTMLResponse:
    staff_only(p)
    return await _partner_page(request, p, a, partner_id)


@router.post("/partners/{partner_id}/services/{service_id}/capacity", response_model=None)
async def capacity_edit(request: Request, partner_id: str, service_id: str, p: PrincipalDep,
                        a: ApiDep, form: SignedFormDep) -> Response:
    staff_only(p)
    body = {"district_id": p.district, "school_id": str(form.get("school_id") or ""),
            "capacity": str(form.get("capacity") or "").strip()}
    try:
        await a.put(f"/partners/services/{quote(service_id)}/capacity", body)
    except ApiError as exc:
        if exc.status not in (404, 409, 422):
            raise
        return await _partner_page(request, p, a, partner_id, exc.status, exc.fields,
                                   exc.message, f"{service_id}/{body['school_id']}")
    return redirect(f"/partners/{quote(partner_id)}?saved=1")


# --- the gap map -----------------------------------------------------------------------------


@router.get("/gaps", response_class=HTMLResponse)
async def gap_map(request: Request, c: ConsoleDep, p: PrincipalDep, a: ApiDep,
                  school_id: str = "", start: str = "", end: str = "") -> HTMLResponse:
    staff_only(p)
    period = {"school_id": school_id, "from": start, "to": end}
    gaps = await a.get("/partners/gaps", district_id=p.district, **period)
    schools = sorted({r["school_id"] for r in gaps["rows"]})
    needs = sorted({r["need"] for r in gaps["rows"]})
    cells = {(r["school_id"], r["need"]): r for r in gaps["rows"]}
    asked = {"school_id": school_id, "start": start, "end": end}
    query = urlencode({k: v for k, v in asked.items() if v})
    # The period as the person reads it: the API's "to" is the exclusive end (the day after
    # an asked "to", or now), so the form and the heading show the asked day, else today.
    shown = asked | {"start": start or gaps["from"][:10], "end": end or gaps["to"][:10]}
    return render(request, "gaps.html.j2", gaps=gaps, grid_schools=schools, needs=needs,
                  cells=cells, filters=shown, schools=my_schools(c, p),
                  query=f"?{query}" if query else "")


@router.get("/gaps.csv", response_model=None)
async def gap_csv(p: PrincipalDep, a: ApiDep, school_id: str = "", start: str = "",
                  end: str = "") -> Response:
    staff_only(p)
    text = await a.get("/partners/gaps", district_id=p.district, format="csv",
                       **{"school_id": school_id, "from": start, "to": end})
    return Response(str(text), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="gaps-{p.district}.csv"'})
