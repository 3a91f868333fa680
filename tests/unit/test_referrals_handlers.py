"""Every consumer handler of referrals, through an in-memory unit of work: no NATS, no server,
milliseconds each."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from support.uow import HandlerBench

from contracts.events import (
    FamilyContacted,
    FamilyErased,
    FamilyRegistered,
    FamilyUnreachable,
    NoPartnerAvailable,
    PartnerMatched,
)
from contracts.taxonomy import Consent, Need, Urgency
from runtime.districts import load_districts
from runtime.errors import RetryLater
from runtime.settings import Settings
from services.referrals import handlers
from services.referrals.referrals import Desk, open_referral
from services.referrals.tables import Base, KnownFamily, Referral, TimelineEntry

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # a Tuesday, school in session


@pytest.fixture
async def bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(Base.metadata) as bench:
        yield bench


@pytest.fixture
def desk() -> Desk:
    return Desk(load_districts(Settings().districts_file), clock=lambda: NOW)


async def opened(bench: HandlerBench, desk: Desk) -> str:
    async with bench.unit_of_work() as uow:
        referral = await open_referral(
            uow, desk, district_id="d001", school_id="lincoln-es", student_ref="stu-1",
            family_id="fam-1", need=Need.dental, urgency=Urgency.routine, consent=Consent.given,
            grade=3, note=None, idempotency_key=None, actor="coordinator:test")
    return referral.id


def matched(referral_id: str, attempt: int = 1, partner: str = "p1") -> PartnerMatched:
    return PartnerMatched(referral_id=referral_id, family_id="fam-1", partner_id=partner,
                          service_id=f"{partner}-dental", partner_name="Smile Bright",
                          need=Need.dental, urgency=Urgency.routine, score=0.9,
                          reasons=["serves lincoln-es"], attempt=attempt)


async def timeline(bench: HandlerBench, referral_id: str) -> list[tuple[str, bool | None]]:
    async with bench.db.transaction() as session:
        from sqlalchemy import select
        rows = (await session.scalars(select(TimelineEntry).where(
            TimelineEntry.referral_id == referral_id).order_by(TimelineEntry.at))).all()
        return [(r.event_type, r.data.get("applied")) for r in rows]


async def test_a_registered_family_becomes_known_once_and_wakes_a_waiting_post(
        bench: HandlerBench, desk: Desk) -> None:
    woken = []
    desk.arrivals.arrived = lambda: woken.append(True)  # type: ignore[method-assign]
    event = FamilyRegistered(family_id="fam-1", school_id="lincoln-es", preferred_language="es")
    assert await bench.handle(handlers.on_family_registered, event, desk) == []
    assert await bench.handle(handlers.on_family_registered, event, desk) == []
    assert (await bench.get(KnownFamily, ("d001", "fam-1"))).school_id == "lincoln-es"
    assert woken == [True]  # the second delivery changed nothing


async def test_a_match_moves_the_referral_and_a_stale_one_is_kept_as_not_applied(
        bench: HandlerBench, desk: Desk) -> None:
    referral_id = await opened(bench, desk)
    await bench.handle(handlers.on_partner_matched, matched(referral_id), desk)
    referral = await bench.get(Referral, referral_id)
    assert (referral.status, referral.partner_id, referral.service_id) == (
        "matched", "p1", "p1-dental")
    await bench.handle(handlers.on_partner_matched, matched(referral_id), desk)  # redelivered
    assert (await timeline(bench, referral_id))[-2:] == [
        ("PartnerMatched", True), ("PartnerMatched", False)]


async def test_no_partner_makes_the_referral_due_now(bench: HandlerBench, desk: Desk) -> None:
    referral_id = await opened(bench, desk)
    event = NoPartnerAvailable(referral_id=referral_id, family_id="fam-1", need=Need.dental,
                               reason="no partner serves dental at lincoln-es")
    await bench.handle(handlers.on_no_partner, event, desk)
    referral = await bench.get(Referral, referral_id)
    assert referral.status == "no_partner"
    assert (referral.follow_up_due_at, referral.follow_up_reason) == (NOW, "no_partner")


async def test_an_automated_contact_before_its_match_is_retried_later(
        bench: HandlerBench, desk: Desk) -> None:
    referral_id = await opened(bench, desk)
    contact = FamilyContacted(family_id="fam-1", referral_id=referral_id, outreach_id="o1",
                              kind="sms", contacted_at=NOW)
    with pytest.raises(RetryLater):
        await bench.handle(handlers.on_family_contacted, contact, desk)
    await bench.handle(handlers.on_partner_matched, matched(referral_id), desk)
    await bench.handle(handlers.on_family_contacted, contact, desk)
    referral = await bench.get(Referral, referral_id)
    assert referral.family_contacted_at == NOW


async def test_a_contact_about_no_referral_is_ignored(bench: HandlerBench, desk: Desk) -> None:
    contact = FamilyContacted(family_id="fam-1", kind="sms", contacted_at=NOW)
    assert await bench.handle(handlers.on_family_contacted, contact, desk) == []


async def test_an_unreachable_family_makes_an_open_referral_due_at_once(
        bench: HandlerBench, desk: Desk) -> None:
    referral_id = await opened(bench, desk)
    event = FamilyUnreachable(family_id="fam-1", referral_id=referral_id, outreach_id="o1",
                              attempts=3)
    await bench.handle(handlers.on_family_unreachable, event, desk)
    referral = await bench.get(Referral, referral_id)
    assert (referral.follow_up_due_at, referral.follow_up_reason) == (NOW, "family_unreachable")
    assert (await timeline(bench, referral_id))[-1] == ("FamilyUnreachable", True)


def test_every_consumed_event_has_its_handler_in_the_map() -> None:
    assert set(handlers.HANDLERS) == {FamilyRegistered, PartnerMatched, NoPartnerAvailable,
                                      FamilyContacted, FamilyUnreachable, FamilyErased}
