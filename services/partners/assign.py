"""Matching against the database: the candidate query, the reservation, and the slot's release.

The candidate query ranks inside one index range (district, need, school of ``service_capacity``;
the index covers every column it reads there, the organization's status included) and looks up
each row's partner stats by primary key; only the best few rows are then joined to the
organization. It reads no JSON and forces no hash of the whole directory (a plain three-table
join lets PostgreSQL hash every partner on each match), so it costs the same on SQLite and
PostgreSQL. The statements are built once, at import: building a SQLAlchemy expression of this
size costs more than running it, so a match only binds values (benchmarks/matching.py).
"""

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Integer, Select, bindparam, case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import NoPartnerAvailable, PartnerMatched
from contracts.taxonomy import Consent
from runtime import prefetch
from runtime.outbox import UnitOfWork
from services.partners.capacity import lock_capacity_and_stats, release, reserve
from services.partners.lifecycle import Status
from services.partners.matching import (
    W_ACCEPTANCE,
    W_LANGUAGE,
    W_LOAD,
    W_OPEN,
    W_SPEED,
    Request,
    Row,
    primary_language,
    rank,
    rule_failures,
)
from services.partners.metrics import MATCHES
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
BEST = 16  # rows the candidate query returns, best first; ranking re-checks them


def _f(value: float):  # type: ignore[no-untyped-def]
    return literal(value, Float())  # float arithmetic (PostgreSQL would use slow numeric)


def _partner_points():  # type: ignore[no-untyped-def]
    """The partner's share of matching.total (acceptance, speed, load) from its stats row: a
    scalar subquery on the stats' primary key, one per candidate row."""
    accepted, declined = _stats.c.accepted, _stats.c.declined
    points = (
        _f(W_ACCEPTANCE) * ((accepted + _f(1.0)) / (accepted + declined + _f(2.0)))
        + _f(W_SPEED) * case((accepted > 0, _f(1.0) / (
            _f(1.0) + _stats.c.accept_seconds / accepted / _f(86400.0))), else_=_f(0.5))
        + _f(W_LOAD) * (_f(1.0) / (_f(1.0) + _stats.c.active)))
    found = select(points).where(_stats.c.partner_id == _cap.c.partner_id).scalar_subquery()
    # No stats row counts as a new partner, as Row's defaults do: 0.2 x 0.5 + 0.1 x 0.5 + 0.1.
    return func.coalesce(found, _f(W_ACCEPTANCE * 0.5 + W_SPEED * 0.5 + W_LOAD))


def _sql_score():  # type: ignore[no-untyped-def]
    """matching.parts and matching.total in SQL, so the database hands back only the best few
    rows. ``language`` is bound to the LIKE pattern of the family's language."""
    speaks = case((_cap.c.languages_key.like(bindparam("language")), _f(1.0)), else_=_f(0.0))
    open_share = (_cap.c.capacity - _cap.c.reserved) * _f(1.0) / _cap.c.capacity
    return _f(W_LANGUAGE) * speaks + _f(W_OPEN) * open_share + _partner_points()


def _rows(top: Any) -> Select[Any]:
    """Row's columns for capacity rows ``top``, with the organization and its stats."""
    return (
        select(top.c.service_id, top.c.school_id, top.c.capacity, top.c.reserved,
               top.c.partner_id, _org.c.name, top.c.need, top.c.languages_key,
               top.c.grades_key, top.c.service_status, _org.c.status,
               func.coalesce(_stats.c.accepted, 0), func.coalesce(_stats.c.declined, 0),
               func.coalesce(_stats.c.accept_seconds, 0.0), func.coalesce(_stats.c.active, 0),
               top.c.in_school)
        .select_from(top.join(_org, _org.c.id == top.c.partner_id)
                     .outerjoin(_stats, _stats.c.partner_id == top.c.partner_id))
    )


_HERE = (_cap.c.district_id == bindparam("district"), _cap.c.need == bindparam("need"),
         _cap.c.school_id == bindparam("school"))
