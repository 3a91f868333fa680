"""The directory in the database: register a partner, load an HSDS import plan, read it back."""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.db import utcnow
from runtime.districts import District
from services.partners.hsds import ExportService, Plan, Problem, ServiceSpec
from services.partners.matching import grades_for_ages, grades_key, languages_key
from services.partners.tables import Partner, PartnerService, PartnerStats, ServiceCapacity

# Ids of imported rows are derived from the source's ids, so importing the same directory again
# updates it in place (an upsert) instead of doubling it.
NAMESPACE = uuid.UUID("8f4d2c7e-0b7a-4e38-9a57-3f1f5b9e6d21")
ALL_SCHOOLS = {"all", "all schools", "district", "districtwide", "district-wide"}
CHUNK = 500


def stable_id(district_id: str, kind: str, source_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{district_id}/{kind}/{source_id}"))


def schools_for_areas(district: District, areas: Iterable[str]) -> list[str]:
    """Service-area or location names that name a school (its id or name) or the whole
    district (its id or name, or "all")."""
    by_name: dict[str, str] = {}
    for school in district.schools:
        by_name[school.id.lower()] = school.id
        by_name[school.name.lower()] = school.id
    whole = ALL_SCHOOLS | {district.id.lower(), district.name.lower()}
    found: dict[str, None] = {}
    for area in areas:
        key = area.strip().lower()
        if key in whole:
            return [s.id for s in district.schools]
        if key in by_name:
            found[by_name[key]] = None
    return list(found)


async def _load(session: AsyncSession, model: Any, column: Any, keys: Sequence[str]) -> list[Any]:
    rows: list[Any] = []
    for i in range(0, len(keys), CHUNK):
        rows += (await session.scalars(select(model).where(column.in_(keys[i:i + CHUNK])))).all()
    return rows


def _sync_capacity(session: AsyncSession, service: PartnerService, partner: Partner,
                   schools: list[str], current: dict[str, ServiceCapacity],
                   capacity: int | None, open_slots: int | None = None) -> None:
    """Make the service's capacity rows match its schools. ``capacity`` sets each school's slots
    (never below what is reserved); ``open_slots`` (HSDS service_capacity, see hsds.py) instead
    sets the open slots over all its schools, split evenly. A school no longer served keeps the
    slots in use (no new ones) until they are released."""
    shares = split(open_slots, len(schools)) if open_slots is not None else None
    for index, school_id in enumerate(schools):
        row = current.get(school_id)
        if row is None:
            row = ServiceCapacity(service_id=service.id, school_id=school_id,
                                  district_id=service.district_id, capacity=capacity or 0,
                                  reserved=0)
            session.add(row)
        elif capacity is not None:
            row.capacity = max(capacity, row.reserved)
        if shares is not None:
            row.capacity = row.reserved + shares[index]
        copy_service(row, service, partner)
    for school_id, row in current.items():
        if school_id not in schools:
            row.capacity = row.reserved
            copy_service(row, service, partner)


def split(total: int, parts: int) -> list[int]:
    """``total`` over ``parts`` as evenly as whole numbers go, the first ones taking the rest."""
    if parts <= 0:
        return []
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def copy_service(row: ServiceCapacity, service: PartnerService, partner: Partner) -> None:
    row.need = service.need
    row.partner_id = service.partner_id
    row.service_status = service.status
    row.partner_status = partner.status
    row.languages_key = service.languages_key
    row.grades_key = service.grades_key
    row.in_school = partner.in_school_of == row.school_id


def _stats(partner_id: str, district_id: str) -> PartnerStats:
    # Made with the partner, so counting later is always an UPDATE (no insert race).
    return PartnerStats(partner_id=partner_id, district_id=district_id, matched=0, accepted=0,
                        declined=0, accept_seconds=0.0, active=0)


@dataclass
class ImportResult:
    organizations_created: int = 0
    organizations_updated: int = 0
    services_created: int = 0
    services_updated: int = 0
    services_without_school: int = 0


def no_school(district: District, spec: ServiceSpec, service_id: str) -> Problem:
    """Why a service is in no school of the district, and how to place it: loaded, but matching
    (which looks for a service at the family's school) can never use it until then."""
    named = ", ".join(repr(a) for a in spec.areas[:5]) or "none"
    example = ", ".join(repr(s.name) for s in district.schools[:2])
    return Problem(spec.file, spec.row, f"{spec.path}service_areas", (
        f"service {spec.hsds_id} ({spec.name}) is in no school of {district.name}: its service "
        f"areas and locations ({named}) name none, so no referral can be matched to it. To "
        f"place it: give it a service area (or a location) named like a school, by its id or "
        f"name (e.g. {example}), or 'all' for every school, and import again; or set its slots "
        f"at each school with PUT /api/v1/partners/services/{service_id}/capacity"))


async def apply_plan(session: AsyncSession, district: District, plan: Plan,
                     capacity: int | None) -> ImportResult:
    """Write the plan's good rows (the caller's transaction makes it all or nothing)."""
    result = ImportResult()
    now = utcnow()
    org_ids = {o.hsds_id: stable_id(district.id, "organization", o.hsds_id)
               for o in plan.organizations}
    partners = {p.id: p for p in await _load(session, Partner, Partner.id, list(org_ids.values()))}
    spoken: dict[str, set[str]] = {}
    for spec in plan.services:
        spoken.setdefault(spec.organization_hsds_id, set()).update(spec.languages)
    for org in plan.organizations:
        pid = org_ids[org.hsds_id]
        partner = partners.get(pid)
        if partner is None:
            partner = Partner(id=pid, district_id=district.id, status="active", created_at=now,
                              source="hsds", name=org.name, languages=[])
            session.add(partner)
            session.add(_stats(pid, district.id))
            partners[pid] = partner
            result.organizations_created += 1
        else:
            result.organizations_updated += 1
        partner.hsds_id = org.hsds_id
        partner.name = org.name
        partner.alternate_name = org.alternate_name
        partner.description = org.description
        partner.email = org.email
        partner.website = org.website
        partner.languages = sorted(spoken.get(org.hsds_id, set()))
    await session.flush()

    service_ids = [stable_id(district.id, "service", s.hsds_id) for s in plan.services]
    existing = {s.id: s for s in await _load(session, PartnerService, PartnerService.id,
                                              service_ids)}
    capacity_rows: dict[str, dict[str, ServiceCapacity]] = {}
    for row in await _load(session, ServiceCapacity, ServiceCapacity.service_id, service_ids):
        capacity_rows.setdefault(row.service_id, {})[row.school_id] = row
    for spec, sid in zip(plan.services, service_ids, strict=True):
        partner = partners[org_ids[spec.organization_hsds_id]]
        service = existing.get(sid)
        if service is None:
            service = PartnerService(id=sid, partner_id=partner.id, district_id=district.id)
            session.add(service)
            result.services_created += 1
        else:
            result.services_updated += 1
        schools = schools_for_areas(district, spec.areas)
        if not schools:
            result.services_without_school += 1
            plan.warnings.append(no_school(district, spec, sid))
        grades = grades_for_ages(spec.min_age, spec.max_age)
        service.partner_id = partner.id
        service.need = spec.need
        service.name = spec.name
        service.description = spec.description
        service.status = spec.status
        service.min_age, service.max_age = spec.min_age, spec.max_age
        service.grades = grades
        service.grades_key = grades_key(grades)
        service.schools = schools
        service.service_languages = spec.languages
        service.languages_key = languages_key(spec.languages or partner.languages)
        service.hsds_id = spec.hsds_id
        service.hsds = {**spec.detail, "need_rule": spec.need_rule}
        _sync_capacity(session, service, partner, schools, capacity_rows.get(sid, {}),
                       capacity, spec.slots)
    await session.flush()
    return result


async def register(session: AsyncSession, district_id: str, name: str, needs: list[str],
                   schools: list[str], languages: list[str], grades: list[int],
                   capacity: int, in_school_of: str | None = None,
                   partner_id: str | None = None) -> tuple[Partner, list[PartnerService]]:
    """The simple registration: one service per need, ``capacity`` slots at each school.
    ``in_school_of``: the school whose own staff support it is (its only school)."""
    partner = Partner(id=partner_id or str(uuid.uuid4()), district_id=district_id, name=name,
                      languages=languages, status="active", created_at=utcnow(), source="api",
                      in_school_of=in_school_of)
    session.add(partner)
    session.add(_stats(partner.id, district_id))
    await session.flush()
    services = []
    for need in dict.fromkeys(needs):
        service = PartnerService(
            id=str(uuid.uuid4()), partner_id=partner.id, district_id=district_id, need=need,
            name=f"{name}: {need.replace('_', ' ')}", status="active", schools=list(schools),
            grades=list(grades), grades_key=grades_key(grades), service_languages=[],
            languages_key=languages_key(languages), hsds={})
        session.add(service)
        services.append(service)
    await session.flush()
    for service in services:
        _sync_capacity(session, service, partner, list(schools), {}, capacity)
    await session.flush()
    return partner, services


async def capacity_by_service(session: AsyncSession,
                              service_ids: Sequence[str]) -> dict[str, list[ServiceCapacity]]:
    by_service: dict[str, list[ServiceCapacity]] = {}
    for row in await _load(session, ServiceCapacity, ServiceCapacity.service_id,
                           list(service_ids)):
        by_service.setdefault(row.service_id, []).append(row)
    return by_service


async def export_services(session: AsyncSession, district_id: str) -> list[ExportService]:
    partners = {p.id: p for p in (await session.scalars(
        select(Partner).where(Partner.district_id == district_id))).all()}
    services = (await session.scalars(
        select(PartnerService).where(PartnerService.district_id == district_id)
        .order_by(PartnerService.partner_id, PartnerService.id))).all()
    cap = ServiceCapacity.__table__
    slots = {row.service_id: (int(row.slots), int(row.open)) for row in await session.execute(
        select(cap.c.service_id, func.sum(cap.c.capacity).label("slots"),
               func.sum(cap.c.capacity - cap.c.reserved).label("open"))
        .where(cap.c.district_id == district_id).group_by(cap.c.service_id))}
    as_of = utcnow().isoformat(timespec="milliseconds")
    out = []
    for s in services:
        p = partners.get(s.partner_id)
        if p is None:
            continue
        organization = {k: v for k, v in {
            "id": p.hsds_id or p.id, "name": p.name, "alternate_name": p.alternate_name,
            "description": p.description or p.name, "email": p.email, "website": p.website,
        }.items() if v is not None}
        detail = {k: v for k, v in (s.hsds or {}).items() if k != "need_rule"}
        out.append(ExportService(
            id=s.hsds_id or s.id, organization=organization, name=s.name or p.name,
            description=s.description, status=s.status, need=s.need, min_age=s.min_age,
            max_age=s.max_age, languages=s.service_languages or p.languages,
            schools=s.schools, detail=detail, slots=slots.get(s.id, (0, 0))[0],
            open=slots.get(s.id, (0, 0))[1], as_of=as_of))
    return out


__all__ = ["ImportResult", "Problem", "apply_plan", "export_services", "register",
           "schools_for_areas", "stable_id"]
