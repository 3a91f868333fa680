"""The weekly staff digest: to each school's staff list (the districts file), through the
notifications service (StaffDigestRequested on ensemble_internal; notifications sends it).

Once a week per school, whatever the number of copies and restarts: the copy that inserts the
school's row for the week (``insights_digests``, primary key district, school, ISO week)
writes the request to its outbox in the same transaction; a second copy's insert fails and it
sends nothing; a copy started later finds the row.

Its content, from the store alone: partners' services added or changed this week, open slots
by need, this week's referrals against the four weeks before, the coming family events.
Counts of a school's week are small, and the digest stays with the school's staff (it does not
leave the district), so they are shown as they are; it names no family and no student.
"""

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from contracts.events import StaffDigestRequested
from runtime.districts import District, School
from runtime.periodic import Periodic
from services.insights.deps import InsightsDeps
from services.insights.metrics import DIGESTS
from services.insights.queries import service_needs
from services.insights.tables import (
    CapacityFact,
    DigestClaim,
    FamilyEventFact,
    ReferralFact,
    StepFact,
)

log = logging.getLogger("ensemble.insights")
WEEK = timedelta(days=7)


def iso_week(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year:04d}-W{week:02d}"


def due_week(now: datetime, zone: ZoneInfo, weekday: int, hour: int) -> str | None:
    """The ISO week whose digest is due at ``now`` (its weekday and hour have passed, in the
    school's time zone), or None before then."""
    local = now.astimezone(zone)
    monday = (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0,
                                                               microsecond=0)
    send_at = monday + timedelta(days=weekday, hours=hour)
    return iso_week(local) if local >= send_at else None


@dataclass(frozen=True)
class ServiceChange:
    partner: str
    service_id: str
    need: str | None
    capacity: int
    open: int
    added: bool


@dataclass(frozen=True)
class UpcomingEvent:
    title: str
    starts_at: datetime


@dataclass(frozen=True)
class Digest:
    school: str
    week: str
    changes: tuple[ServiceChange, ...]
    open_slots: tuple[tuple[str, int], ...]  # need, open slots
    this_week: int
    last_four: tuple[int, ...]  # the four weeks before, most recent first
    this_week_by_need: tuple[tuple[str, int], ...]
    upcoming: tuple[UpcomingEvent, ...]


def compose(digest: Digest, zone: ZoneInfo) -> tuple[str, str, str]:
    """Subject, plain text and HTML of a digest."""
    average = sum(digest.last_four) / max(1, len(digest.last_four))
    subject = f"{digest.school}: this week's referrals, partners and events ({digest.week})"
    lines = [f"Weekly digest for {digest.school}, {digest.week}", "",
             f"Referrals this week: {digest.this_week} (the four weeks before: "
             f"{', '.join(map(str, digest.last_four))}; average {average:.1f})"]
    lines += [f"  {need}: {n}" for need, n in digest.this_week_by_need]
    lines += ["", "Partners' services added or changed this week:"]
    lines += [f"  {'added' if c.added else 'changed'}: {c.partner}, service {c.service_id}"
              f"{f' ({c.need})' if c.need else ''}: {c.open} of {c.capacity} slots open"
              for c in digest.changes] or ["  none"]
    lines += ["", "Open slots by need:"]
    lines += [f"  {need}: {n}" for need, n in digest.open_slots] or ["  none recorded"]
    lines += ["", "Coming family events:"]
    lines += [f"  {e.starts_at.astimezone(zone):%a %d %b %H:%M}: {e.title}"
              for e in digest.upcoming] or ["  none scheduled"]
    text = "\n".join(lines) + "\n"
    html = "<html><body><pre style=\"font-family:sans-serif\">" + escape(text) + \
        "</pre></body></html>"
    return subject, text, html


