"""Matching one referral against a directory of 10,000 services: the candidate query plus the
ranking, in process, against a real database (SQLite; PostgreSQL too when
ENSEMBLE_BENCH_POSTGRES_URL or ENSEMBLE_TEST_POSTGRES_URL is set). Target: well under 5 ms.

Two shapes of directory: a county's (20 schools, each service at 3 of them: about 100
candidates per need and school) and a dense one (2 schools, every service at both: about 670).

A third row per backend times the handler's whole path on the county shape: ``assign.match``
in a unit of work (family language, candidate query, ranking, the reservation, the partner's
stats, PartnerMatched and its reasons written to the outbox), up to but not including the commit.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert, text

from benchmarks.harness import Result, percentile
from contracts.taxonomy import Need
from runtime.db import Database, utcnow
from runtime.uow import UnitOfWork, messaging_tables
from services.partners.assign import BEST, candidate_rows, match
from services.partners.matching import Request, grades_key, languages_key, rank
from services.partners.tables import (
    Base,
    FamilyLanguage,
    Partner,
    PartnerService,
    PartnerStats,
    ReferralRequest,
    ServiceCapacity,
)

SERVICES = 10_000
NEEDS = [n.value for n in Need]
LANGUAGES = ["en", "es", "vi", "zh", "ar"]
FAMILIES = 200
OUTBOX = messaging_tables(Base.metadata).outbox  # as the service's runtime adds it


async def _fill(db: Database, schools: list[str], per_service: int, rng: random.Random) -> None:
    partners, services, capacity, stats = [], [], [], []
    now = utcnow()
    for p in range(SERVICES // 4):
        pid = str(uuid.UUID(int=rng.getrandbits(128)))
        langs = ["en", *rng.sample(LANGUAGES[1:], rng.randint(0, 2))]
        partners.append({"id": pid, "district_id": "d001", "name": f"Partner {p}",
                         "languages": langs, "status": "active", "created_at": now,
                         "source": "api"})
        stats.append({"partner_id": pid, "district_id": "d001", "matched": rng.randint(0, 50),
                      "accepted": rng.randint(0, 30), "declined": rng.randint(0, 10),
                      "accept_seconds": rng.uniform(0, 1e6), "active": rng.randint(0, 8)})
        for _ in range(4):
            sid = str(uuid.UUID(int=rng.getrandbits(128)))
            need = rng.choice(NEEDS)
            grades = [] if rng.random() < 0.5 else sorted(rng.sample(range(-1, 13), 5))
            served = rng.sample(schools, per_service)
            services.append({"id": sid, "partner_id": pid, "district_id": "d001", "need": need,
                             "schools": served, "grades": grades, "grades_key": grades_key(grades),
                             "status": "active" if rng.random() < 0.95 else "inactive",
                             "service_languages": [], "languages_key": languages_key(langs),
                             "hsds": {}, "name": f"Service {sid[:8]}"})
            for school in served:
                cap = rng.randint(0, 10)
                capacity.append({"service_id": sid, "school_id": school, "district_id": "d001",
                                 "need": need, "capacity": cap, "reserved": rng.randint(0, cap),
                                 "partner_id": pid, "service_status": services[-1]["status"],
                                 "languages_key": languages_key(langs),
                                 "grades_key": grades_key(grades)})
    families = [{"district_id": "d001", "family_id": f"fam-{i}",
                 "language": rng.choice(LANGUAGES)} for i in range(FAMILIES)]
    async with db.transaction() as session:
        for model, rows in [(Partner, partners), (PartnerStats, stats), (FamilyLanguage, families),
                            (PartnerService, services), (ServiceCapacity, capacity)]:
            for i in range(0, len(rows), 2000):
                await session.execute(insert(model.__table__), rows[i:i + 2000])
    if not db.is_sqlite:
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))


async def _measure(db: Database, schools: list[str], count: int,
                   rng: random.Random) -> tuple[list[float], list[float], float]:
    """Wall times, this process's CPU times (on a shared machine the difference is waiting for
    a core, or for PostgreSQL), and the mean number of candidates ranked."""
    timings: list[float] = []
    cpu: list[float] = []
    candidates = 0
    async with db.transaction() as session:
        for i in range(count + 50):
            request = Request(district_id="d001", school_id=rng.choice(schools),
                              need=rng.choice(NEEDS), grade=rng.choice([None, *range(-1, 13)]),
                              language=rng.choice(LANGUAGES), tried_partners=())
            started, cpu_started = time.perf_counter(), time.process_time()
            ranked = rank(request, await candidate_rows(session, request, best=BEST))
            elapsed = time.perf_counter() - started
            if i >= 50:  # warm-up: statement caches, page cache
                timings.append(elapsed)
                cpu.append(time.process_time() - cpu_started)
                candidates += len(ranked)
    return timings, cpu, candidates / count


async def _measure_match(db: Database, schools: list[str], count: int,
                         rng: random.Random) -> tuple[list[float], list[float], int]:
    """The handler's path, one referral per transaction, timed up to the commit."""
    timings: list[float] = []
    cpu: list[float] = []
    matched = 0
    for i in range(count + 50):
        now = utcnow()
        request = ReferralRequest(
            referral_id=str(uuid.UUID(int=rng.getrandbits(128))), district_id="d001",
            school_id=rng.choice(schools), family_id=f"fam-{rng.randrange(FAMILIES)}",
            need=rng.choice(NEEDS), urgency="routine",
            grade=rng.choice([None, *range(-1, 13)]), consent="given", state="awaiting_consent",
            tried_partners=[], attempts=0, opened_at=now, updated_at=now, accepted=False,
            ever_matched=False, declines=0)
        async with db.transaction() as session:
            uow = UnitOfWork(session, "/bench/partners")
            session.add(request)
            await session.connection()  # begun, as the consumer's inbox check begins it
            started, cpu_started = time.perf_counter(), time.process_time()
            await match(uow, request, now)
            await uow.flush(OUTBOX)
            elapsed = time.perf_counter() - started
            used = time.process_time() - cpu_started
        if i >= 50:
            timings.append(elapsed)
            cpu.append(used)
            matched += request.state == "matched"
    return timings, cpu, matched


