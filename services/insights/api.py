"""The data pack over HTTP: JSON, an HTML page with SVG charts, each table as CSV, the whole
pack as PDF. A district admin or the leadership team reads the district's packs and every
school's; a coordinator their own schools' (school_id required)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from runtime.auth import STAFF, Forbidden, Principal, Role
from runtime.errors import NotFound
from runtime.tenancy import current_scope, set_scope
from services.insights.deps import InsightsDeps, Wired
from services.insights.domain import Pack, build_pack
from services.insights.metrics import PACK_SECONDS, PACKS
from services.insights.queries import load_facts
from services.insights.render import html_page, pdf_bytes, table_csv
from services.insights.schemas import FigureView, PackView, TableView

router = APIRouter(tags=["insights"])
READERS = STAFF | {Role.leadership}
BASE = "/insights/packs/{month}"
ROUTES = (BASE, f"{BASE}/page", f"{BASE}/pdf", f"{BASE}/tables/{{key}}.csv")

Month = Annotated[str, Path(pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                            description="the pack's last month, YYYY-MM")]
SchoolId = Annotated[str | None, Query(max_length=64, description="a school's pack; none: the "
                                                                  "district's")]
DistrictId = Annotated[str | None, Query(max_length=64)]


@contextmanager
def _unscoped() -> Iterator[None]:
    """The pack's queries name the district and school themselves, once the caller has been
    allowed them: an event without a school must still reach its referral's school pack."""
    scope = current_scope()
    set_scope(None)
    try:
        yield
    finally:
        set_scope(scope)


async def make_pack(deps: InsightsDeps, principal: Principal, month: str,
                    school_id: str | None) -> Pack:
    district = deps.runtime.districts.get(principal.district)
    if district is None:
        raise NotFound(f"district {principal.district} not found")
    if school_id is None and principal.role == Role.coordinator:
        raise Forbidden("a coordinator reads their schools' packs: name the school_id")
    if school_id is not None and district.school(school_id) is None:
        raise NotFound(f"school {school_id} not found in district {district.id}")
    scope = "school" if school_id else "district"
    with PACK_SECONDS.labels(scope).time(), _unscoped():
        async with deps.runtime.unit_of_work() as uow:
            facts = await load_facts(uow.session, district.id, school_id)
        return build_pack(facts, district_id=district.id, school_id=school_id, month=month,
                          zone=ZoneInfo(district.timezone),
                          threshold=district.small_cell_threshold)


def _links(request: Request, month: str, school_id: str | None) -> dict[str, str]:
    query = f"?school_id={school_id}" if school_id else ""
    base = f"{request.scope.get('root_path', '')}/api/v1/insights/packs/{month}"
    return {"page": f"{base}/page{query}", "pdf": f"{base}/pdf{query}",
            "csv": f"{base}/tables/{{key}}.csv{query}"}


@router.get(BASE, response_model=PackView)
async def pack(request: Request, month: Month, deps: Wired, school_id: SchoolId = None,
               district_id: DistrictId = None) -> PackView:
    """The pack as JSON: key figures, every table as shown (suppressed), what is missing."""
    result = await make_pack(deps, request.state.principal, month, school_id)
    links = _links(request, month, school_id)
    PACKS.labels("school" if school_id else "district", "json").inc()
    return PackView(
        district_id=result.district_id, school_id=result.school_id, month=result.month,
        months=list(result.months), threshold=result.threshold,
        figures=[FigureView(label=f.label, value=f.value) for f in result.figures],
        tables=[TableView(key=t.table.key, title=t.table.title, header=list(t.header),
                          rows=[list(r) for r in t.body], note=t.table.note,
                          csv=links["csv"].replace("{key}", t.table.key))
                for t in result.tables],
        missing=list(result.missing), page=links["page"], pdf=links["pdf"])


@router.get(f"{BASE}/page", response_class=HTMLResponse)
async def page(request: Request, month: Month, deps: Wired, school_id: SchoolId = None,
               district_id: DistrictId = None) -> HTMLResponse:
    """The pack as one HTML page with its charts (SVG), standalone."""
    result = await make_pack(deps, request.state.principal, month, school_id)
    links = _links(request, month, school_id)
    named = {"pdf": links["pdf"]} | {f"csv:{t.table.key}": links["csv"].replace("{key}",
                                                                                t.table.key)
                                     for t in result.tables}
    PACKS.labels("school" if school_id else "district", "html").inc()
    return HTMLResponse(html_page(result, named))


@router.get(f"{BASE}/pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}})
async def pdf(request: Request, month: Month, deps: Wired, school_id: SchoolId = None,
              district_id: DistrictId = None) -> Response:
    """The whole pack as PDF."""
    result = await make_pack(deps, request.state.principal, month, school_id)
    name = f"pack-{result.district_id}-{school_id or 'district'}-{month}.pdf"
    PACKS.labels("school" if school_id else "district", "pdf").inc()
    return Response(pdf_bytes(result), media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get(f"{BASE}/tables/{{key}}.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}}})
async def table(request: Request, month: Month, key: str, deps: Wired,
                school_id: SchoolId = None, district_id: DistrictId = None) -> Response:
    """One table of the pack as CSV (as shown: suppressed)."""
    result = await make_pack(deps, request.state.principal, month, school_id)
    found = next((t for t in result.tables if t.table.key == key), None)
    if found is None:
        raise NotFound(f"no table {key!r} (tables: "
                       f"{', '.join(t.table.key for t in result.tables)})")
    PACKS.labels("school" if school_id else "district", "csv").inc()
    return Response(table_csv(found), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{key}-{month}.csv"'})
