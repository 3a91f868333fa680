"""The next outreach attempt when a family has not answered in time, or the family marked
unreachable after the last one: a timer round every ``timer_seconds``."""

from sqlalchemy import select

from runtime import tracing
from runtime.db import Clock
from runtime.erasure import erasure_barrier
from runtime.periodic import Periodic
from runtime.service import ServiceRuntime
from services.engagement.contacts import mark_unreachable, request_attempt
from services.engagement.lifecycle import OutreachStatus, out_of_attempts
from services.engagement.settings import EngagementSettings
from services.engagement.tables import Family, Outreach

BATCH = 200  # outreach a round takes on; a full one is followed by another at once


class OutreachTimers:
    def __init__(self, rt: ServiceRuntime, settings: EngagementSettings, clock: Clock) -> None:
        self.rt = rt
        self.settings = settings
        self.clock = clock
        self.worker = Periodic("outreach timers", self._round, settings.engagement_timer_seconds)

    async def run(self) -> None:
        await self.worker.run()

    async def _round(self) -> bool:
        return await self.check_due() == BATCH

    async def check_due(self) -> int:
        """Families that did not answer in time: try again, or give up after the last try."""
        now = self.clock()
        async with self.rt.unit_of_work() as uow:
            await erasure_barrier(uow)  # the families' details as an erasure left them
            due = (await uow.session.scalars(
                select(Outreach).where(Outreach.status == OutreachStatus.awaiting_reply,
                                       Outreach.next_check_at <= now)
                .order_by(Outreach.next_check_at).limit(BATCH).with_for_update(skip_locked=True)
            )).all()
            for outreach in due:
                # In the referral's trace (the match's), not a trace of the timer's own.
                with tracing.continued("outreach timer", outreach.trace(),
                                       attributes={"ensemble.outreach_id": outreach.id}):
                    family = await uow.session.get(Family, outreach.family_id)
                    if family is None or out_of_attempts(outreach.attempts,
                                                         self.settings.outreach_max_attempts):
                        mark_unreachable(uow, outreach, now)
                    else:
                        await request_attempt(uow, self.rt.districts, outreach, family, now)
        return len(due)
