"""A district's SIS roster, OneRoster 1.2 CSV, 50,000 students (and their guardians, about
53,000 families), generated (tests/data/oneroster/generate.py): the time to import it into an
empty engagement database, and to re-sync it unchanged (the nightly case: read and check every
row, compare, write and publish nothing). In process, through the same reader and sync as
`ensemble roster import` and the HTTP upload, on SQLite (PostgreSQL too when
ENSEMBLE_BENCH_POSTGRES_URL or ENSEMBLE_TEST_POSTGRES_URL is set). The events a first import
writes to the outbox (one FamilyRegistered a family) are counted in; publishing them is the
relay's, measured by the other benchmarks.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.harness import Result
from runtime.db import utcnow
from runtime.districts import load_districts
from runtime.service import ServiceRuntime
from runtime.settings import DEFAULT_DISTRICTS_FILE, Settings
from services.engagement import roster, roster_sync
from services.engagement.tables import Base

STUDENTS = 50_000
QUICK_STUDENTS = 2_000
GENERATOR = Path(__file__).resolve().parents[1] / "tests" / "data" / "oneroster" / "generate.py"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("oneroster_generate", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _one(settings: Settings, backend: str, package: bytes, students: int,
               guardians: int) -> list[Result]:
    district = load_districts(DEFAULT_DISTRICTS_FILE).get("d001")
    assert district is not None
    rt = ServiceRuntime("engagement", settings, Base.metadata)
    await rt.migrate()
    results = []
    try:
        for label in ("import into an empty database", "re-sync unchanged"):
            started = time.perf_counter()
            known = await roster_sync.known_guardians(rt, district)
            read = roster.read_zip(package, district, known)
            loaded = await roster_sync.import_roster(rt, district, read, utcnow())
            seconds = time.perf_counter() - started
            assert loaded is not None and not read.errors, read.errors[:3]
            if label.startswith("re-sync"):
                assert loaded.events == 0 and loaded.families_unchanged == guardians
            else:
                assert loaded.families_created == guardians
                assert loaded.students_created == students
            results.append(Result.timed(
                f"roster {label}, {students:,} students ({guardians:,} families), {backend}",
                students, seconds,
                notes=f"{len(package) / 1e6:.1f} MB zipped; {loaded.events:,} events"))
    finally:
        schema = settings.database_schema("engagement")
        if schema:  # a PostgreSQL run leaves nothing behind
            async with rt.db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await rt.db.dispose()
    return results


async def run(quick: bool) -> list[Result]:
    students = QUICK_STUDENTS if quick else STUDENTS
    data = _generator().build(students=students, broken=False)
    package, guardians = data.zip(), len(data.guardians)
    results = []
    with tempfile.TemporaryDirectory(prefix="ensemble-bench-roster-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        results += await _one(settings, "SQLite", package, students, guardians)
    pg = os.environ.get("ENSEMBLE_BENCH_POSTGRES_URL") or os.environ.get(
        "ENSEMBLE_TEST_POSTGRES_URL")
    if pg:
        settings = Settings(engagement_database_url=pg,
                            database_schema_prefix=f"bench{uuid.uuid4().hex[:8]}")
        results += await _one(settings, "PostgreSQL", package, students, guardians)
    return results
