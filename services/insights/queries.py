"""Reading the store into the pack's facts, for a district or one of its schools."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.insights.domain import (
    Capacity,
    Facts,
    FamilyEvent,
    MessageEvent,
    Referral,
    Response,
    Step,
)
from services.insights.tables import (
    CapacityFact,
    FamilyEventFact,
    MessageFact,
    ReferralFact,
    ResponseFact,
    StepFact,
)


def _where(table: Any, district: str, school: str | None) -> list[Any]:
    where = [table.district_id == district]
    if school is not None:
        where.append(table.school_id == school)
    return where


async def load_facts(session: AsyncSession, district: str, school: str | None) -> Facts:
    """Everything a pack of ``district`` (or one ``school``) is made from. Steps are kept for
    the scope's referrals only (an event without a school is placed by its referral's)."""
    facts = Facts()
    referrals = (await session.execute(select(
        ReferralFact.referral_id, ReferralFact.school_id, ReferralFact.need,
        ReferralFact.opened_at).where(*_where(ReferralFact, district, school)))).all()
    facts.referrals = [Referral(*row) for row in referrals]
    ids = {r.referral_id for r in facts.referrals}
    columns = (StepFact.referral_id, StepFact.step, StepFact.at, StepFact.partner_id,
               StepFact.partner_name, StepFact.service_id, StepFact.need, StepFact.outcome)
    steps = [*(await session.execute(select(*columns).where(
        *_where(StepFact, district, school)))).all()]
    if school is not None:  # an event without a school, placed by its referral's
        steps += (await session.execute(select(*columns).where(
            StepFact.district_id == district, StepFact.school_id.is_(None)))).all()
    facts.steps = [Step(*row) for row in steps if row[0] in ids]
    facts.service_needs = await service_needs(session, district)
    capacity = (await session.execute(select(
        CapacityFact.service_id, CapacityFact.school_id, CapacityFact.partner_id,
        CapacityFact.capacity, CapacityFact.reserved, CapacityFact.at,
    ).where(*_where(CapacityFact, district, school)))).all()
    facts.capacity = [Capacity(*row) for row in capacity]
    await _engagement(session, facts, district, school)
    return facts


async def service_needs(session: AsyncSession, district: str) -> dict[str, str]:
    rows = (await session.execute(select(StepFact.service_id, StepFact.need).where(
        StepFact.district_id == district, StepFact.step == "matched").distinct())).all()
    return {service: need for service, need in rows if service and need}


async def _engagement(session: AsyncSession, facts: Facts, district: str,
                      school: str | None) -> None:
    events = (await session.execute(select(
        FamilyEventFact.family_event_id, FamilyEventFact.school_id, FamilyEventFact.title,
        FamilyEventFact.starts_at).where(*_where(FamilyEventFact, district, school)))).all()
    facts.events = [FamilyEvent(*row) for row in events]
    ids = {e.family_event_id for e in facts.events}
    responses = (await session.execute(select(
        ResponseFact.family_event_id, ResponseFact.family_id, ResponseFact.kind,
        ResponseFact.at).where(ResponseFact.district_id == district,
                               ResponseFact.family_event_id.in_(sorted(ids)) if school else
                               ResponseFact.district_id == district))).all()
    facts.responses = [Response(*row) for row in responses if row[0] in ids]
    messages = (await session.execute(select(
        MessageFact.family_id, MessageFact.kind, MessageFact.channel, MessageFact.language,
        MessageFact.at, MessageFact.notification_id,
    ).where(*_where(MessageFact, district, school),
            MessageFact.kind != "delivered"))).all()  # the pack counts no deliveries
    facts.messages = [MessageEvent(*row) for row in messages]
