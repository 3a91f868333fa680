"""The leadership team's data pack in the console: the insights service's page, PDF and CSV
tables, fetched with the signed-in person's token (the API decides what they may read)."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.pages import ApiDep

router = APIRouter()

Month = Annotated[str, Path(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
SchoolId = Annotated[str | None, Query(max_length=64)]
API_PREFIX = "/api/v1/insights/packs/"


@router.get("/insights")
async def latest(school_id: SchoolId = None) -> RedirectResponse:
    """This month's pack (the twelve months ending with it)."""
    month = datetime.now(UTC).strftime("%Y-%m")
    query = f"?school_id={school_id}" if school_id else ""
    return RedirectResponse(f"/insights/packs/{month}{query}", status_code=303)


@router.get("/insights/packs/{month}", response_class=HTMLResponse)
async def pack_page(month: Month, a: ApiDep, school_id: SchoolId = None) -> HTMLResponse:
    page = await a.get(f"/insights/packs/{month}/page", school_id=school_id)
    # Its PDF and CSV links go through the console too (the browser has no bearer token).
    return HTMLResponse(str(page).replace(API_PREFIX, "/insights/packs/"))


@router.get("/insights/packs/{month}/pdf")
async def pack_pdf(month: Month, a: ApiDep, school_id: SchoolId = None) -> Response:
    return _file(await a.download(f"/insights/packs/{month}/pdf", school_id=school_id))


@router.get("/insights/packs/{month}/tables/{key}.csv")
async def pack_csv(month: Month, key: Annotated[str, Path(max_length=64)], a: ApiDep,
                   school_id: SchoolId = None) -> Response:
    return _file(await a.download(f"/insights/packs/{month}/tables/{key}.csv",
                                  school_id=school_id))


def _file(answer) -> Response:  # type: ignore[no-untyped-def]
    headers = {k: v for k, v in answer.headers.items() if k.lower() == "content-disposition"}
    return Response(answer.content, media_type=answer.headers.get("content-type"),
                    headers=headers)
