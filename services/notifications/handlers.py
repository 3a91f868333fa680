"""Outreach requests become queued messages; the dispatcher sends them."""

from uuid import uuid4

from sqlalchemy import select

from contracts.envelope import Envelope
from contracts.events import OutreachRequested
from runtime.db import utcnow
from runtime.outbox import UnitOfWork
from runtime.service import ServiceRuntime
from services.notifications.dispatch import Dispatcher
from services.notifications.tables import Message


def register(rt: ServiceRuntime, dispatcher: Dispatcher) -> None:
    @rt.consumes(OutreachRequested)
    async def on_outreach_requested(uow: UnitOfWork, env: Envelope, ev: OutreachRequested) -> None:
        exists = await uow.session.scalar(
            select(Message.id).where(Message.idempotency_key == ev.outreach_id)
        )
        if exists:
            return
        now = utcnow()
        uow.session.add(
            Message(
                id=str(uuid4()),
                idempotency_key=ev.outreach_id,
                district_id=env.districtid,
                school_id=ev.school_id,
                family_id=ev.family_id,
                outreach_id=ev.outreach_id,
                referral_id=ev.referral_id,
                correlation_id=env.correlationid,
                causation_id=env.id,
                kind=ev.kind,
                urgency=ev.urgency,
                language=ev.language,
                channels=[c.value for c in ev.channels],
                email=ev.email,
                phone=ev.phone,
                family_name=ev.family_name,
                variables=ev.variables,
                status="queued" if ev.channels else "failed",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        uow.after_commit.append(dispatcher.wake.set)
