"""The HTTP interface to referrals: coordinators open, follow up and close referrals; partners
answer them (accept, decline, in service).

Every route is a module-level function on ``router``; each takes what the service was built
with (``ReferralsDeps``: its runtime and its desk) through ``Wired``. The request and response
models are in schemas.py, the audit trail's route in audit.py."""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import AwareDatetime
from sqlalchemy import Select, bindparam, func, select

from contracts.events import (
    ConsentRecorded,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralDeclined,
    ReferralInService,
)
from contracts.taxonomy import Consent, Need, Urgency
from runtime.auth import Forbidden, Role
from runtime.errors import Conflict, NotFound
from runtime.tenancy import beyond_partner
from services.referrals.cost_review import select_for_review, week_start
from services.referrals.deps import ReferralsDeps, Wired
from services.referrals.follow_up import needs_follow_up
from services.referrals.handlers import family_is_known
from services.referrals.lifecycle import (
    OPEN,
    Accepted,
    Cancelled,
    Closed,
    ConsentChanged,
    Declined,
    IllegalMove,
    InService,
    NotThePartner,
    Status,
    replay,
)
from services.referrals.referrals import (
    Desk,
    command,
    earlier_or_open_duplicate,
    get_referral,
    open_referral,
)
from services.referrals.schemas import (
    AddNote,
    CancelReferral,
    CloseReferral,
    CostReview,
    CostReviewItem,
    Counts,
    DeclineReferral,
    FollowUpList,
    MarkInService,
    NoteView,
    OpenReferral,
    PartnerAnswer,
    RecordConsent,
    ReferralDetail,
    ReferralView,
    SchoolFollowUps,
    TimelineView,
    Token,
    follow_up_state,
)
from services.referrals.tables import Referral, ReferralNote, TimelineEntry

router = APIRouter()


class FamilyNotRegistered(Conflict):
    """409 once the family has had its time to arrive; Retry-After, as it may still come."""

    def __init__(self, district_id: str, family_id: str, waited: float | None = None) -> None:
        after = f" (waited {waited:g} s for its registration to arrive)" if waited else ""
        super().__init__(f"family {family_id} is not registered in district {district_id}"
                         f"{after}")
        self.headers = {"Retry-After": "5"}


@dataclass(frozen=True)
class Retry:
    """How a command is recognised in the referral's timeline when it comes again: the event
    it recorded, and the fields that make it the same command (the partner and its reason, the
    outcome...)."""

    event_type: str
    same: dict[str, Any]


# What a command's ``make(referral)`` gives: the lifecycle fact, the event, the actor.
Make = Callable[[Referral], tuple[Any, Any, str]]

ALREADY_APPLIED = {200: {"headers": {"Already-Applied": {
    "description": "true when the command was applied before: a retry, nothing changed",
    "schema": {"type": "string"}}}}}


# Coordinators: open, list, count and follow up referrals, read one.

@router.post("/referrals", status_code=201, response_model=ReferralView, responses={
    200: {"model": ReferralView, "description": "this request's referral again "
          "(Idempotent-Replay) or the open one for the student and need "
          "(Duplicate-Of-Open-Referral)"}})
