"""Insights over a district's year: 50,000 referrals' public events (benchmarks/district_year,
made through the contracts, about 11 events a referral), published to a private nats-server;
then the time to rebuild the insights store from the streams (`ensemble insights rebuild`:
drop, replay every stream through the service's own consumers), and to produce one school's
pack and the district's (store read, tables, suppression; and the PDF).

`python -m benchmarks --only benchmarks.insights` (`--quick`: 2,000 referrals). SQLite, and
PostgreSQL too when ENSEMBLE_BENCH_POSTGRES_URL or ENSEMBLE_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import nats
from sqlalchemy import text

from benchmarks.district_year import district_year, publish
from benchmarks.harness import Result, nats_server, percentile
from runtime.districts import Districts
from runtime.migrations import upgrade
from runtime.settings import Settings
from services.insights.domain import build_pack
from services.insights.queries import load_facts
from services.insights.rebuild import rebuild
from services.insights.render import pdf_bytes
from services.insights.service import runtime

REFERRALS = 50_000
QUICK_REFERRALS = 2_000
SCHOOLS = [f"school-{i:02d}" for i in range(20)]
END = datetime(2026, 4, 1, 12, tzinfo=UTC)
MONTH = "2026-03"
REPEAT = 5


def districts() -> Districts:
    return Districts.model_validate({"districts": [{
        "id": "d001", "name": "Benchmark district", "timezone": "America/Los_Angeles",
        "schools": [{"id": s, "name": s} for s in SCHOOLS]}]})


async def _packs(settings: Settings, label: str) -> list[Result]:
    rt = runtime(settings, districts())
    results = []
    try:
        for scope, school in (("one school", SCHOOLS[0]), ("the district", None)):
            times, pdf_times = [], []
            for _ in range(REPEAT):
                started = time.perf_counter()
                async with rt.unit_of_work() as uow:
                    facts = await load_facts(uow.session, "d001", school)
                pack = build_pack(facts, district_id="d001", school_id=school, month=MONTH,
                                  zone=ZoneInfo("America/Los_Angeles"))
                times.append(time.perf_counter() - started)
                started = time.perf_counter()
                pdf_bytes(pack)
                pdf_times.append(time.perf_counter() - started)
            ms = [t * 1000 for t in times]
            results.append(Result.timed(
                f"insights.pack.{label}.{scope.replace(' ', '_')}", REPEAT, sum(times),
                p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99),
                notes=f"data pack for {scope} ({len(facts.referrals):,} referrals in scope); "
                      f"PDF on top: p50 {percentile([t * 1000 for t in pdf_times], 50):.0f} ms"))
    finally:
        await rt.db.dispose()
    return results


async def _one(url: str, events: int, label: str, db_url: str | None,
               schema_prefix: str | None, data: Path) -> list[Result]:
    settings = Settings(nats_url=url, data_dir=data, insights_database_url=db_url,
                        database_schema_prefix=schema_prefix, fetch_batch=500)
    rt = runtime(settings, districts())
    await upgrade(rt.db, "insights")
    await rt.db.dispose()
    try:
        done = await rebuild(settings, districts(), poll=2)
        print(f"insights: rebuilt on {label} in {done.seconds:.1f} s", file=sys.stderr)
        results = [Result.timed(
            f"insights.rebuild.{label}", events, done.seconds,
            notes=f"drop the store, replay {events:,} public events of a district year "
                  f"({done.rows['insights_referrals']:,} referrals) through 20 durables")]
        return results + await _packs(settings, label)
    finally:
        if schema_prefix and db_url:
            from runtime.db import Database
            db = Database(db_url, rt.db.metadata)
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema_prefix}_insights" '
                                        "CASCADE"))
            await db.dispose()


async def run(quick: bool) -> list[Result]:
    referrals = QUICK_REFERRALS if quick else REFERRALS
    items = list(district_year(referrals, district="d001", schools=SCHOOLS, end=END))
    results = []
    async with nats_server() as url:
        nc = await nats.connect(url)
        try:
            from runtime.streams import ensure_streams
            await ensure_streams(nc.jetstream())
            started = time.perf_counter()
            await publish(nc.jetstream(), items)
            print(f"insights: {len(items):,} events published", file=sys.stderr)
            results.append(Result.timed(
                "insights.publish_district_year", len(items), time.perf_counter() - started,
                notes=f"{referrals:,} referrals' events published (setup, not insights)"))
        finally:
            await nc.close()
        with tempfile.TemporaryDirectory(prefix="ensemble-bench-insights-") as tmp:
            results += await _one(url, len(items), "sqlite", None, None, Path(tmp))
            pg = os.environ.get("ENSEMBLE_BENCH_POSTGRES_URL") or os.environ.get(
                "ENSEMBLE_TEST_POSTGRES_URL")
            if pg:
                results += await _one(url, len(items), "postgres", pg,
                                      f"bench{uuid.uuid4().hex[:8]}", Path(tmp))
    return results
