"""The last slot, raced: two copies of the partners service (two engines, two connection pools,
one database) match two referrals at once for a service with one slot left. Exactly one wins,
the other gets the next candidate or NoPartnerAvailable, and capacity never goes negative, also
when releases race. On PostgreSQL the transactions truly overlap (row locks decide); on SQLite
the writers queue (BEGIN IMMEDIATE)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from contracts.events import NoPartnerAvailable, PartnerMatched
from runtime.db import Database, utcnow
from runtime.outbox import UnitOfWork
from runtime.settings import Settings
from services.partners import directory
from services.partners.assign import match
from services.partners.capacity import release, reserve
from services.partners.tables import Base, ReferralRequest, ServiceCapacity


@pytest.fixture
async def copies(tmp_path: Path, backend: dict[str, str]) -> AsyncIterator[list[Database]]:
    settings = Settings(data_dir=tmp_path, **backend)
    url, schema = settings.database_url("partners"), settings.database_schema("partners")
    dbs = [Database(url, Base.metadata, schema) for _ in range(2)]
    await dbs[0].create_schema()
    yield dbs
    for db in dbs:
        await db.dispose()


def _request(referral_id: str, need: str = "dental") -> ReferralRequest:
    now = utcnow()
    return ReferralRequest(
        referral_id=referral_id, district_id="d001", school_id="lincoln-es",
        family_id=f"fam-{referral_id}", need=need, urgency="routine", grade=None,
        consent="given", state="awaiting_consent", tried_partners=[], attempts=0, opened_at=now,
        updated_at=now, accepted=False, ever_matched=False, declines=0)


async def _match_in(db: Database, referral_id: str, gate: asyncio.Barrier) -> list[str]:
    async with db.transaction() as session:
        uow = UnitOfWork(session, "/tests")
        request = _request(referral_id)
        session.add(request)
        if not db.is_sqlite:
            await gate.wait()  # both transactions are open before either reserves
        await match(uow, request, utcnow())
        return [e.type for e in uow.emitted]


async def test_two_copies_race_for_the_last_slot(copies: list[Database]) -> None:
    rounds = 5
    async with copies[0].transaction() as session:
        _, services = await directory.register(session, "d001", "Last Slot Dental", ["dental"],
                                               ["lincoln-es"], ["en"], [], rounds)
    service_id = services[0].id
    outcomes: list[str] = []
    for i in range(rounds):
        # Leave exactly one slot open, then let two referrals race for it.
        async with copies[0].transaction() as session:
            await session.execute(text("UPDATE service_capacity SET reserved = capacity - 1"))
        gate = asyncio.Barrier(2)
        results = await asyncio.gather(_match_in(copies[0], f"r{i}a", gate),
                                       _match_in(copies[1], f"r{i}b", gate))
        outcomes += [name for emitted in results for name in emitted]
        assert sorted(name for emitted in results for name in emitted) == [
            PartnerMatched.ce_type(), NoPartnerAvailable.ce_type()]
        async with copies[1].transaction() as session:
            row = await session.get(ServiceCapacity, (service_id, "lincoln-es"))
            assert row is not None and row.reserved == row.capacity == rounds
    assert outcomes.count(PartnerMatched.ce_type()) == rounds

    async with copies[0].transaction() as session:
        held = (await session.scalars(select(ReferralRequest).where(
            ReferralRequest.state == "matched"))).all()
        assert len(held) == rounds


async def test_racing_releases_never_go_below_zero(copies: list[Database]) -> None:
    async with copies[0].transaction() as session:
        _, services = await directory.register(session, "d001", "One Slot", ["dental"],
                                               ["lincoln-es"], ["en"], [], 1)
    service_id = services[0].id
    async with copies[0].transaction() as session:
        assert await reserve(UnitOfWork(session, "/t"), service_id, "lincoln-es")
        assert not await reserve(UnitOfWork(session, "/t"), service_id, "lincoln-es")

    async def release_in(db: Database) -> bool:
        async with db.transaction() as session:
            return await release(UnitOfWork(session, "/t"), service_id, "lincoln-es")

    released = await asyncio.gather(*(release_in(db) for db in copies * 3))
    assert released.count(True) == 1
    async with copies[1].transaction() as session:
        row = await session.get(ServiceCapacity, (service_id, "lincoln-es"))
        assert row is not None and row.reserved == 0


async def test_the_database_refuses_a_negative_count(copies: list[Database]) -> None:
    async with copies[0].transaction() as session:
        _, services = await directory.register(session, "d001", "Guarded", ["dental"],
                                               ["lincoln-es"], ["en"], [], 1)
    with pytest.raises(Exception, match=r"(?i)check|constraint"):
        async with copies[0].transaction() as session:
            await session.execute(text(
                f"UPDATE service_capacity SET reserved = -1 WHERE service_id = '{services[0].id}'"))


async def _batch(db: Database, referrals: list[tuple[str, str]], mine: asyncio.Event,
                 theirs: asyncio.Event) -> list[str]:
    """A batch of matches in one transaction, as the consumer applies one; after the first
    match it waits (a little) for the other copy's first."""
    async with db.transaction() as session:
        uow = UnitOfWork(session, "/tests")
        for n, (referral_id, need) in enumerate(referrals):
            request = _request(referral_id, need)
            session.add(request)
            await match(uow, request, utcnow())
            if n == 0:
                mine.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(theirs.wait(), 1.0)
        return [e.type for e in uow.emitted]


async def test_two_copies_matching_batches_in_opposite_order_do_not_deadlock(
        copies: list[Database]) -> None:
    """Copy 0 matches to the dental partner, then the vision one; copy 1 the other way round.
    Row locks alone deadlocked here on PostgreSQL (each held one partner's capacity and stats
    rows and wanted the other's); the capacity turn lock makes the second batch wait instead."""
    async with copies[0].transaction() as session:
        for name, need in (("Dental Co", "dental"), ("Vision Co", "vision")):
            await directory.register(session, "d001", name, [need], ["lincoln-es"], ["en"], [],
                                     10)
    first, second = asyncio.Event(), asyncio.Event()
    results = await asyncio.gather(
        _batch(copies[0], [("a1", "dental"), ("a2", "vision")], first, second),
        _batch(copies[1], [("b1", "vision"), ("b2", "dental")], second, first))
    assert results == [[PartnerMatched.ce_type()] * 2] * 2
    async with copies[0].transaction() as session:
        reserved = (await session.scalars(select(ServiceCapacity.reserved))).all()
    assert sorted(reserved) == [2, 2]
