"""Partners' handlers given a whole consumer batch (handlers.PREFETCH first, as the consumer
runs it): the same outcome as one event at a time, and the rows loaded once per batch."""

from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from support.sql import statements_run
from support.uow import HandlerBench

from contracts.envelope import Envelope
from contracts.events import (
    ConsentRecorded,
    FamilyRegistered,
    PartnerMatched,
    ReferralDeclined,
    ReferralOpened,
)
from contracts.taxonomy import Consent, Need, Urgency
from runtime.errors import RetryLater
from runtime.settings import Settings
from services.partners import directory, handlers
from services.partners.deps import PartnersDeps
from services.partners.service import build
from services.partners.tables import (
    Base,
    FamilyLanguage,
    Partner,
    PartnerStats,
    ReferralRequest,
    ServiceCapacity,
)

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
SCHOOL = "lincoln-es"

# Ranked in this order for a Spanish-speaking family: language first, then load.
PARTNERS = (("Smile Bright", ["es"], 0), ("Tooth Fairy", ["en"], 0), ("Dental Aid", ["en"], 3))


def opened(referral_id: str, consent: Consent = Consent.given,
           family_id: str = "fam-1") -> ReferralOpened:
    return ReferralOpened(referral_id=referral_id, school_id=SCHOOL, student_ref="stu-1",
                          family_id=family_id, need=Need.dental, urgency=Urgency.routine,
                          consent=consent, grade=3, opened_at=NOW - timedelta(hours=1))


def make_deps(tmp_path: Path) -> PartnersDeps:
    deps = build(Settings(data_dir=tmp_path), clock=lambda: NOW).deps
    assert isinstance(deps, PartnersDeps)
    return deps


async def directory_of_three(bench: HandlerBench) -> None:
    async with bench.db.transaction() as session:
        for name, languages, active in PARTNERS:
            org, _ = await directory.register(session, "d001", name, ["dental"], [SCHOOL],
                                              languages, [], 2)
            await session.execute(update(PartnerStats).where(PartnerStats.partner_id == org.id)
                                  .values(active=active))
        session.add(FamilyLanguage(district_id="d001", family_id="fam-es", language="es"))


async def snapshot(bench: HandlerBench, emitted: list[Any]) -> dict[str, Any]:
    """What the handlers left, partners named (their ids differ from bench to bench)."""
    async with bench.db.transaction() as session:
        names = {p.id: p.name for p in (await session.scalars(select(Partner))).all()}
        named = names.get
        requests = {r.referral_id: (r.state, named(r.partner_id), [named(p) for p in
                                    r.tried_partners], r.attempts, r.declines, r.accepted)
                    for r in (await session.scalars(select(ReferralRequest))).all()}
        reserved = {named(c.partner_id): c.reserved
                    for c in (await session.scalars(select(ServiceCapacity))).all()}
        stats = {named(s.partner_id): (s.matched, s.accepted, s.declined, s.active)
                 for s in (await session.scalars(select(PartnerStats))).all()}
        languages = {f.family_id: f.language
                     for f in (await session.scalars(select(FamilyLanguage))).all()}
    events = [(type(e).__name__, e.referral_id, named(getattr(e, "partner_id", None)),
               getattr(e, "attempt", None)) for e in emitted if isinstance(e, PartnerMatched)]
    return {"requests": requests, "reserved": reserved, "stats": stats,
            "languages": languages, "events": events}


async def run(tmp_path: Path, handler: Any, events: list[Any], *, batch: bool,
              before: list[tuple[Any, Any]] = ()) -> tuple[dict[str, Any], list[str]]:
    """``before`` (handler, event) one by one, then ``events`` to ``handler`` one by one or
    as one batch; the outcome and the SQL the delivery of ``events`` ran."""
    deps = make_deps(tmp_path)
    async with HandlerBench(Base.metadata) as bench:
        await directory_of_three(bench)
        for first_handler, first in before:
            await bench.handle(first_handler, first, deps)
        envelopes = [bench.envelope(e) for e in events]
        emitted: list[Any] = []
        with statements(bench) as sql:
            if batch:
                prefetch = handlers.PREFETCH[type(events[0])]
                emitted = await bench.deliver_batch(handler, envelopes, deps, prefetch)
            else:
                for envelope in envelopes:
                    emitted += await bench.deliver(handler, envelope, deps)
        return await snapshot(bench, emitted), sql


def statements(bench: HandlerBench) -> AbstractContextManager[list[str]]:
    return statements_run(bench.db.engine)


def reads_of(sql: list[str], table: str) -> list[str]:
    return [s for s in sql if s.startswith("SELECT") and f"FROM {table}" in s]


