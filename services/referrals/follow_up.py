"""Follow-up timers that survive restarts and fire once however many copies run.

The next firing of each referral's timer is a column (follow_up_due_at). A scan claims due rows
with SELECT ... FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite's BEGIN IMMEDIATE serializes
writers), emits the event through the outbox and moves the timer on, all in one transaction:
a copy that sees the row afterwards sees it already fired.
"""

import logging
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select

from contracts.events import FollowUpDue, ReferralEscalated
from runtime.outbox import UnitOfWork
from runtime.periodic import Periodic
from runtime.service import ServiceRuntime
from services.referrals.lifecycle import OPEN
from services.referrals.metrics import set_open_counts
from services.referrals.referrals import Desk, emit_and_record
from services.referrals.school_calendar import window_end
from services.referrals.tables import Referral

log = logging.getLogger("ensemble.referrals.follow_up")

PENDING, DUE_FIRED, ESCALATED = 0, 1, 2
OPEN_VALUES = [s.value for s in OPEN]


async def fire_due(rt: ServiceRuntime, desk: Desk, batch: int = 200) -> int:
    """Fire every timer due now; return how many fired."""
    fired = 0
    while True:
        now = desk.clock()
        async with rt.unit_of_work() as uow:
            rows = (
                await uow.session.scalars(
                    select(Referral)
                    .where(Referral.follow_up_due_at <= now,
                           Referral.status.in_(OPEN_VALUES))
                    .order_by(Referral.follow_up_due_at)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for referral in rows:
                fire(uow, desk, referral)
                # Down for longer than both windows: the escalation is due as well.
                due = referral.follow_up_due_at
                if due is not None and due <= now:
                    fire(uow, desk, referral)
        fired += len(rows)
        if len(rows) < batch:
            return fired


def fire(uow: UnitOfWork, desk: Desk, referral: Referral) -> None:
    due_at = referral.follow_up_due_at
    assert due_at is not None
    if referral.follow_up_stage == PENDING:
        emit_and_record(uow, referral, FollowUpDue(
            referral_id=referral.id, status=referral.status, urgency=referral.urgency,
            due_at=due_at, reason=referral.follow_up_reason or "no_progress",
        ), "service:referrals")
        referral.follow_up_stage = DUE_FIRED
        referral.follow_up_since = due_at
        # The second window runs from when the first ended, not from when we noticed.
        referral.follow_up_due_at = window_end(
            due_at, referral.urgency, desk.district(referral.district_id))
    else:
        emit_and_record(uow, referral, ReferralEscalated(
            referral_id=referral.id, status=referral.status, urgency=referral.urgency,
            due_at=due_at,
        ), "service:referrals")
        referral.follow_up_stage = ESCALATED
        referral.follow_up_due_at = None


def needs_follow_up(now: datetime) -> ColumnElement[bool]:
    """The work list's condition: open, and due now or already reported due."""
    return (Referral.status.in_(OPEN_VALUES)
            & or_(Referral.follow_up_due_at <= now, Referral.follow_up_stage > PENDING))


async def run_timers(rt: ServiceRuntime, desk: Desk, interval: float) -> None:
    async def round_() -> None:
        fired = await fire_due(rt, desk)
        if fired:
            log.info("follow-up: %d timers fired", fired)

    # Database away: tried again next round, nothing is lost.
    await Periodic("follow-up timers", round_, interval, backoff_max=interval).run()


async def refresh_metrics(rt: ServiceRuntime, desk: Desk) -> None:
    now = desk.clock()
    async with rt.unit_of_work() as uow:
        open_rows = (await uow.session.execute(
            select(Referral.district_id, Referral.status, Referral.urgency, func.count())
            .where(Referral.status.in_(OPEN_VALUES))
            .group_by(Referral.district_id, Referral.status, Referral.urgency)
        )).all()
        overdue_rows = (await uow.session.execute(
            select(Referral.district_id, func.count())
            .where(needs_follow_up(now))
            .group_by(Referral.district_id)
        )).all()
    set_open_counts({(d, s, u): n for d, s, u, n in open_rows},
                    {d: n for d, n in overdue_rows})


async def run_metrics(rt: ServiceRuntime, desk: Desk, interval: float) -> None:
    async def round_() -> None:
        await refresh_metrics(rt, desk)

    await Periodic("referral gauges", round_, interval, backoff_max=interval).run()
