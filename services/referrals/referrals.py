"""What a coordinator, a partner and the other services do to a referral, each in one unit of
work. Every change of state goes through lifecycle.decide; this module stores the result,
restarts the follow-up window and writes the timeline."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import Select, bindparam, insert, select, union_all

from contracts.envelope import Envelope
from contracts.events import Event, ReferralOpened
from contracts.taxonomy import Consent, Need, Urgency
from runtime import prefetch
from runtime.db import Clock, utcnow
from runtime.districts import District, Districts
from runtime.errors import NotFound
from runtime.outbox import UnitOfWork
from services.referrals.arrivals import FamilyArrivals
from services.referrals.lifecycle import (
    OPEN,
    Fact,
    IllegalMove,
    State,
    Status,
    Unchanged,
    decide,
)
from services.referrals.metrics import TIME_TO_CONTACT
from services.referrals.school_calendar import window_end
from services.referrals.tables import Referral, TimelineEntry


@dataclass
class Desk:
    """What the referrals code needs besides a unit of work: the districts and a clock (tests
    inject one so follow-up windows pass in milliseconds)."""

    districts: Districts
    clock: Clock = field(default=utcnow)
    # How long POST /referrals waits for a just-registered family's FamilyRegistered.
    family_wait_seconds: float = 5.0
    arrivals: FamilyArrivals = field(default_factory=FamilyArrivals)

    def district(self, district_id: str) -> District:
        district = self.districts.get(district_id)
        if district is None:
            raise NotFound(f"district {district_id} not found")
        return district


async def get_referral(uow: UnitOfWork, district_id: str, referral_id: str,
                       lock: bool = False) -> Referral:
    """The referral; ``lock`` holds its row until the transaction ends (PostgreSQL), so two
    concurrent answers cannot both apply to the same state. One a batch's prefetch already
    loaded (load_referrals) is taken from there, without a statement."""
    referral = await prefetch.get(uow, Referral, referral_id, lock=lock)
    if referral is None or referral.district_id != district_id:
        raise NotFound(f"referral {referral_id} not found")
    return referral


async def load_referrals(uow: UnitOfWork, ids: Iterable[str]) -> None:
    """Load these referrals for a batch's handlers in one statement, rows locked (in id
    order, so two copies locking overlapping batches wait rather than deadlock)."""
    await prefetch.load(uow, Referral, ids, lock=True)


_OPEN_VALUES = sorted(s.value for s in OPEN)
# Built once: each request only binds its values (SQLAlchemy still finds the compiled form in
# its cache by the statement's key, but no longer builds the statement to get that key).
_DUPLICATE = select(Referral).where(
    Referral.district_id == bindparam("district"), Referral.student_ref == bindparam("student"),
    Referral.need == bindparam("need"), Referral.status.in_(_OPEN_VALUES))
_EARLIER_OR_DUPLICATE = select(Referral).from_statement(union_all(
    select(Referral).where(Referral.district_id == bindparam("district"),
                           Referral.idempotency_key == bindparam("key")), _DUPLICATE))


def lookup_statement(district_id: str, idempotency_key: str | None, student_ref: str,
                     need: Need) -> tuple[Select[Any], dict[str, Any]]:
    """The statement and its values: the open duplicate, and with an Idempotency-Key the
    referral it already opened, as a UNION ALL."""
    values = {"district": district_id, "student": student_ref, "need": need}
    if not idempotency_key:
        return _DUPLICATE, values
    return _EARLIER_OR_DUPLICATE, values | {"key": idempotency_key}  # type: ignore[return-value]


async def earlier_or_open_duplicate(
    uow: UnitOfWork, district_id: str, idempotency_key: str | None, student_ref: str, need: Need
) -> tuple[Referral | None, Referral | None]:
    """The two referrals a new one must look for, in one statement: the one this request
    already opened (same Idempotency-Key), and the oldest open one for the same student and
    need. A UNION ALL, not an OR: each half uses its own index, where an OR made SQLite read
    every referral of the district."""
    query, values = lookup_statement(district_id, idempotency_key, student_ref, need)
    rows = sorted((await uow.session.scalars(query, values)).unique(), key=lambda r: r.opened_at)
    earlier = next((r for r in rows if idempotency_key and r.idempotency_key == idempotency_key),
                   None)
    open_ = next((r for r in rows if r.student_ref == student_ref and r.need == need
                  and r.status in _OPEN_VALUES), None)
    return earlier, open_


def timeline_row(referral: Referral, event_id: str, event_type: str, actor: str,
                 data: dict[str, Any], at: datetime | None = None) -> dict[str, Any]:
    return {"referral_id": referral.id, "event_id": event_id, "event_type": event_type,
            "at": at or utcnow(), "actor": actor, "status_after": referral.status, "data": data}


def record(
    uow: UnitOfWork,
    referral: Referral,
    event_id: str,
    event_type: str,
    actor: str,
    data: dict[str, Any],
    at: datetime | None = None,
) -> None:
    """A timeline entry, flushed with the referral's own changes (the ORM groups a batch's
    entries into one INSERT)."""
    uow.session.add(TimelineEntry(**timeline_row(referral, event_id, event_type, actor, data,
                                                 at)))


def emit_and_record(uow: UnitOfWork, referral: Referral, event: Event, actor: str) -> Envelope:
    envelope = uow.emit(
        event, district=referral.district_id, school=referral.school_id, subject=referral.id,
        correlation=referral.correlation_id,
    )
    record(uow, referral, envelope.id, type(event).__name__, actor, envelope.data, envelope.time)
    return envelope


# --- state <-> row ---------------------------------------------------------------------------


def state_of(referral: Referral) -> State:
    return State(
        status=Status(referral.status),
        consent=Consent(referral.consent),
        partner_id=referral.partner_id,
        attempt=referral.match_attempt or 0,
        accepted=referral.accepted_at is not None,
        contacted=referral.family_contacted_at is not None,
        outcome=referral.outcome,  # type: ignore[arg-type]
    )


def _store(uow: UnitOfWork, desk: Desk, referral: Referral, old: State, new: State,
           at: datetime | None = None) -> None:
    now = desk.clock()
    referral.status = new.status
    referral.consent = new.consent
    if new.partner_id != old.partner_id:
        referral.partner_id = new.partner_id
        referral.service_id = None
    referral.match_attempt = new.attempt
    if new.accepted != old.accepted:
        referral.accepted_at = now if new.accepted else None
    if new.contacted != old.contacted:
        referral.family_contacted_at = (at or now) if new.contacted else None
        if new.contacted and referral.first_contacted_at is None:
            referral.first_contacted_at = at or now
            seconds = max((referral.first_contacted_at - referral.opened_at).total_seconds(), 0)
            district = referral.district_id
            uow.after_commit.append(lambda: TIME_TO_CONTACT.labels(district).observe(seconds))
    if new.status == Status.in_service and old.status != Status.in_service:
        referral.in_service_at = now
    if new.status == Status.closed:
        referral.outcome = new.outcome
        referral.closed_at = now
    if new.status == Status.cancelled:
        referral.closed_at = now
    referral.updated_at = now
    referral.last_progress_at = now
    restart_follow_up(desk, referral, now)


def restart_follow_up(desk: Desk, referral: Referral, now: datetime,
                      reason: str | None = None) -> None:
    """Progress restarts the window. A referral partners found no partner for, or a family
    engagement could not reach, needs a person now: it is due at once."""
    referral.follow_up_stage = 0
    referral.follow_up_since = None
    status = Status(referral.status)
    if status not in OPEN:
        referral.follow_up_due_at = None
        referral.follow_up_reason = None
        return
    if reason is None and status == Status.no_partner:
        reason = "no_partner"
    if reason is not None:
        referral.follow_up_due_at = now
        referral.follow_up_reason = reason
        return
    # In service, help is under way: check in at the routine pace whatever the urgency.
    urgency = Urgency.routine if status == Status.in_service else Urgency(referral.urgency)
    referral.follow_up_due_at = window_end(now, urgency, desk.district(referral.district_id))
    referral.follow_up_reason = "no_progress"


# --- applying facts --------------------------------------------------------------------------


def command(uow: UnitOfWork, desk: Desk, referral: Referral, fact: Fact, event: Event,
            actor: str) -> bool:
    """A coordinator's or partner's command: raises IllegalMove (409) / NotThePartner (403);
    a command that is already true changes nothing and emits nothing (a safe retry)."""
    old = state_of(referral)
    try:
        new = decide(old, fact)
    except Unchanged:
        return False
    _store(uow, desk, referral, old, new)
    emit_and_record(uow, referral, event, actor)
    return True


def reported(uow: UnitOfWork, desk: Desk, referral: Referral, fact: Fact, envelope: Envelope,
             event: Event, actor: str, at: datetime | None = None) -> bool:
    """An event another service reported. TooEarly propagates (the consumer retries it); a
    fact that no longer applies, or breaks the rules, is kept in the timeline as not applied
    (a fact is never refused: it happened)."""
    old = state_of(referral)
    try:
        new = decide(old, fact)
        applied = True
    except (Unchanged, IllegalMove):
        applied = False
    if applied:
        _store(uow, desk, referral, old, new, at)
    record(uow, referral, envelope.id, type(event).__name__, actor,
           {**envelope.data, "applied": applied}, envelope.time)
    return applied


_INSERT_REFERRAL = insert(Referral.__table__)  # type: ignore[arg-type]
_INSERT_TIMELINE = insert(TimelineEntry.__table__)  # type: ignore[arg-type]


async def open_referral(
    uow: UnitOfWork,
    desk: Desk,
    *,
    district_id: str,
    school_id: str,
    student_ref: str,
    family_id: str,
    need: Need,
    urgency: Urgency,
    consent: Consent,
    grade: int | None,
    note: str | None,
    idempotency_key: str | None,
    actor: str,
) -> Referral:
    """A new referral, its ReferralOpened and its first timeline entry: written with Core
    inserts, one statement per table and no ORM flush (the returned Referral is not in the
    session; read it, do not change it)."""
    now = desk.clock()
    referral = Referral(
        id=str(uuid4()),
        district_id=district_id,
        school_id=school_id,
        student_ref=student_ref,
        family_id=family_id,
        need=need,
        urgency=urgency,
        consent=consent,
        grade=grade,
        status=Status.opened,
        note=note,
        idempotency_key=idempotency_key,
        opened_by=actor,
        opened_at=now,
        updated_at=now,
        last_progress_at=now,
        match_attempt=0,
        consent_recorded_by=actor if consent != Consent.pending else None,
        consent_recorded_at=now if consent != Consent.pending else None,
    )
    restart_follow_up(desk, referral, now)
    event = ReferralOpened(referral_id=referral.id, school_id=school_id, student_ref=student_ref,
                           family_id=family_id, need=need, urgency=urgency, consent=consent,
                           grade=grade, opened_at=now)
    envelope = uow.emit(event, district=district_id, school=school_id, subject=referral.id)
    referral.correlation_id = envelope.id  # the referral's chain of events starts here
    await uow.session.execute(_INSERT_REFERRAL, _columns(referral))
    await uow.session.execute(_INSERT_TIMELINE, timeline_row(
        referral, envelope.id, "ReferralOpened", actor, envelope.data, envelope.time))
    return referral


def _columns(referral: Referral) -> dict[str, Any]:
    """The values set on a transient Referral, by column (unset ones take their defaults)."""
    return {c.key: referral.__dict__[c.key] for c in Referral.__table__.columns
            if c.key in referral.__dict__}