async def test_a_batch_of_openings_matches_as_one_by_one_and_reads_each_table_once(
        tmp_path: Path) -> None:
    es = opened("r2", family_id="fam-es")
    # r1 twice (published again under another id): matched once, as one by one.
    events = [opened("r1"), es, opened("r1"), opened("r3", Consent.pending)]
    alone, _ = await run(tmp_path / "a", handlers.on_referral_opened, events, batch=False)
    batched, sql = await run(tmp_path / "b", handlers.on_referral_opened, events, batch=True)
    assert batched == alone
    assert batched["requests"] == {
        "r1": ("matched", "Tooth Fairy", ["Tooth Fairy"], 1, 0, False),
        "r2": ("matched", "Smile Bright", ["Smile Bright"], 1, 0, False),  # speaks es
        "r3": ("awaiting_consent", None, [], 0, 0, False)}
    assert [e[1:] for e in batched["events"]] == [("r1", "Tooth Fairy", 1),
                                                  ("r2", "Smile Bright", 1)]
    # The requests and the families' languages were read once for the batch, not per event;
    # r1's second opening is answered by what the first added (prefetch.add), not a read.
    requests = reads_of(sql, "referral_requests")
    assert [" IN (" in s for s in requests] == [True]
    assert len(reads_of(sql, "family_languages")) == 1


async def test_two_declines_of_one_referral_in_a_batch_each_match_the_next_partner(
        tmp_path: Path) -> None:
    es = opened("r1", family_id="fam-es")
    declines = [ReferralDeclined(referral_id="r1", partner_id=name, reason="no_capacity")
                for name in ("Smile Bright", "Tooth Fairy")]

    async def outcome(batch: bool) -> dict[str, Any]:
        # Partner ids are made at registration: name them once the directory exists.
        deps = make_deps(tmp_path / str(batch))
        async with HandlerBench(Base.metadata) as bench:
            await directory_of_three(bench)
            await bench.handle(handlers.on_referral_opened, es, deps)
            async with bench.db.transaction() as session:
                ids = {p.name: p.id for p in (await session.scalars(select(Partner))).all()}
            envelopes = [bench.envelope(d.model_copy(update={"partner_id": ids[d.partner_id]}))
                         for d in declines]
            if batch:
                emitted = await bench.deliver_batch(handlers.on_declined, envelopes, deps,
                                                    handlers.PREFETCH[ReferralDeclined])
            else:
                emitted = [e for env in envelopes
                           for e in await bench.deliver(handlers.on_declined, env, deps)]
            return await snapshot(bench, emitted)

    alone, batched = await outcome(False), await outcome(True)
    assert batched == alone
    assert batched["requests"]["r1"] == (
        "matched", "Dental Aid", ["Smile Bright", "Tooth Fairy", "Dental Aid"], 3, 2, False)
    assert batched["reserved"] == {"Smile Bright": 0, "Tooth Fairy": 0, "Dental Aid": 1}
    assert [e[2:] for e in batched["events"]] == [("Tooth Fairy", 2), ("Dental Aid", 3)]


async def test_consent_and_an_unknown_referral_in_one_batch(tmp_path: Path) -> None:
    """Consent given for a waiting referral matches it; the batch's event about a referral
    partners has not heard of raises RetryLater, as alone (the consumer then applies the
    batch one by one)."""
    given = ConsentRecorded(referral_id="r1", consent=Consent.given, recorded_by="staff-1",
                            recorded_at=NOW)
    waiting = [(handlers.on_referral_opened, opened("r1", Consent.pending))]
    alone, _ = await run(tmp_path / "a", handlers.on_consent, [given], batch=False,
                         before=waiting)
    batched, sql = await run(tmp_path / "b", handlers.on_consent, [given], batch=True,
                             before=waiting)
    assert batched == alone and batched["requests"]["r1"][:2] == ("matched", "Tooth Fairy")
    assert len(reads_of(sql, "referral_requests")) == 1

    unknown = ConsentRecorded(referral_id="r9", consent=Consent.given, recorded_by="staff-1",
                              recorded_at=NOW)
    deps = make_deps(tmp_path / "c")
    async with HandlerBench(Base.metadata) as bench:
        envelopes: list[Envelope] = [bench.envelope(given), bench.envelope(unknown)]
        await bench.handle(handlers.on_referral_opened, opened("r1", Consent.pending), deps)
        with pytest.raises(RetryLater):
            await bench.deliver_batch(handlers.on_consent, envelopes, deps,
                                      handlers.PREFETCH[ConsentRecorded])
        assert (await bench.get(ReferralRequest, "r1")).state == "awaiting_consent"


async def test_a_family_registered_twice_in_a_batch_keeps_the_last_language(
        tmp_path: Path) -> None:
    events = [FamilyRegistered(family_id="fam-1", school_id=SCHOOL, preferred_language=lang)
              for lang in ("es", "vi")] + [
        FamilyRegistered(family_id="fam-es", school_id=SCHOOL, preferred_language="so")]
    alone, _ = await run(tmp_path / "a", handlers.on_family_registered, events, batch=False)
    batched, sql = await run(tmp_path / "b", handlers.on_family_registered, events, batch=True)
    assert batched == alone
    assert batched["languages"] == {"fam-1": "vi", "fam-es": "so"}
    # One read for the batch; fam-1's second registration finds what the first added.
    assert [" IN (" in s for s in reads_of(sql, "family_languages")] == [True]


def test_each_consumer_has_its_prefetch(tmp_path: Path) -> None:
    assert set(handlers.PREFETCH) == set(handlers.HANDLERS)
    service = build(Settings(data_dir=tmp_path))
    assert all(c.prefetch is not None for c in service.runtime.consumers)
