"""Each service's schema under Alembic (runtime/migrations.py, services/<name>/migrations/): the
migrations build exactly what the models describe, on SQLite and PostgreSQL (a schema per
service); `ensemble migrate` upgrades; a service refuses a database behind or ahead of its code
and says what to run; a database made by `create_all` before migrations is adopted as the
baseline it equals."""

import asyncio
import importlib
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, MetaData, inspect, text
from typer.testing import CliRunner

from ensemble.cli import app
from runtime.db import Database
from runtime.migrations import (
    COMPAT_TABLE,
    VERSION_TABLE,
    SchemaNotCurrent,
    base,
    check,
    compatible_from,
    current,
    drift,
    head,
    require_current,
    upgrade,
)
from runtime.settings import SERVICES, Settings
from runtime.uow import messaging_tables
from services.referrals.service import build as build_referrals


def models(service: str) -> MetaData:
    """The tables the service's running code has (every module of it loaded)."""
    importlib.import_module(f"services.{service}.service")
    metadata = importlib.import_module(f"services.{service}.tables").Base.metadata
    messaging_tables(metadata)  # as every service's runtime adds them
    return metadata


@pytest.fixture
def db_settings(tmp_path: Path, backend: dict[str, str]) -> Settings:
    return Settings(data_dir=tmp_path / "data", **backend)


def database(settings: Settings, service: str) -> Database:
    return Database(settings.database_url(service), models(service),
                    settings.database_schema(service))


def shape(conn: Connection) -> dict[str, Any]:
    """Everything reflection tells about a schema's tables, the version table aside: what
    autogenerate compares and what it does not (check constraints, index conditions)."""
    found = inspect(conn)
    tables: dict[str, Any] = {}
    for name in sorted(set(found.get_table_names()) - {VERSION_TABLE, COMPAT_TABLE}):
        tables[name] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default"),
                         c.get("autoincrement")) for c in found.get_columns(name)],
            "primary key": found.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted((i["name"], i["column_names"], i["unique"],
                               sorted((k, str(v)) for k, v in
                                      i.get("dialect_options", {}).items()))
                              for i in found.get_indexes(name)),
            "unique": sorted((u["name"] or "", u["column_names"])
                             for u in found.get_unique_constraints(name)),
            "foreign keys": sorted((f["constrained_columns"], f["referred_table"],
                                    f["referred_columns"]) for f in found.get_foreign_keys(name)),
            "checks": sorted((c["name"] or "", c["sqltext"])
                             for c in found.get_check_constraints(name)),
        }
    return tables


async def reflect(db: Database) -> dict[str, Any]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(shape)


@pytest.mark.parametrize("service", SERVICES)
async def test_the_migrations_build_exactly_what_the_models_describe(
        db_settings: Settings, service: str, tmp_path: Path) -> None:
    migrated = database(db_settings, service)
    # The models' own tables (`create_all`, as before migrations), beside it.
    schema = migrated.schema and f"{migrated.schema}_models"
    url = (db_settings.database_url(service) if schema
           else f"sqlite:///{tmp_path / f'{service}-models.db'}")
    made = Database(url, models(service), schema)
    try:
        done = await upgrade(migrated, service)
        assert (done.before, done.after) == (None, head(service))
        assert await current(migrated) == head(service)
        assert await drift(migrated, models(service)) == []  # autogenerate finds nothing
        await made.create_schema()
        assert await reflect(migrated) == await reflect(made)
        if schema:  # every table in the service's own schema, its version table too
            async with migrated.engine.connect() as conn:
                names = await conn.run_sync(
                    lambda c: inspect(c).get_table_names(schema=migrated.schema))
            assert {"alembic_version", "outbox", "inbox"} <= set(names)
    finally:
        if schema:
            async with made.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await migrated.dispose()
        await made.dispose()


async def test_a_database_made_before_migrations_is_adopted_as_the_baseline(
        db_settings: Settings) -> None:
    db = database(db_settings, "partners")
    try:
        await db.create_schema()  # what a service did at start before migrations
        async with db.transaction() as session:
            # ... whose models had no consumer_positions yet (0002 adds it)
            await session.execute(text("DROP TABLE consumer_positions"))
            await session.execute(text("DROP TABLE partner_links"))  # 0006
            # ... nor the in-school columns (0007 adds them, and in_school to the index)
            await session.execute(text("DROP INDEX ix_capacity_match"))
            await session.execute(text("ALTER TABLE service_capacity DROP COLUMN in_school"))
            await session.execute(text("ALTER TABLE partners DROP COLUMN in_school_of"))
            await session.execute(text(
                "CREATE INDEX ix_capacity_match ON service_capacity (district_id, need, "
                "school_id, service_status, partner_status, reserved, capacity, partner_id, "
                "languages_key, grades_key, service_id)"))
            await session.execute(text(
                "INSERT INTO family_languages (district_id, family_id, language) "
                "VALUES ('d001', 'f-1', 'es')"))
        done = await upgrade(db, "partners")
        assert done.before is None and done.after == head("partners")
        assert base("partners") == "0001_baseline"
        assert await drift(db, models("partners")) == []
        async with db.transaction() as session:
            kept = (await session.execute(text("SELECT language FROM family_languages"))).all()
        assert kept == [("es",)]
    finally:
        await db.dispose()


