"""The partner directory over HTTP: register, browse, set capacity, HSDS import/export, gap map.

Every route is a module-level function on ``router``; each takes what the service was built
with (``PartnersDeps``: its runtime and clock) through ``Wired``. The request and response
models are in schemas.py."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import CapacityChanged
from contracts.taxonomy import Need
from runtime.auth import caller
from runtime.districts import District
from runtime.errors import Conflict, NotFound
from runtime.idempotency import REPLAYED, IdempotencyKey, create_once, keyed_id
from runtime.tenancy import current_scope
from runtime.uow import UnitOfWork
from services.partners import directory, gaps, hsds
from services.partners.capacity import set_capacity
from services.partners.deps import PartnersDeps, Wired
from services.partners.links_api import RESPONSES, partner_link, partner_link_use
from services.partners.schemas import (
    PartnerView,
    RegisterPartner,
    SchoolCapacity,
    SetCapacity,
    Token,
)
from services.partners.tables import Partner, PartnerService, PartnerStats, ServiceCapacity

router = APIRouter()
# The partner-link routes (services/partners/links_api.py; public: the link is the credential).
router.get("/partner-links/{token}", responses=RESPONSES["get"])(partner_link)
router.post("/partner-links/{token}/use", responses=RESPONSES["use"])(partner_link_use)

ALREADY_APPLIED = {200: {"headers": {"Already-Applied": {
    "description": "true when the slots were already these: nothing changed",
    "schema": {"type": "string"}}}}}


def district_of(deps: PartnersDeps, district_id: str) -> District:
    district = deps.runtime.districts.get(district_id)
    if district is None:
        raise NotFound(f"district {district_id} not found")
    return district


def period(start: date | datetime | None, end: date | datetime | None,
           now: datetime) -> tuple[datetime, datetime]:
    """[from, to) in UTC. A date ``to`` includes that day; the default is this month so far."""

    def at(value: date | datetime) -> datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.combine(value, time.min, UTC)

    now = now.astimezone(UTC)
    if end is None:
        end_at = now
    elif isinstance(end, datetime):
        end_at = at(end)
    else:
        end_at = at(end) + timedelta(days=1)
    start_at = at(start) if start else now.replace(day=1, hour=0, minute=0, second=0,
                                                    microsecond=0)
    return start_at, end_at


@router.post("/partners", status_code=201, response_model=PartnerView, responses=REPLAYED)
async def register(deps: Wired, body: RegisterPartner, request: Request, response: Response,
                   idempotency_key: IdempotencyKey = None) -> PartnerView:
    """With an Idempotency-Key, a retry answers the partner it registered (200)."""
    district = district_of(deps, body.district_id)
    unknown = [s for s in dict.fromkeys([*body.schools, *filter(None, [body.in_school_of])])
               if district.school(s) is None]
    if unknown:
        raise NotFound(f"schools not in district {body.district_id}: {', '.join(unknown)}")
    partner_id = keyed_id("partner", body.district_id, caller(request, "anonymous"),
                          idempotency_key)

    async def find() -> PartnerView | None:
        async with deps.runtime.unit_of_work() as uow:
            return await _view(uow.session, partner_id)

    async def create() -> PartnerView:
        async with deps.runtime.unit_of_work() as uow:
            partner, services = await directory.register(
                uow.session, body.district_id, body.name, [n.value for n in body.needs],
                list(body.schools), list(body.languages), list(body.grades), body.capacity,
                in_school_of=body.in_school_of, partner_id=partner_id)
            partner.email = body.email
            capacity = await directory.capacity_by_service(uow.session,
                                                           [s.id for s in services])
        return PartnerView.of(partner, services, capacity, None)

    return await create_once(idempotency_key, find, create, response)


@router.get("/partners", response_model=list[PartnerView])
async def list_(deps: Wired, district_id: Token, need: Need | None = None) -> list[PartnerView]:
    async with deps.runtime.unit_of_work() as uow:
        partners = (await uow.session.scalars(
            select(Partner).where(Partner.district_id == district_id)
            .order_by(Partner.name, Partner.id))).all()
        query = select(PartnerService).where(PartnerService.district_id == district_id)
        if need is not None:
            query = query.where(PartnerService.need == need)
        services = (await uow.session.scalars(query)).all()
        capacity = await directory.capacity_by_service(uow.session, [s.id for s in services])
        stats = {st.partner_id: st for st in (await uow.session.scalars(
            select(PartnerStats).where(PartnerStats.district_id == district_id))).all()}
    by_partner: dict[str, list[PartnerService]] = {}
    for service in services:
        by_partner.setdefault(service.partner_id, []).append(service)
    return [PartnerView.of(p, by_partner.get(p.id, []), capacity, stats.get(p.id))
            for p in partners if need is None or p.id in by_partner]


@router.post("/partners/import/hsds")
async def import_hsds(
    deps: Wired, request: Request, district_id: Token,
    capacity: Annotated[int | None, Query(ge=0, le=100_000, description=(
        "slots at each school for every imported service without an HSDS service_capacity "
        "row in a unit of people or places; left as they are if omitted (new ones get 0 "
        "until set)"))] = None,
) -> JSONResponse:
    """A zip of HSDS 3.0 CSV tables (with 3.1's service_capacity and units), HSDS JSON, or a
    zip of one HSDS JSON file (a large directory's JSON fits the body limit zipped).
    Bad rows are reported (file, row, field) and left out; the good rows load together."""
    district = district_of(deps, district_id)
    body = await request.body()
    if not body:
        return JSONResponse({"detail": [{"loc": ["body"], "type": "missing",
                                         "msg": "send a zip of HSDS CSV files or HSDS JSON"}]},
                            422)
    plan = hsds.read_zip(body) if body[:2] == b"PK" else hsds.read_json(body)  # zip magic
    loaded = None
    if plan.services or plan.organizations:
        async with deps.runtime.unit_of_work() as uow:
            loaded = await directory.apply_plan(uow.session, district, plan, capacity)
    report = plan.report()
    report["loaded"] = loaded.__dict__ if loaded else None
    status = 200 if loaded or not plan.errors else 422
    return JSONResponse(report, status_code=status)


@router.get("/partners/export/hsds", responses={200: {"content": {"application/zip": {}}}})
async def export_hsds(deps: Wired, district_id: Token, format: str = Query(
        "json", pattern="^(json|csv-zip)$")) -> Response:
    district_of(deps, district_id)
    async with deps.runtime.unit_of_work() as uow:
        services = await directory.export_services(uow.session, district_id)
    if format == "csv-zip":
        return Response(hsds.to_csv_zip(services), media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="hsds-{district_id}.zip"'})
    return JSONResponse(hsds.to_json(services))


@router.get("/partners/gaps", responses={200: {"content": {"text/csv": {}}}})
async def gap_map(
    deps: Wired, request: Request, district_id: Token, school_id: Token | None = None,
    start: Annotated[date | AwareDatetime | None, Query(alias="from")] = None,
    end: Annotated[date | AwareDatetime | None, Query(alias="to")] = None,
    format: str = Query("json", pattern="^(json|csv)$"),
) -> Response:
    """Per school and need, for the period [from, to): referrals opened, matched,
    unmatched, declined, services received; capacity offered and in use; who serves it."""
    district = district_of(deps, district_id)
    schools = [s.id for s in district.schools]
    scope = current_scope()
    if scope is not None and scope.schools is not None:
        schools = [s for s in schools if s in scope.schools]
    if school_id is not None:
        if district.school(school_id) is None:
            raise NotFound(f"school {school_id} not in district {district_id}")
        schools = [s for s in schools if s == school_id]
    start_at, end_at = period(start, end, deps.clock())
    async with deps.runtime.unit_of_work() as uow:
        rows = await gaps.gap_map(uow.session, district, schools, start_at, end_at)
    if format == "csv" or "text/csv" in request.headers.get("accept", ""):
        return Response(gaps.as_csv(rows), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="gaps-{district_id}.csv"'})
    return JSONResponse(gaps.as_json(district, start_at, end_at, rows))


@router.put("/partners/services/{service_id}/capacity", response_model=SchoolCapacity,
            responses=ALREADY_APPLIED)
async def put_capacity(deps: Wired, service_id: str, body: SetCapacity,
                       response: Response) -> SchoolCapacity:
    """Open slots of a service at a school (a school it did not serve is added). The same
    slots again change and announce nothing (Already-Applied: true)."""
    district = district_of(deps, body.district_id)
    if district.school(body.school_id) is None:
        raise NotFound(f"school {body.school_id} not in district {body.district_id}")
    async with deps.runtime.unit_of_work() as uow:
        service = (await uow.session.scalars(select(PartnerService).where(
            PartnerService.id == service_id,
            PartnerService.district_id == body.district_id))).one_or_none()
        if service is None:
            raise NotFound(f"service {service_id} not found")
        row = await uow.session.get(ServiceCapacity, (service_id, body.school_id))
        if row is None:
            reserved = await _add_school(uow, service, body)
        elif row.capacity == body.capacity:
            response.headers["Already-Applied"] = "true"
            return SchoolCapacity.of(row)
        else:
            reserved = await set_capacity(uow, service_id, body.school_id, body.capacity)
        uow.emit(CapacityChanged(partner_id=service.partner_id, service_id=service_id,
                                 school_id=body.school_id, capacity=body.capacity,
                                 reserved=reserved),
                 district=body.district_id, school=body.school_id, subject=service_id)
    return SchoolCapacity(school_id=body.school_id, capacity=body.capacity,
                          reserved=reserved, open=body.capacity - reserved)


async def _add_school(uow: UnitOfWork, service: PartnerService, body: SetCapacity) -> int:
    """The service's slots at a school it did not serve yet; nothing is reserved there."""
    row = ServiceCapacity(service_id=service.id, school_id=body.school_id,
                          district_id=body.district_id, capacity=body.capacity, reserved=0)
    partner = await uow.session.get(Partner, service.partner_id)
    if partner is None:  # the foreign key keeps it; said plainly if ever not
        raise NotFound(f"organization of service {service.id} not found")
    if partner.in_school_of is not None:
        raise Conflict(f"{partner.name} is an in-school support of {partner.in_school_of}: "
                       f"it serves no other school")
    directory.copy_service(row, service, partner)
    uow.session.add(row)
    service.schools = [*service.schools, body.school_id]
    return 0


@router.get("/partners/{partner_id}", response_model=PartnerView)
async def detail(deps: Wired, partner_id: str, district_id: Token) -> PartnerView:
    async with deps.runtime.unit_of_work() as uow:
        view = await _view(uow.session, partner_id, district_id)
    if view is None:
        raise NotFound(f"partner {partner_id} not found")
    return view


async def _view(session: AsyncSession, partner_id: str,
                district_id: str | None = None) -> PartnerView | None:
    """The partner with its services, slots and stats; None if not there (in the district)."""
    partner = await session.get(Partner, partner_id)
    if partner is None or district_id not in (None, partner.district_id):
        return None
    services = list((await session.scalars(
        select(PartnerService).where(PartnerService.partner_id == partner_id)
        .order_by(PartnerService.id))).all())
    capacity = await directory.capacity_by_service(session, [s.id for s in services])
    return PartnerView.of(partner, services, capacity, await session.get(PartnerStats, partner_id))
