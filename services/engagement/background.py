"""Engagement's background work: the next outreach attempt when a family has not answered, and
announcements fanned out chunk by chunk (resumable: each chunk commits with its cursor)."""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy import select

from contracts.events import BulkOutreachRequested, BulkRecipient
from contracts.taxonomy import Urgency
from runtime.db import utcnow
from runtime.errors import describe_error
from runtime.outbox import UnitOfWork
from runtime.service import ServiceRuntime
from services.engagement.config import EngagementConfig
from services.engagement.contacts import mark_unreachable, request_attempt, usable_channels
from services.engagement.tables import Announcement, Family, Outreach

log = logging.getLogger("ensemble.engagement.background")

ANNOUNCED = Counter("ensemble_announcement_families", "Families an announcement was queued for",
                    ["district", "result"])


def recipient(family: Family, school_name: str, **variables: str) -> BulkRecipient | None:
    channels = usable_channels(family)
    if not channels:
        return None
    return BulkRecipient(family_id=family.id, school_id=family.school_id,
                         language=family.preferred_language, channels=channels,
                         email=family.email, phone=family.phone, family_name=family.name,
                         variables={"school_name": school_name, **variables})


def emit_bulk(uow: UnitOfWork, district_id: str, batch_id: str, kind: str, urgency: Urgency,
              variables: dict[str, str], recipients: list[BulkRecipient], chunk: int) -> int:
    """Recipients in chunks, one internal event each; returns how many events."""
    events = 0
    for start in range(0, len(recipients), chunk):
        uow.emit(BulkOutreachRequested(batch_id=batch_id, kind=kind, urgency=urgency,
                                       variables=variables,
                                       recipients=recipients[start:start + chunk]),
                 district=district_id, subject=batch_id)
        events += 1
    return events


class Background:
    def __init__(self, rt: ServiceRuntime, config: EngagementConfig,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.rt = rt
        self.config = config
        self.clock = clock
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.config.timer_seconds)
            self.wake.clear()
            try:
                await self.check_outreach()
                while await self.fan_out_chunk():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("background work failed (%s); retrying", describe_error(exc))
                await asyncio.sleep(1)

    async def check_outreach(self) -> int:
        """Families that did not answer in time: try again, or give up after the last try."""
        now = self.clock()
        async with self.rt.unit_of_work() as uow:
            due = (await uow.session.scalars(
                select(Outreach).where(Outreach.status == "awaiting_reply",
                                       Outreach.next_check_at <= now)
                .order_by(Outreach.next_check_at).limit(200).with_for_update(skip_locked=True)
            )).all()
            for outreach in due:
                family = await uow.session.get(Family, outreach.family_id)
                if family is None or outreach.attempts >= self.config.outreach_max_attempts:
                    mark_unreachable(uow, outreach, now)
                else:
                    await request_attempt(uow, self.rt.districts, outreach, family, now)
        return len(due)

    async def fan_out_chunk(self) -> bool:
        """One chunk of one announcement; True while there may be more."""
        chunk = self.config.bulk_chunk
        async with self.rt.unit_of_work() as uow:
            announcement = await uow.session.scalar(
                select(Announcement).where(Announcement.status == "fanning_out")
                .order_by(Announcement.created_at).limit(1).with_for_update(skip_locked=True))
            if announcement is None:
                return False
            query = select(Family).where(Family.district_id == announcement.district_id,
                                         Family.id > announcement.cursor)
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
                announcement.finished_at = utcnow()
            district = announcement.district_id
        ANNOUNCED.labels(district, "queued").inc(len(recipients))
        ANNOUNCED.labels(district, "unreachable").inc(len(families) - len(recipients))
        return True
