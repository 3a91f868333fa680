"""Matching against the database: the candidate query, the reservation, and the slot's release.

The candidate query reads one index range (district, need, school in ``service_capacity``) and
joins by primary key; it reads no JSON, so it costs the same on SQLite and PostgreSQL and stays
well under a millisecond or two with 10,000 services (benchmarks/matching.py).
"""

from collections import Counter
from datetime import datetime

from sqlalchemy import Float, Select, case, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import NoPartnerAvailable, PartnerMatched
from runtime.db import utcnow
from runtime.outbox import UnitOfWork
from services.partners.capacity import release, reserve
from services.partners.matching import WEIGHTS, Request, Row, primary_language, rank, rule_failures
from services.partners.tables import (
    FamilyLanguage,
    Partner,
    PartnerService,
    PartnerStats,
    ReferralRequest,
    ServiceCapacity,
)

_cap = ServiceCapacity.__table__
_svc = PartnerService.__table__
_org = Partner.__table__
_stats = PartnerStats.__table__
BEST = 16  # rows the candidate query returns, best first; ranking re-checks and explains them


def _rows_query(request: Request) -> Select:  # type: ignore[type-arg]
    return (
        select(_cap.c.service_id, _cap.c.school_id, _cap.c.capacity, _cap.c.reserved,
               _cap.c.partner_id, _org.c.name, _cap.c.need, _cap.c.languages_key,
               _cap.c.grades_key, _cap.c.service_status, _org.c.status,
               func.coalesce(_stats.c.accepted, 0), func.coalesce(_stats.c.declined, 0),
               func.coalesce(_stats.c.accept_seconds, 0.0), func.coalesce(_stats.c.active, 0))
        .select_from(
            _cap.join(_org, _org.c.id == _cap.c.partner_id)
            .outerjoin(_stats, _stats.c.partner_id == _cap.c.partner_id)
        )
        .where(_cap.c.district_id == request.district_id, _cap.c.need == request.need,
               _cap.c.school_id == request.school_id)
    )


def _f(value: float):  # type: ignore[no-untyped-def]
    return literal(value, Float())  # float arithmetic (PostgreSQL would use slow numeric)


def _sql_score(request: Request):  # type: ignore[no-untyped-def]
    """matching.score's formula in SQL, so the database hands back only the best few rows."""
    accepted = func.coalesce(_stats.c.accepted, 0)
    answered = accepted + func.coalesce(_stats.c.declined, 0)
    language = f"%,{primary_language(request.language)},%"
    parts = {
        "language": case((_cap.c.languages_key.like(language), _f(1.0)), else_=_f(0.0)),
        "open": (_cap.c.capacity - _cap.c.reserved) * _f(1.0) / _cap.c.capacity,
        "acceptance": (accepted + _f(1.0)) / (answered + _f(2.0)),
        "speed": case((accepted > 0, _f(1.0) / (
            _f(1.0) + func.coalesce(_stats.c.accept_seconds, _f(0.0)) / accepted / _f(86400.0))),
            else_=_f(0.5)),
        "load": _f(1.0) / (_f(1.0) + func.coalesce(_stats.c.active, 0)),
    }
    return sum((_f(WEIGHTS[k]) * v for k, v in parts.items()), _f(0.0))


async def candidate_rows(session: AsyncSession, request: Request,
                         best: int | None = None) -> list[Row]:
    """Services that pass every hard rule the database can check (``rank`` checks them all);
    with ``best``, only that many, by the ranking's own score."""
    query = _rows_query(request).where(
        _cap.c.reserved < _cap.c.capacity, _cap.c.service_status == "active",
        _org.c.status == "active")
    if request.grade is not None:
        query = query.where(or_(_cap.c.grades_key == "",
                                _cap.c.grades_key.like(f"%,{request.grade},%")))
    if request.tried_partners:
        query = query.where(_cap.c.partner_id.not_in(request.tried_partners))
    if best is not None:
        query = query.order_by(_sql_score(request).desc(), _cap.c.service_id).limit(best)
    return [Row(*r) for r in (await session.execute(query)).all()]