async def test_a_service_refuses_a_database_behind_or_ahead_of_its_code(
        db_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "ensemble.migrations")
    runtime = build_referrals(db_settings).runtime
    try:
        with pytest.raises(SchemaNotCurrent, match=r"run `ensemble migrate referrals` first"):
            await runtime.start()  # empty: nothing migrated yet
        assert await check(db_settings, "referrals") is not None
        await runtime.migrate()
        assert await check(db_settings, "referrals") is None
        async with runtime.db.transaction() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = '9999_newer'"))
        with pytest.raises(SchemaNotCurrent, match=f"ahead of this code's {head('referrals')}"):
            await runtime.start()
        assert runtime.started is False
        # One line each time, naming what to do.
        lines = [r.getMessage() for r in caplog.records if r.name == "ensemble.migrations"]
        assert len(lines) == 2
        assert "behind" in lines[0] and "ensemble migrate referrals" in lines[0]
        assert "ahead" in lines[1] and "run the newer version" in lines[1]
    finally:
        await runtime.db.dispose()


async def test_a_database_ahead_by_migrations_declared_compatible_serves_the_older_code(
        db_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """Rolling upgrades: a newer release's `ensemble migrate` records the oldest revision whose
    code its database still serves; this code starts on it, and refuses one that is not."""
    caplog.set_level(logging.WARNING, "ensemble.migrations")
    db = database(db_settings, "partners")
    try:
        await upgrade(db, "partners")
        # 0002 only adds a table: code at 0001 runs on it, and 0002 on itself.
        assert compatible_from("partners", "0002_consumer_positions") == "0001_baseline"
        assert compatible_from("partners", "0001_baseline") == "0001_baseline"
        async with db.transaction() as session:
            assert (await session.execute(text(
                f"SELECT revision, compatible_from FROM {COMPAT_TABLE}"))).all() == [
                (head("partners"), "0002_consumer_positions")]  # 0007_in_school's
        # A newer release migrated it with an additive migration: this code keeps serving.
        await newer(db, "0003_newer", compatible=head("partners"))
        assert await check(db_settings, "partners") is None
        await require_current(db, "partners")
        [line] = [r.getMessage() for r in caplog.records if r.name == "ensemble.migrations"]
        assert "ahead of this code's" in line and "declares itself compatible" in line
        # ... with one that is compatible only with code this version does not know: refused.
        await newer(db, "0004_newest", compatible="0003_newer")
        problem = await check(db_settings, "partners")
        assert problem is not None and "ahead of this code's" in problem
        with pytest.raises(SchemaNotCurrent):
            await require_current(db, "partners")
    finally:
        await db.dispose()


async def newer(db: Database, revision: str, compatible: str) -> None:
    """What a newer release's `ensemble migrate` leaves in the version tables."""
    async with db.transaction() as session:
        await session.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = :r"),
                              {"r": revision})
        await session.execute(text(f"UPDATE {COMPAT_TABLE} SET revision = :r, "
                                   "compatible_from = :c"), {"r": revision, "c": compatible})


def said(output: str) -> list[str]:
    """What a command printed, its JSON log lines aside."""
    return [line for line in output.splitlines() if not line.startswith("{")]


def test_ensemble_migrate_upgrades_each_service_and_a_service_refuses_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SERVICES:
        monkeypatch.delenv(f"{name.upper()}_DATABASE_URL", raising=False)
    monkeypatch.delenv("ENSEMBLE_DATABASE_SCHEMA_PREFIX", raising=False)
    runner = CliRunner()
    data = str(tmp_path / "data")
    refused = runner.invoke(app, ["webhooks", "--data-dir", data])
    assert refused.exit_code == 1, refused.output
    assert "run `ensemble migrate webhooks` first" in refused.output
    one = runner.invoke(app, ["migrate", "referrals", "--data-dir", data])
    assert one.exit_code == 0, one.output
    assert said(one.output) == [f"referrals: at {head('referrals')} (was empty)"]
    every = runner.invoke(app, ["migrate", "--data-dir", data])
    assert every.exit_code == 0, every.output
    assert said(every.output) == [
        f"referrals: at {head('referrals')} (already there)",
        *(f"{name}: at {head(name)} (was empty)" for name in SERVICES[1:])]
    unknown = runner.invoke(app, ["migrate", "referals", "--data-dir", data])
    assert unknown.exit_code == 2 and "no service 'referals'" in unknown.output


async def test_copies_migrating_together_take_turns(db_settings: Settings) -> None:
    """Two pods' `ensemble migrate` (Kubernetes runs it in each pod) at once on one database."""
    dbs = [database(db_settings, "engagement") for _ in range(4)]
    try:
        results = await asyncio.gather(*(upgrade(db, "engagement") for db in dbs),
                                       return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert sorted(r.before or "" for r in results) == ["", *[head("engagement")] * 3]
        assert await drift(dbs[0], models("engagement")) == []
    finally:
        for db in dbs:
            await db.dispose()

