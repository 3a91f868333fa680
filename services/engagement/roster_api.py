"""The roster upload over HTTP: a district admin sends the SIS's OneRoster 1.2 CSV zip."""

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from runtime.errors import NotFound
from services.engagement import roster, roster_sync
from services.engagement.deps import Wired

router = APIRouter()
Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@router.post("/rosters/import", responses={
    200: {"description": "the report: what loaded, every bad row by file, row and field "
                         "(422 with the same report when nothing loaded)"}})
async def import_roster(request: Request, district_id: Token, deps: Wired) -> JSONResponse:
    """A zip of OneRoster 1.2 CSV files (manifest.csv, orgs.csv, users.csv, and roles.csv,
    enrollments.csv, demographics.csv where the SIS has them). A sync: what changed is
    updated, what a bulk file leaves out or marks tobedeleted is retired, what is unchanged is
    neither written nor published. Bad rows are reported (file, row, field); the good ones load
    together. Larger than the request limit: `ensemble roster import` on the server."""
    district = deps.districts.get(district_id)
    if district is None:
        raise NotFound(f"district {district_id} not found")
    body = await request.body()
    if not body:
        return JSONResponse({"detail": [{"loc": ["body"], "type": "missing",
                                         "msg": "send a zip of OneRoster CSV files"}]}, 422)
    known = await roster_sync.known_guardians(deps.runtime, district)
    read = await asyncio.to_thread(roster.read_zip, body, district, known)
    loaded = await roster_sync.import_roster(deps.runtime, district, read, deps.clock())
    report = read.report()
    report["loaded"] = asdict(loaded) if loaded else None
    if loaded is None:  # as every 4xx: a detail, here the first reason
        report["detail"] = "nothing loaded: " + (str(read.errors[0]) if read.errors else "")
    return JSONResponse(report, status_code=200 if loaded else 422)
