"""Migration 0004_rosters on a database that holds families and students at the baseline: they
are all there after the upgrade, as they were, none retired, and no roster record exists for
them (a roster import knows only the people it loaded itself)."""

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData, text

from runtime.db import Database
from runtime.migrations import current, head, upgrade
from runtime.settings import Settings


async def test_families_and_students_at_the_baseline_survive_the_rosters_migration(
        tmp_path: Path, backend: dict[str, str]) -> None:
    settings = Settings(data_dir=tmp_path / "data", **backend)
    db = Database(settings.database_url("engagement"), MetaData(),
                  settings.database_schema("engagement"))
    prefix = f'"{db.schema}".' if db.schema else ""
    try:
        await upgrade(db, "engagement", "0001_baseline")
        async with db.engine.begin() as conn:
            await conn.execute(text(
                f"INSERT INTO {prefix}families (id, district_id, school_id, name, "
                "preferred_language, phone, email, preferred_channel, sms_consent, "
                "email_consent, sms_opted_out, email_opted_out, created_at) VALUES ('f1', "
                "'d001', 'lincoln-es', 'Maria Garcia', 'es', NULL, 'm@example.org', 'email', "
                "false, true, false, false, :at)"), {"at": datetime(2026, 9, 1, tzinfo=UTC)})
            await conn.execute(text(
                f"INSERT INTO {prefix}students (district_id, student_ref, family_id, school_id, "
                "grade) VALUES ('d001', 's1', 'f1', 'lincoln-es', 3)"))
        done = await upgrade(db, "engagement")
        assert (done.before, done.after) == ("0001_baseline", head("engagement"))
        assert await current(db) == head("engagement")
        async with db.engine.connect() as conn:
            families = (await conn.execute(text(
                f"SELECT id, name, email, retired_at FROM {prefix}families"))).all()
            students = (await conn.execute(text(
                f"SELECT student_ref, family_id, grade FROM {prefix}students"))).all()
            records = (await conn.execute(text(
                f"SELECT count(*) FROM {prefix}roster_records"))).scalar()
        assert [tuple(f) for f in families] == [("f1", "Maria Garcia", "m@example.org", None)]
        assert [tuple(s) for s in students] == [("s1", "f1", 3)]
        assert records == 0
    finally:
        if db.schema:
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE'))
        await db.dispose()