# Every hard rule the database can check (``rank`` checks them all). ``grade`` is the LIKE
# pattern of the referral's grade, "%" when it has none.
_ELIGIBLE = (
    *_HERE, _cap.c.service_status == "active", _cap.c.partner_status == "active",
    _cap.c.reserved < _cap.c.capacity,
    (_cap.c.grades_key == "") | _cap.c.grades_key.like(bindparam("grade")),
)
# ``tried``: the partners it had. A separate statement because an expanding IN is rendered
# again on every execution, and a first match (most of them) has tried none.
_NOT_TRIED = _cap.c.partner_id.not_in(bindparam("tried", expanding=True))


def _best(*where: Any, in_school_first: bool = False) -> Select[Any]:
    """The best rows by matching.order: with ``in_school_first``, the in-school ones first."""
    first = (_cap.c.in_school.desc(),) if in_school_first else ()
    return _rows(
        select(_cap).where(*where)
        .order_by(*first, _sql_score().desc(), _cap.c.service_id)
        .limit(bindparam("best", type_=Integer))
        .subquery("best"))


_ALL_HERE = _rows(_cap).where(*_HERE)
# Consent in_school: the school's own supports only.
_INSIDE = _cap.c.in_school.is_(True)


def _where(tried: bool, inside: bool) -> tuple[Any, ...]:
    return (*_ELIGIBLE, *((_NOT_TRIED,) if tried else ()), *((_INSIDE,) if inside else ()))


# Built once, by (tried, inside) and (in_school_first, tried, inside).
_ALL_ELIGIBLE = {(tried, inside): _rows(_cap).where(*_where(tried, inside))
                 for tried in (False, True) for inside in (False, True)}
_BEST = {(first, tried, inside): _best(*_where(tried, inside), in_school_first=first)
         for first in (False, True) for tried in (False, True) for inside in (False, True)}
_OFFERED = select(func.count()).select_from(_svc).where(
    _svc.c.district_id == bindparam("district"), _svc.c.need == bindparam("need"),
    _svc.c.status == "active")


def _params(request: Request) -> dict[str, Any]:
    params = {"district": request.district_id, "need": request.need,
              "school": request.school_id,
              "grade": "%" if request.grade is None else f"%,{request.grade},%",
              "language": f"%,{primary_language(request.language)},%"}
    if request.tried_partners:
        params["tried"] = list(request.tried_partners)
    return params


async def candidate_rows(session: AsyncSession, request: Request,
                         best: int | None = None) -> list[Row]:
    """Services that pass every hard rule the database can check; with ``best``, only that
    many, by the ranking's own score. Core on the session's connection: no ORM on this path."""
    connection = await session.connection()
    params = _params(request)
    tried, inside = bool(request.tried_partners), request.in_school_only
    if best is None:
        result = await connection.execute(_ALL_ELIGIBLE[tried, inside], params)
    else:
        result = await connection.execute(_BEST[request.in_school_first, tried, inside],
                                          {**params, "best": best})
    return [Row._make(r) for r in result]


async def why_none(session: AsyncSession, request: Request) -> tuple[str, int]:
    """Why no service fits, for the coordinator; and how many were considered."""
    reason, considered = await _why_none(session, request)
    if request.in_school_only:
        reason = f"the family shares only inside the school: {reason}"
    return reason[:200], considered


async def _why_none(session: AsyncSession, request: Request) -> tuple[str, int]:
    connection = await session.connection()
    where = {"district": request.district_id, "need": request.need}
    rows = [Row._make(r) for r in await connection.execute(
        _ALL_HERE, {**where, "school": request.school_id})]
    if not rows:
        offered = (await connection.execute(_OFFERED, where)).scalar()
        if not offered:
            return f"no active partner offers {request.need} in this district", 0
        return (f"{offered} active services offer {request.need}, none at school "
                f"{request.school_id}"), 0
    failures = Counter(rule_failures(request, row)[0] for row in rows)
    summary = "; ".join(f"{count} {rule}" for rule, count in failures.most_common(4))
    return (f"{len(rows)} services offer {request.need} at {request.school_id}, none "
            f"eligible: {summary}"), len(rows)


def as_request(request: ReferralRequest, language: str | None,
               in_school_first: bool = False) -> Request:
    return Request(district_id=request.district_id, school_id=request.school_id,
                   need=request.need, grade=request.grade, language=language,
                   tried_partners=tuple(request.tried_partners),
                   in_school_first=in_school_first,
                   in_school_only=request.consent == Consent.in_school)