async def open_(
    deps: Wired,
    body: OpenReferral,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> ReferralView:
    district_id = district_of(deps.desk, body.district_id)
    if deps.runtime.districts.school(district_id, body.school_id) is None:
        raise NotFound(f"school {body.school_id} not found in district {district_id}")
    try:
        return await _open_once(deps, district_id, body, response, idempotency_key)
    except FamilyNotRegistered:  # registered a moment ago? wait for it, then once more
        await wait_for_family(deps, district_id, body.family_id)
        return await _open_once(deps, district_id, body, response, idempotency_key)


@router.get("/referrals", response_model=list[ReferralView])
async def list_(
    deps: Wired,
    response: Response,
    district_id: Token,
    school_id: Token | None = None,
    status: Status | None = None,
    need: Need | None = None,
    urgency: Urgency | None = None,
    partner_id: Token | None = None,
    consent: Consent | None = None,
    opened_from: AwareDatetime | None = Query(
        None, description="opened at or after (ISO 8601 with its UTC offset)"),
    opened_to: AwareDatetime | None = Query(
        None, description="opened before (ISO 8601 with its UTC offset)"),
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[ReferralView]:
    """Newest first; the total before paging is in the X-Total-Count header."""
    query = select(Referral).where(Referral.district_id == district_of(deps.desk, district_id))
    for column, value in ((Referral.school_id, school_id), (Referral.status, status),
                          (Referral.need, need), (Referral.urgency, urgency),
                          (Referral.partner_id, partner_id), (Referral.consent, consent)):
        if value is not None:
            query = query.where(column == value)
    if opened_from is not None:
        query = query.where(Referral.opened_at >= opened_from)
    if opened_to is not None:
        query = query.where(Referral.opened_at < opened_to)
    async with deps.runtime.unit_of_work() as uow:
        total = await uow.session.scalar(_count(query))
        page = (await uow.session.scalars(
            query.order_by(Referral.opened_at.desc(), Referral.id).limit(limit).offset(offset)
        )).all()
    response.headers["X-Total-Count"] = str(total or 0)
    now = deps.desk.clock()
    return [ReferralView.of(r, now) for r in page]


@router.get("/referrals/counts", response_model=Counts)
async def counts(deps: Wired, district_id: Token, school_id: Token | None = None) -> Counts:
    """Referrals by status and need, for the district or one school."""
    query = (select(Referral.need, Referral.status, func.count())
             .where(Referral.district_id == district_of(deps.desk, district_id))
             .group_by(Referral.need, Referral.status))
    if school_id:
        query = query.where(Referral.school_id == school_id)
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.execute(query)).all()
    by_status: Counter[str] = Counter()
    by_need: Counter[str] = Counter()
    matrix: dict[str, dict[str, int]] = {}
    for need, status, n in rows:
        by_status[status] += n
        by_need[need] += n
        matrix.setdefault(need, {})[status] = n
    return Counts(district_id=district_id, school_id=school_id,
                  total=sum(by_status.values()),
                  open=sum(n for s, n in by_status.items() if s in OPEN),
                  by_status=dict(by_status), by_need=dict(by_need),
                  by_need_and_status=matrix)


@router.get("/referrals/follow-ups", response_model=FollowUpList)
async def follow_ups(deps: Wired, district_id: Token,
                     school_id: Token | None = None) -> FollowUpList:
    """The coordinator's work list: open referrals due or overdue for follow-up, by school,
    most overdue first."""
    now = deps.desk.clock()
    district = deps.desk.district(district_of(deps.desk, district_id))
    query = select(Referral).where(Referral.district_id == district_id, needs_follow_up(now))
    if school_id:
        query = query.where(Referral.school_id == school_id)
    query = query.order_by(Referral.school_id, func.coalesce(
        Referral.follow_up_since, Referral.follow_up_due_at), Referral.id)
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.scalars(query)).all()
    schools: dict[str, list[ReferralView]] = {}
    for referral in rows:
        schools.setdefault(referral.school_id, []).append(ReferralView.of(referral, now))
    return FollowUpList(
        district_id=district_id, as_of=now, total=len(rows),
        schools=[SchoolFollowUps(school_id=s, school_name=getattr(district.school(s), "name",
                                                                   None), referrals=items)
                 for s, items in schools.items()],
    )


@router.get("/schools/{school_id}/cost-review", response_model=CostReview)
async def cost_review(deps: Wired, school_id: Token, district_id: Token) -> CostReview:
    """The school's Coordination of Services Team list for its weekly meeting: referrals
    opened this week and open ones stuck (no partner, declined twice, family unreachable,
    overdue follow-up), with the support holding each (services/referrals/cost_review.py)."""
    now = deps.desk.clock()
    school = deps.runtime.districts.school(district_of(deps.desk, district_id), school_id)
    if school is None:
        raise NotFound(f"school {school_id} not found in district {district_id}")
    since = week_start(now, school.timezone or deps.desk.district(district_id).timezone)
    here = (Referral.district_id == district_id, Referral.school_id == school_id,
            (Referral.opened_at >= since) | Referral.status.in_([s.value for s in OPEN]))
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.scalars(select(Referral).where(*here))).all()
        declines: dict[str, int] = {rid: n for rid, n in (await uow.session.execute(
            select(TimelineEntry.referral_id, func.count())
            .join(Referral, Referral.id == TimelineEntry.referral_id)
            .where(*here, TimelineEntry.event_type == ReferralDeclined.__name__)
            .group_by(TimelineEntry.referral_id))).all()}
    entries = select_for_review(rows, declines, now, since)
    items = [CostReviewItem(
        referral_id=e.referral.id, declines=e.declines, opened_this_week=e.opened_this_week,
        stuck=list(e.stuck), follow_up=follow_up_state(e.referral, now),
        **{k: getattr(e.referral, k) for k in (
            "student_ref", "family_id", "need", "urgency", "status", "consent", "opened_at",
            "partner_id", "match_attempt", "follow_up_reason")}) for e in entries]
    return CostReview(district_id=district_id, school_id=school_id, school_name=school.name,
                      as_of=now, week_start=since,
                      opened_this_week=sum(e.opened_this_week for e in entries),
                      stuck=sum(1 for e in entries if e.stuck), referrals=items)