async def why_none(session: AsyncSession, request: Request) -> tuple[str, int]:
    """Why no service fits, for the coordinator; and how many were considered."""
    rows = [Row(*r) for r in (await session.execute(_rows_query(request))).all()]
    if not rows:
        offered = await session.scalar(
            select(func.count()).select_from(_svc).where(
                _svc.c.district_id == request.district_id, _svc.c.need == request.need,
                _svc.c.status == "active"))
        if not offered:
            return f"no active partner offers {request.need} in this district", 0
        return (f"{offered} active services offer {request.need}, none at school "
                f"{request.school_id}"), 0
    failures = Counter(rule_failures(request, row)[0] for row in rows)
    summary = "; ".join(f"{count} {rule}" for rule, count in failures.most_common(4))
    return (f"{len(rows)} services offer {request.need} at {request.school_id}, none "
            f"eligible: {summary}")[:200], len(rows)


def as_request(request: ReferralRequest, language: str | None) -> Request:
    return Request(district_id=request.district_id, school_id=request.school_id,
                   need=request.need, grade=request.grade, language=language,
                   tried_partners=tuple(request.tried_partners))


async def bump_stats(uow: UnitOfWork, partner_id: str, district_id: str, **deltas: float) -> None:
    """Atomic increments (two copies of the service may count at once)."""
    values = {name: getattr(_stats.c, name) + delta for name, delta in deltas.items()}
    result = await uow.session.execute(
        update(_stats).where(_stats.c.partner_id == partner_id).values(**values))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        uow.session.add(PartnerStats(partner_id=partner_id, district_id=district_id,
                                     **{"matched": 0, "accepted": 0, "declined": 0,
                                        "accept_seconds": 0.0, "active": 0,
                                        **{k: max(0.0, v) for k, v in deltas.items()}}))
        await uow.session.flush()


async def match(uow: UnitOfWork, request: ReferralRequest) -> None:
    """Reserve the best eligible service and emit PartnerMatched, or NoPartnerAvailable."""
    known = await uow.session.get(FamilyLanguage, (request.district_id, request.family_id))
    wanted = as_request(request, known.language if known else None)
    now = utcnow()
    request.updated_at = now
    for _ in range(3):  # a fresh look if others took every one of the best meanwhile
        ranked = rank(wanted, await candidate_rows(uow.session, wanted, best=BEST))
        for candidate in ranked:
            row = candidate.row
            if not await reserve(uow, row.service_id, row.school_id):
                continue  # another referral took the last slot first
            request.state = "matched"
            request.service_id = row.service_id
            request.partner_id = row.partner_id
            request.attempts += 1
            request.tried_partners = [*request.tried_partners, row.partner_id]
            request.matched_at = now
            request.accepted = False
            request.ever_matched = True
            request.last_result = "matched"
            await bump_stats(uow, row.partner_id, request.district_id, matched=1, active=1)
            uow.emit(
                PartnerMatched(
                    referral_id=request.referral_id, family_id=request.family_id,
                    partner_id=row.partner_id, service_id=row.service_id,
                    partner_name=row.partner_name, need=request.need, urgency=request.urgency,
                    score=candidate.score, reasons=candidate.reasons, attempt=request.attempts),
                district=request.district_id, school=request.school_id,
                subject=request.referral_id,
            )
            return
        if len(ranked) < BEST:
            break
    reason, considered = await why_none(uow.session, wanted)
    request.state = request.last_result = "no_partner"
    request.service_id = request.partner_id = None
    uow.emit(
        NoPartnerAvailable(referral_id=request.referral_id, family_id=request.family_id,
                           need=request.need, reason=reason, candidates_considered=considered),
        district=request.district_id, school=request.school_id, subject=request.referral_id,
    )


async def let_go(uow: UnitOfWork, request: ReferralRequest, *, declined: bool = False,
                 at: datetime | None = None) -> None:
    """The current partner no longer holds the referral: free its slot, count it."""
    if request.state != "matched" or not request.service_id or not request.partner_id:
        return
    await release(uow, request.service_id, request.school_id)
    await bump_stats(uow, request.partner_id, request.district_id, active=-1,
                     declined=1 if declined else 0)
    request.service_id = request.partner_id = None
    request.updated_at = at or utcnow()
