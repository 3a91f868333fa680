"""What a coordinator and the other services do to a referral, each in one unit of work."""

from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import select

from contracts.events import Event, ReferralClosed, ReferralOpened
from contracts.taxonomy import Consent, Need, Outcome, Urgency
from runtime.db import utcnow
from runtime.errors import NotFound
from runtime.outbox import UnitOfWork
from services.referrals.lifecycle import OPEN, Status, check_move
from services.referrals.tables import Referral, TimelineEntry


async def get_referral(uow: UnitOfWork, district_id: str, referral_id: str) -> Referral:
    referral = await uow.session.get(Referral, referral_id)
    if referral is None or referral.district_id != district_id:
        raise NotFound(f"referral {referral_id} not found")
    return referral


async def find_open_duplicate(
    uow: UnitOfWork, district_id: str, student_ref: str, need: Need
) -> Referral | None:
    return (
        await uow.session.scalars(
            select(Referral).where(
                Referral.district_id == district_id,
                Referral.student_ref == student_ref,
                Referral.need == need,
                Referral.status.in_([s.value for s in OPEN]),
            )
        )
    ).first()


def record(
    uow: UnitOfWork,
    referral: Referral,
    event_id: str,
    event_type: str,
    actor: str,
    data: dict[str, Any],
    at: datetime | None = None,
) -> None:
    uow.session.add(
        TimelineEntry(
            referral_id=referral.id,
            event_id=event_id,
            event_type=event_type,
            at=at or utcnow(),
            actor=actor,
            status_after=referral.status,
            data=data,
        )
    )


def emit_and_record(uow: UnitOfWork, referral: Referral, event: Event, actor: str) -> None:
    envelope = uow.emit(
        event, district=referral.district_id, school=referral.school_id, subject=referral.id
    )
    record(uow, referral, envelope.id, type(event).__name__, actor, envelope.data, envelope.time)


async def open_referral(
    uow: UnitOfWork,
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
    now = utcnow()
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
    )
    uow.session.add(referral)
    emit_and_record(
        uow,
        referral,
        ReferralOpened(
            referral_id=referral.id,
            school_id=school_id,
            student_ref=student_ref,
            family_id=family_id,
            need=need,
            urgency=urgency,
            consent=consent,
            grade=grade,
            opened_at=now,
        ),
        actor,
    )
    return referral


def move(referral: Referral, target: Status) -> None:
    check_move(Status(referral.status), target)
    referral.status = target
    referral.updated_at = utcnow()


async def close_referral(
    uow: UnitOfWork, district_id: str, referral_id: str, outcome: Outcome, actor: str
) -> Referral:
    referral = await get_referral(uow, district_id, referral_id)
    move(referral, Status.closed)
    referral.outcome = outcome
    referral.closed_at = referral.updated_at
    emit_and_record(
        uow,
        referral,
        ReferralClosed(
            referral_id=referral.id,
            outcome=outcome,
            partner_id=referral.partner_id,
            service_id=referral.service_id,
            closed_at=referral.updated_at,
        ),
        actor,
    )
    return referral