# The referral and its timeline in one statement (the referral's columns repeat per entry;
# the ORM makes one object of them), its notes in another.
_WITH_TIMELINE = (select(Referral, TimelineEntry)
                  .outerjoin(TimelineEntry, TimelineEntry.referral_id == Referral.id)
                  .where(Referral.id == bindparam("referral")).order_by(TimelineEntry.seq))
_NOTES = (select(ReferralNote).where(ReferralNote.referral_id == bindparam("referral"))
          .order_by(ReferralNote.seq))


@router.get("/referrals/{referral_id}", response_model=ReferralDetail)
async def detail(deps: Wired, referral_id: str, district_id: Token,
                 request: Request) -> ReferralDetail:
    """A partner reads only what consent shared with it: the referral and its steps, not
    the school's notes nor the ids and reasons other services recorded."""
    partner = getattr(request.state, "principal", None)
    partner = partner is not None and partner.role == Role.partner
    district = district_of(deps.desk, district_id)
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.execute(_WITH_TIMELINE, {"referral": referral_id})).all()
        if not rows or rows[0][0].district_id != district:
            raise NotFound(f"referral {referral_id} not found")
        notes = [] if partner else (
            await uow.session.scalars(_NOTES, {"referral": referral_id})).all()
    referral, entries = rows[0][0], [e for _, e in rows if e is not None]
    return ReferralDetail(
        **ReferralView.values(referral, deps.desk.clock()),
        note=None if partner else referral.note,
        notes=[] if partner else [NoteView(at=n.at, author=n.author, text=n.text)
                                  for n in notes],
        timeline=[
            TimelineView(at=e.at, event=e.event_type, actor=e.actor,
                         status_after=e.status_after, data={} if partner else e.data)
            for e in entries
        ],
    )


# Commands: each goes through lifecycle.decide (referrals.command); a retry is answered, not
# refused (_command).

@router.post("/referrals/{referral_id}/accept", response_model=ReferralView,
             responses=ALREADY_APPLIED)
async def accept(deps: Wired, referral_id: str, body: PartnerAnswer, request: Request,
                 response: Response) -> ReferralView:
    """The matched partner takes the referral."""
    check_partner(request, body.partner_id)
    return await _command(deps, referral_id, body.district_id, request, response, lambda r: (
        Accepted(body.partner_id),
        ReferralAccepted(referral_id=r.id, partner_id=body.partner_id,
                         service_id=r.service_id),
        f"partner:{body.partner_id}"),
        Retry("ReferralAccepted", {"partner_id": body.partner_id}))


@router.post("/referrals/{referral_id}/decline", response_model=ReferralView,
             responses=ALREADY_APPLIED)
async def decline(deps: Wired, referral_id: str, body: DeclineReferral, request: Request,
                  response: Response) -> ReferralView:
    """The matched partner cannot take it; partners matches the next one."""
    check_partner(request, body.partner_id)
    return await _command(deps, referral_id, body.district_id, request, response, lambda r: (
        Declined(body.partner_id),
        ReferralDeclined(referral_id=r.id, partner_id=body.partner_id,
                         service_id=r.service_id, reason=body.reason),
        f"partner:{body.partner_id}"),
        Retry("ReferralDeclined", {"partner_id": body.partner_id, "reason": body.reason}))


@router.post("/referrals/{referral_id}/in-service", response_model=ReferralView,
             responses=ALREADY_APPLIED)
async def in_service(deps: Wired, referral_id: str, body: MarkInService, request: Request,
                     response: Response) -> ReferralView:
    """The family is receiving the service (the partner says so, or staff for it)."""
    check_partner(request, body.partner_id)

    def make(r: Referral) -> tuple[Any, Any, str]:
        actor = f"partner:{body.partner_id}" if body.partner_id else f"coordinator:{body.by}"
        return (InService(body.partner_id),
                ReferralInService(referral_id=r.id, partner_id=r.partner_id or ""), actor)

    same = {"partner_id": body.partner_id} if body.partner_id else {}
    return await _command(deps, referral_id, body.district_id, request, response, make,
                          Retry("ReferralInService", same))