_COUNTS = ("matched", "accepted", "declined", "accept_seconds", "active")
_ADD = update(_stats).where(_stats.c.partner_id == bindparam("pid")).values(
    {name: getattr(_stats.c, name) + bindparam(f"d_{name}") for name in _COUNTS})


async def add_to_stats(uow: UnitOfWork, partner_id: str, district_id: str,
                       **deltas: float) -> None:
    """Add ``deltas`` (matched, accepted, declined, accept_seconds, active) to the partner's
    stats row, creating it if need be: atomic increments (two copies may count at once)."""
    await lock_capacity_and_stats(uow)
    connection = await uow.session.connection()
    values = {f"d_{name}": int(deltas.get(name, 0)) for name in _COUNTS}
    values["d_accept_seconds"] = float(deltas.get("accept_seconds", 0.0))
    result = await connection.execute(_ADD, {"pid": partner_id, **values})
    if result.rowcount == 0:
        uow.session.add(PartnerStats(partner_id=partner_id, district_id=district_id,
                                     **{"matched": 0, "accepted": 0, "declined": 0,
                                        "accept_seconds": 0.0, "active": 0,
                                        **{k: max(0.0, v) for k, v in deltas.items()}}))
        await uow.session.flush()


async def match(uow: UnitOfWork, request: ReferralRequest, now: datetime, *,
                in_school_first: bool = False) -> None:
    """Reserve the best eligible service and emit PartnerMatched, or NoPartnerAvailable;
    ``now`` (the handler's clock) is when it was matched; ``in_school_first`` is the district's
    match_in_school_first. Called when the lifecycle's move says ``match``; the request ends
    matched or no_partner."""
    # Found among the rows the batch loaded (handlers.PREFETCH) when it covered the family.
    family = await prefetch.get(uow, FamilyLanguage, (request.district_id, request.family_id))
    wanted = as_request(request, family.language if family else None, in_school_first)
    request.updated_at = now
    for _ in range(3):  # a fresh look if others took every one of the best meanwhile
        ranked = rank(wanted, await candidate_rows(uow.session, wanted, best=BEST))
        for candidate in ranked:
            row = candidate.row
            if not await reserve(uow, row.service_id, row.school_id):
                continue  # another referral took the last slot first
            request.state = Status.matched
            request.service_id = row.service_id
            request.partner_id = row.partner_id
            request.attempts += 1
            request.tried_partners = [*request.tried_partners, row.partner_id]
            request.matched_at = now
            request.accepted = False
            request.ever_matched = True
            request.last_result = Status.matched
            await add_to_stats(uow, row.partner_id, request.district_id, matched=1, active=1)
            uow.emit(
                PartnerMatched(
                    referral_id=request.referral_id, family_id=request.family_id,
                    partner_id=row.partner_id, service_id=row.service_id,
                    partner_name=row.partner_name, need=request.need, urgency=request.urgency,
                    score=candidate.score, reasons=candidate.reasons, attempt=request.attempts),
                district=request.district_id, school=request.school_id,
                subject=request.referral_id,
            )
            _count(uow, request.district_id, Status.matched)
            return
        if len(ranked) < BEST:
            break
    reason, considered = await why_none(uow.session, wanted)
    request.state = request.last_result = Status.no_partner
    request.service_id = request.partner_id = None
    uow.emit(
        NoPartnerAvailable(referral_id=request.referral_id, family_id=request.family_id,
                           need=request.need, reason=reason, candidates_considered=considered),
        district=request.district_id, school=request.school_id, subject=request.referral_id,
    )
    _count(uow, request.district_id, Status.no_partner)


def _count(uow: UnitOfWork, district_id: str, result: Status) -> None:
    uow.after_commit.append(lambda: MATCHES.labels(district_id, result.value).inc())


async def release_slot(uow: UnitOfWork, request: ReferralRequest, *, at: datetime,
                       declined: bool = False) -> None:
    """The current partner no longer holds the referral (it declined, consent was withdrawn,
    the referral ended: the lifecycle's move says ``release``): free its slot at the school and
    count it in the partner's stats."""
    if not request.service_id or not request.partner_id:
        return
    await release(uow, request.service_id, request.school_id)
    await add_to_stats(uow, request.partner_id, request.district_id, active=-1,
                       declined=1 if declined else 0)
    request.service_id = request.partner_id = None
    request.updated_at = at