async def _one(url: str, schema: str | None, label: str, schools: int, per_service: int,
               count: int) -> list[Result]:
    db = Database(url, Base.metadata, schema)
    try:
        if schema and not db.is_sqlite:
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await db.create_schema()
        rng = random.Random(42)
        names = [f"school-{i:02d}" for i in range(schools)]
        await _fill(db, names, per_service, rng)
        timings, cpu, mean_candidates = await _measure(db, names, count, rng)
        whole = await _measure_match(db, names, count // 3, rng) if schools == 20 else None
    finally:
        if schema and not db.is_sqlite:
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await db.dispose()
    ms = [t * 1000 for t in timings]
    cpu_ms = [t * 1000 for t in cpu]
    results = [Result.timed(
        f"matching.{label}.{schools}_schools", len(timings), sum(timings),
        p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99),
        notes=f"{SERVICES:,} services; candidate query + ranking; "
              f"best {BEST} of the eligible returned, {mean_candidates:.0f} on average; "
              f"process CPU p50 {percentile(cpu_ms, 50):.2f} ms, p99 "
              f"{percentile(cpu_ms, 99):.2f} ms")]
    if whole is not None:
        times, cpu, matched = whole
        ms = [t * 1000 for t in times]
        cpu_ms = [t * 1000 for t in cpu]
        results.append(Result.timed(
            f"matching.{label}.{schools}_schools.handler", len(times), sum(times),
            p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99),
            notes=f"assign.match whole: query, ranking, reservation, stats, PartnerMatched "
                  f"to the outbox (commit excluded); {matched} of {len(times)} matched; "
                  f"process CPU p50 {percentile(cpu_ms, 50):.2f} ms, p99 "
                  f"{percentile(cpu_ms, 99):.2f} ms"))
    return results


async def run(quick: bool) -> list[Result]:
    count = 300 if quick else 3000
    results = []
    with tempfile.TemporaryDirectory(prefix="ensemble-bench-matching-") as tmp:
        for schools, per_service in [(20, 3), (2, 2)]:
            url = f"sqlite+aiosqlite:///{Path(tmp) / f'partners-{schools}.db'}"
            results += await _one(url, None, "sqlite", schools, per_service, count)
    pg = os.environ.get("ENSEMBLE_BENCH_POSTGRES_URL") or os.environ.get(
        "ENSEMBLE_TEST_POSTGRES_URL")
    if pg:
        for schools, per_service in [(20, 3), (2, 2)]:
            schema = f"bench_matching_{uuid.uuid4().hex[:8]}"
            results += await _one(pg, schema, "postgres", schools, per_service, count)
    return results