@router.post("/referrals/{referral_id}/cancel", response_model=ReferralView,
             responses=ALREADY_APPLIED)
async def cancel(deps: Wired, referral_id: str, body: CancelReferral, request: Request,
                 response: Response) -> ReferralView:
    def make(r: Referral) -> tuple[Any, Any, str]:
        return (Cancelled(),
                ReferralCancelled(referral_id=r.id, reason=body.reason,
                                  partner_id=r.partner_id, service_id=r.service_id),
                f"coordinator:{body.cancelled_by}")

    def keep_reason(r: Referral) -> None:
        r.cancel_reason = body.reason

    return await _command(deps, referral_id, body.district_id, request, response, make,
                          Retry("ReferralCancelled", {"reason": body.reason}), keep_reason)


@router.post("/referrals/{referral_id}/close", response_model=ReferralView,
             responses=ALREADY_APPLIED)
async def close(deps: Wired, referral_id: str, body: CloseReferral, request: Request,
                response: Response) -> ReferralView:
    return await _command(deps, referral_id, body.district_id, request, response, lambda r: (
        Closed(body.outcome),
        ReferralClosed(referral_id=r.id, outcome=body.outcome, partner_id=r.partner_id,
                       service_id=r.service_id, closed_at=deps.desk.clock()),
        f"coordinator:{body.closed_by}"),
        Retry("ReferralClosed", {"outcome": body.outcome}))


@router.post("/referrals/{referral_id}/consent", response_model=ReferralView,
             responses=ALREADY_APPLIED)
async def consent(deps: Wired, referral_id: str, body: RecordConsent, request: Request,
                  response: Response) -> ReferralView:
    """The family's consent to share with a partner. Given: partners matches. In school:
    only the school's own supports are matched. Declined: the referral stays for in-school
    support by hand and is never shared."""
    now = deps.desk.clock()

    def make(r: Referral) -> tuple[Any, Any, str]:
        return (ConsentChanged(body.consent),
                ConsentRecorded(referral_id=r.id, consent=body.consent,
                                recorded_by=body.recorded_by, recorded_at=now),
                f"coordinator:{body.recorded_by}")

    def who_and_when(r: Referral) -> None:
        r.consent_recorded_by, r.consent_recorded_at = body.recorded_by, now

    return await _command(deps, referral_id, body.district_id, request, response, make,
                          Retry("ConsentRecorded", {"consent": body.consent}), who_and_when)


@router.post("/referrals/{referral_id}/notes", status_code=201, response_model=NoteView)
async def add_note(deps: Wired, referral_id: str, body: AddNote) -> NoteView:
    """Free text for the coordinators; it never leaves this service."""
    async with deps.runtime.unit_of_work() as uow:
        referral = await get_referral(uow, district_of(deps.desk, body.district_id),
                                      referral_id)
        note = ReferralNote(referral_id=referral.id, at=deps.desk.clock(), author=body.author,
                            text=body.text)
        uow.session.add(note)
    return NoteView(at=note.at, author=note.author, text=note.text)


# What the routes share.

def district_of(desk: Desk, district_id: str) -> str:
    """The one place a request's district is decided (bearer tokens will replace it)."""
    desk.district(district_id)
    return district_id


def check_partner(request: Request, partner_id: str | None) -> None:
    """A partner's token speaks for that partner only."""
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.role == Role.partner and \
            partner_id != principal.partner_id:
        raise Forbidden("a partner answers for itself only")


async def _open_once(deps: ReferralsDeps, district_id: str, body: OpenReferral,
                     response: Response, idempotency_key: str | None) -> ReferralView:
    """One attempt at POST /referrals: this request's referral again, the open one for the
    student and need, or a new one; FamilyNotRegistered while the family is unknown."""
    desk = deps.desk
    async with deps.runtime.unit_of_work() as uow:
        earlier, duplicate = await earlier_or_open_duplicate(
            uow, district_id, idempotency_key, body.student_ref, body.need)
        if earlier is not None:
            response.status_code = 200
            response.headers["Idempotent-Replay"] = "true"
            return ReferralView.of(earlier, desk.clock())
        if not await family_is_known(uow, district_id, body.family_id):
            raise FamilyNotRegistered(district_id, body.family_id)
        if duplicate is not None:
            response.status_code = 200
            response.headers["Duplicate-Of-Open-Referral"] = duplicate.id
            return ReferralView.of(duplicate, desk.clock(), duplicate=True)
        referral = await open_referral(
            uow, desk, district_id=district_id, school_id=body.school_id,
            student_ref=body.student_ref, family_id=body.family_id, need=body.need,
            urgency=body.urgency, consent=body.consent, grade=body.grade,
            note=body.note, idempotency_key=idempotency_key,
            actor=f"coordinator:{body.opened_by}")
    response.headers["Location"] = f"/api/v1/referrals/{referral.id}"
    return ReferralView.of(referral, desk.clock())


