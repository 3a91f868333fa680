"""Every consumer handler of referrals, through an in-memory unit of work: no NATS, no server,
milliseconds each."""

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import pytest
from support.sql import statements_run
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
from runtime.errors import NotFound, RetryLater
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


async def opened(bench: HandlerBench, desk: Desk, student_ref: str = "stu-1") -> str:
    async with bench.unit_of_work() as uow:
        referral = await open_referral(
            uow, desk, district_id="d001", school_id="lincoln-es", student_ref=student_ref,
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


# --- a consumer batch: the PREFETCH loads its rows once, the handlers apply in order ---------


def statements(bench: HandlerBench) -> AbstractContextManager[list[str]]:
    """The SQL the bench's database ran inside the block, first words each."""
    return statements_run(bench.db.engine, lambda sql: " ".join(sql.split()[:4]))


def selects_of(seen: list[str], table: str) -> int:
    return sum(1 for s in seen if s.startswith("SELECT") and f"{table}." in s)


def test_every_handler_but_erasure_has_a_prefetch() -> None:
    assert set(handlers.PREFETCH) == set(handlers.HANDLERS) - {FamilyErased}


async def test_a_batch_loads_its_referrals_in_one_statement_and_applies_two_events_about_one(
        bench: HandlerBench, desk: Desk) -> None:
    first, second = await opened(bench, desk), await opened(bench, desk, "stu-2")
    batch = [bench.envelope(matched(first)), bench.envelope(matched(second)),
             bench.envelope(matched(first))]  # the same match again, under another event id
    with statements(bench) as seen:
        emitted = await bench.deliver_batch(handlers.on_partner_matched, batch, desk,
                                            prefetch=handlers.PREFETCH[PartnerMatched])
    assert emitted == []
    assert selects_of(seen, "referrals") == 1  # the prefetch; none per event
    for referral_id in (first, second):
        assert (await bench.get(Referral, referral_id)).status == "matched"
    assert await timeline(bench, first) == [
        ("ReferralOpened", None), ("PartnerMatched", True), ("PartnerMatched", False)]
    assert await timeline(bench, second) == [("ReferralOpened", None), ("PartnerMatched", True)]


async def test_a_batch_applies_a_no_partner_then_a_rematch_of_one_referral_in_order(
        bench: HandlerBench, desk: Desk) -> None:
    referral_id = await opened(bench, desk)
    prefetch = handlers.PREFETCH[NoPartnerAvailable]
    assert prefetch is handlers.PREFETCH[PartnerMatched]  # one loader for referral events
    none = NoPartnerAvailable(referral_id=referral_id, family_id="fam-1", need=Need.dental,
                              reason="no partner serves dental at lincoln-es")
    await bench.deliver_batch(handlers.on_no_partner, [bench.envelope(none)] * 2, desk, prefetch)
    referral = await bench.get(Referral, referral_id)
    assert (referral.status, referral.follow_up_reason) == ("no_partner", "no_partner")
    assert (await timeline(bench, referral_id))[1:] == [
        ("NoPartnerAvailable", True), ("NoPartnerAvailable", False)]


async def test_a_batch_about_a_referral_not_there_fails_as_one_event_does(
        bench: HandlerBench, desk: Desk) -> None:
    referral_id = await opened(bench, desk)
    batch = [bench.envelope(matched(referral_id)), bench.envelope(matched("ref-unknown"))]
    with pytest.raises(NotFound):
        await bench.deliver_batch(handlers.on_partner_matched, batch, desk,
                                  handlers.PREFETCH[PartnerMatched])
    assert (await bench.get(Referral, referral_id)).status == "opened"  # rolled back together


async def test_a_batch_of_contacts_skips_those_about_no_referral(
        bench: HandlerBench, desk: Desk) -> None:
    referral_id = await opened(bench, desk)
    await bench.handle(handlers.on_partner_matched, matched(referral_id), desk)
    contacts = [FamilyContacted(family_id="fam-1", kind="sms", contacted_at=NOW),
                FamilyContacted(family_id="fam-1", referral_id=referral_id, outreach_id="o1",
                                kind="sms", contacted_at=NOW)]
    with statements(bench) as seen:
        await bench.deliver_batch(handlers.on_family_contacted, list(map(bench.envelope, contacts)),
                                  desk, handlers.PREFETCH[FamilyContacted])
    assert selects_of(seen, "referrals") == 1
    assert (await bench.get(Referral, referral_id)).family_contacted_at == NOW


async def test_a_batch_registers_each_new_family_once(bench: HandlerBench, desk: Desk) -> None:
    woken = []
    desk.arrivals.arrived = lambda: woken.append(True)  # type: ignore[method-assign]
    known = FamilyRegistered(family_id="fam-1", school_id="lincoln-es", preferred_language="es")
    await bench.handle(handlers.on_family_registered, known, desk)
    new = FamilyRegistered(family_id="fam-2", school_id="lincoln-es", preferred_language="en")
    batch = [bench.envelope(e) for e in (known, new, new)]  # fam-2 twice, two event ids
    with statements(bench) as seen:
        await bench.deliver_batch(handlers.on_family_registered, batch, desk,
                                  handlers.PREFETCH[FamilyRegistered])
    assert selects_of(seen, "known_families") == 1
    assert sum(1 for s in seen if s.startswith("INSERT INTO known_families")) == 1
    assert (await bench.get(KnownFamily, ("d001", "fam-2"))).school_id == "lincoln-es"
    assert woken == [True, True]  # fam-1 when it first came, fam-2 once
