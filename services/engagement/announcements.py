"""Announcements fanned out to every family of a school or district, chunk by chunk: each chunk
commits with its cursor, so a restart resumes where it stopped and no family hears it twice."""

from sqlalchemy import select

from contracts.taxonomy import Urgency
from runtime.db import Clock
from runtime.erasure import erasure_barrier
from runtime.periodic import Periodic
from runtime.service import ServiceRuntime
from services.engagement.contacts import emit_bulk, recipient
from services.engagement.metrics import ANNOUNCED
from services.engagement.settings import EngagementSettings
from services.engagement.tables import Announcement, Family


class AnnouncementFanOut:
    """``wake()`` after an announcement commits: its first chunk goes out without waiting for
    the next round."""

    def __init__(self, rt: ServiceRuntime, settings: EngagementSettings, clock: Clock) -> None:
        self.rt = rt
        self.settings = settings
        self.clock = clock
        self.worker = Periodic("announcement fan-out", self.fan_out_chunk,
                               settings.engagement_timer_seconds)

    def wake(self) -> None:
        self.worker.wake()

    async def run(self) -> None:
        await self.worker.run()

    async def fan_out_chunk(self) -> bool:
        """One chunk of one announcement; True while there may be more."""
        chunk = self.settings.bulk_chunk
        async with self.rt.unit_of_work() as uow:
            await erasure_barrier(uow)  # the families' details as an erasure left them
            announcement = await uow.session.scalar(
                select(Announcement).where(Announcement.status == "fanning_out")
                .order_by(Announcement.created_at).limit(1).with_for_update(skip_locked=True))
            if announcement is None:
                return False
            query = select(Family).where(Family.district_id == announcement.district_id,
                                         Family.id > announcement.cursor,
                                         Family.retired_at.is_(None))  # left the roster
            if announcement.school_id:
                query = query.where(Family.school_id == announcement.school_id)
            families = (await uow.session.scalars(query.order_by(Family.id).limit(chunk))).all()
            recipients = []
            for family in families:
                school = self.rt.districts.school(family.district_id, family.school_id)
                made = recipient(family, school.name if school else family.school_id)
                if made:
                    recipients.append(made)
            if recipients:
                announcement.chunks += emit_bulk(
                    uow, announcement.district_id, announcement.id, "announcement",
                    Urgency(announcement.urgency),
                    {"title": announcement.title, "body": announcement.body}, recipients, chunk)
            announcement.families_targeted += len(recipients)
            announcement.families_unreachable += len(families) - len(recipients)
            if families:
                announcement.cursor = families[-1].id
            if len(families) < chunk:
                announcement.status = "queued"
                announcement.finished_at = self.clock()
            district = announcement.district_id
        ANNOUNCED.labels(district, "queued").inc(len(recipients))
        ANNOUNCED.labels(district, "unreachable").inc(len(families) - len(recipients))
        return True