async def gather(session, district: str, school: str, now: datetime) -> Digest:  # type: ignore[no-untyped-def]
    """A school's digest for the week ending at ``now``, from the store."""
    opened = (await session.execute(select(ReferralFact.need, ReferralFact.opened_at).where(
        ReferralFact.district_id == district, ReferralFact.school_id == school,
        ReferralFact.opened_at >= now - 5 * WEEK, ReferralFact.opened_at < now))).all()
    weeks = [sum(1 for _, at in opened if now - (k + 1) * WEEK <= at < now - k * WEEK)
             for k in range(5)]
    by_need = Counter(need for need, at in opened if at >= now - WEEK)
    needs = await service_needs(session, district)
    names = dict((await session.execute(select(StepFact.partner_id, StepFact.partner_name).where(
        StepFact.district_id == district, StepFact.step == "matched",
        StepFact.partner_name.is_not(None)).distinct())).all())
    capacity = (await session.execute(select(CapacityFact).where(
        CapacityFact.district_id == district, CapacityFact.school_id == school,
        CapacityFact.at < now))).scalars().all()
    latest: dict[str, CapacityFact] = {}
    first: dict[str, datetime] = {}
    for row in capacity:
        first[row.service_id] = min(first.get(row.service_id, row.at), row.at)
        if row.service_id not in latest or (row.at, row.capacity, row.reserved) > (
                latest[row.service_id].at, latest[row.service_id].capacity,
                latest[row.service_id].reserved):
            latest[row.service_id] = row
    changes = tuple(sorted((ServiceChange(
        names.get(c.partner_id, c.partner_id), c.service_id, needs.get(c.service_id),
        c.capacity, max(0, c.capacity - c.reserved), first[c.service_id] >= now - WEEK)
        for c in latest.values() if c.at >= now - WEEK), key=lambda c: (c.partner, c.service_id)))
    slots: Counter[str] = Counter()
    for c in latest.values():
        slots[needs.get(c.service_id, "need not yet known")] += max(0, c.capacity - c.reserved)
    events = (await session.execute(select(FamilyEventFact.title, FamilyEventFact.starts_at)
                                    .where(FamilyEventFact.district_id == district,
                                           FamilyEventFact.school_id == school,
                                           FamilyEventFact.starts_at >= now,
                                           FamilyEventFact.starts_at < now + 2 * WEEK)
                                    .order_by(FamilyEventFact.starts_at))).all()
    return Digest(school, iso_week(now), changes, tuple(sorted(slots.items())), weeks[0],
                  tuple(weeks[1:]), tuple(sorted(by_need.items())),
                  tuple(UpcomingEvent(t, at) for t, at in events))


async def send_due(deps: InsightsDeps) -> int:
    """One round: claim and request every school's digest that is due; how many."""
    sent = 0
    now = deps.clock()
    for district in deps.runtime.districts.districts:
        for school in district.schools:
            if school.staff_emails and await _send_one(deps, district, school, now):
                sent += 1
    return sent


async def _send_one(deps: InsightsDeps, district: District, school: School,
                    now: datetime) -> bool:
    zone = ZoneInfo(school.timezone or district.timezone)
    config = deps.config
    week = due_week(now, zone, config.digest_weekday, config.digest_hour)
    if week is None:
        return False
    rt = deps.runtime
    async with rt.unit_of_work() as uow:
        if await uow.session.get(DigestClaim, (district.id, school.id, week)):
            return False
    try:
        async with rt.unit_of_work() as uow:
            uow.session.add(DigestClaim(district_id=district.id, school_id=school.id, week=week,
                                        claimed_at=now, recipients=len(school.staff_emails)))
            await uow.session.flush()  # another copy's claim fails here, before any work
            digest = await gather(uow.session, district.id, school.id, now)
            subject, text, html = compose(digest, zone)
            uow.emit(StaffDigestRequested(
                digest_id=f"{district.id}:{school.id}:{week}", school_id=school.id, week=week,
                subject=subject, text=text, html=html),
                district=district.id, school=school.id, subject=school.id)
    except IntegrityError:
        return False  # another copy claimed this school's week first
    DIGESTS.inc()
    log.info("insights: staff digest for %s/%s, %s, requested", district.id, school.id, week)
    return True


async def run_digests(deps: InsightsDeps) -> None:
    async def round_() -> bool:
        await send_due(deps)
        return False

    seconds = deps.config.digest_poll_seconds
    await Periodic("staff digest", round_, seconds, backoff_max=seconds).run()