async def wait_for_family(deps: ReferralsDeps, district_id: str, family_id: str) -> None:
    """A family registered a moment ago may not have reached us yet: wait for it (outside
    any transaction) rather than refuse a family that exists."""
    async def known() -> bool:
        async with deps.runtime.unit_of_work() as uow:
            return await family_is_known(uow, district_id, family_id)

    desk = deps.desk
    if not await desk.arrivals.wait(desk.family_wait_seconds, known):
        raise FamilyNotRegistered(district_id, family_id, desk.family_wait_seconds)


async def _command(deps: ReferralsDeps, referral_id: str, district_id: str, request: Request,
                   response: Response, make: Make, retry: Retry,
                   on_applied: Callable[[Referral], None] | None = None) -> ReferralView:
    """Load with a row lock, let ``make(referral)`` give (fact, event, actor), apply, then
    ``on_applied``. The same command again answers 200 with Already-Applied: true and
    emits nothing, also when the referral has moved on since (a retried close, a decline
    retried after the next match); a different command that conflicts is still refused."""
    desk = deps.desk
    district = district_of(desk, district_id)
    async with deps.runtime.unit_of_work() as uow:
        try:
            referral = await get_referral(uow, district, referral_id, lock=True)
        except NotFound:
            left = await _left_by_partner(desk, uow, request, district, referral_id, retry)
            if left is None:
                raise
            response.headers["Already-Applied"] = "true"
            return left
        fact, event, actor = make(referral)
        try:
            applied = command(uow, desk, referral, fact, event, actor)
        except (IllegalMove, NotThePartner):
            if await _done_before(uow, referral.id, retry) is None:
                raise
            applied = False
        if applied and on_applied is not None:
            on_applied(referral)
        if not applied:
            response.headers["Already-Applied"] = "true"
    return ReferralView.of(referral, desk.clock())


async def _left_by_partner(desk: Desk, uow: Any, request: Request, district: str,
                           referral_id: str, retry: Retry) -> ReferralView | None:
    """A partner retrying its decline no longer holds the referral (tenancy hides it): the
    referral as its decline left it, when the timeline shows that decline; what happened
    since is another partner's."""
    principal = getattr(request.state, "principal", None)
    if principal is None or principal.role != Role.partner or \
            retry.same.get("partner_id") != principal.partner_id:
        return None
    done = await _done_before(uow, referral_id, retry)
    if done is None:
        return None
    with beyond_partner():
        referral = await get_referral(uow, district, referral_id)
    history = (await uow.session.scalars(
        select(TimelineEntry).where(TimelineEntry.referral_id == referral_id,
                                    TimelineEntry.seq <= done.seq)
        .order_by(TimelineEntry.seq))).all()
    state = replay([(e.event_type, e.data) for e in history])
    return ReferralView.of(referral, desk.clock()).model_copy(update={
        "status": state.status, "partner_id": state.partner_id,
        "match_attempt": state.attempt, "consent": state.consent, "outcome": None,
        "cancel_reason": None, "accepted_at": None, "family_contacted_at": None,
        "in_service_at": None, "closed_at": None, "updated_at": done.at,
        "follow_up": None, "follow_up_due_at": None, "follow_up_reason": None})


async def _done_before(uow: Any, referral_id: str, retry: Retry) -> TimelineEntry | None:
    """The timeline entry of this very command, if it was applied before."""
    entries = (await uow.session.scalars(
        select(TimelineEntry).where(TimelineEntry.referral_id == referral_id,
                                    TimelineEntry.event_type == retry.event_type)
        .order_by(TimelineEntry.seq))).all()
    return next((e for e in entries if e.data.get("applied") is not False
                 and all(e.data.get(k) == v for k, v in retry.same.items())), None)


def _count(query: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(query.order_by(None).subquery())
