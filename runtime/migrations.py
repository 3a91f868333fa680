"""Each service's schema under Alembic: its migrations in ``services/<name>/migrations/``
(``env.py`` calls :func:`run_env`; revisions in ``versions/``), its own version table
(``alembic_version``) in its own database or PostgreSQL schema.

`ensemble migrate` calls :func:`upgrade`; a service calls :func:`require_current` at start and
refuses a database whose revision is behind or ahead of its code, unless every migration it
does not know declared itself compatible with it.

Rolling upgrades (expand, then contract; docs/operations.md): a migration module may say
``compatible_from = "<revision>"``, the oldest revision whose code keeps working on a database
at this one (it only adds what that code ignores). The code that runs a database's migrations
knows them; the older code of a rolling upgrade does not, so :func:`upgrade` writes the oldest
revision whose code may run on the database into ``alembic_version_compat`` beside the version
table, and the start check of any later version reads it."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, MetaData, String, Table, delete, inspect, select, text

from runtime.db import Database
from runtime.settings import Settings
from runtime.uow import messaging_tables

log = logging.getLogger("ensemble.migrations")

VERSION_TABLE = "alembic_version"
COMPAT_TABLE = "alembic_version_compat"
# Alembic's own INFO lines ("Context impl ...", "Will assume ...") say nothing to an operator;
# upgrade() logs what changed.
logging.getLogger("alembic").setLevel(logging.WARNING)


class SchemaNotCurrent(RuntimeError):
    """The database's revision is not the code's: `ensemble migrate` (behind) or newer code
    (ahead) is needed before the service may start."""


def script_location(service: str) -> str:
    """Where a service's migrations live: ``services/<name>/migrations`` (package data)."""
    return f"services.{service}:migrations"


def config(service: str, schema: str | None = None, connection: Connection | None = None
           ) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", script_location(service))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["schema"] = schema
    cfg.attributes["connection"] = connection
    return cfg


def head(service: str) -> str:
    """The revision the code expects."""
    found = ScriptDirectory.from_config(config(service)).get_current_head()
    assert found is not None, f"{service} has no migrations"
    return found


def base(service: str) -> str:
    """The baseline: the schema as it was when migrations began (``create_all`` before them)."""
    found = ScriptDirectory.from_config(config(service)).get_base()
    assert found is not None, f"{service} has no migrations"
    return found


def run_env(metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``: run the migrations on the connection
    :func:`upgrade` handed over, with the version table in the service's own schema."""
    from alembic import context

    messaging_tables(metadata)  # the outbox and inbox every service's database has
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `ensemble migrate`, not the alembic command")
    context.configure(connection=connection, target_metadata=metadata,
                      version_table=VERSION_TABLE,
                      version_table_schema=context.config.attributes.get("schema"),
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _context(conn: Connection, schema: str | None, metadata: MetaData | None = None
             ) -> MigrationContext:
    opts: dict[str, Any] = {"version_table": VERSION_TABLE, "version_table_schema": schema,
                            "compare_type": True, "include_name": _not_the_version_table}
    if metadata is not None:
        opts["target_metadata"] = metadata
    return MigrationContext.configure(conn, opts=opts)


def _not_the_version_table(name: str | None, type_: str, _parent: Any) -> bool:
    # On PostgreSQL the version table is in the service's schema, which autogenerate reflects
    # as the default one (search_path), where it would not recognise it as Alembic's own.
    return not (type_ == "table" and name in (VERSION_TABLE, COMPAT_TABLE))


def _current(conn: Connection, schema: str | None) -> str | None:
    return _context(conn, schema).get_current_revision()


async def current(db: Database) -> str | None:
    """The database's revision (None: never migrated)."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current, db.schema)


def compatible_from(service: str, revision: str) -> str:
    """The oldest revision whose code may run on a database at ``revision``: walking down from
    it while every migration above the candidate declares ``compatible_from`` at or below it."""
    script = ScriptDirectory.from_config(config(service))
    chain = [r.revision for r in script.walk_revisions("base", revision)][::-1]
    order = {rev: i for i, rev in enumerate(chain)}
    declared = {rev: getattr(script.get_revision(rev).module, "compatible_from", None)
                for rev in chain}
    oldest = revision
    for candidate in reversed(chain[:-1]):
        above = chain[order[candidate] + 1:]
        if not all(declared[rev] in order and order[declared[rev]] <= order[candidate]
                   for rev in above):
            break
        oldest = candidate
    return oldest


def _compat_table(schema: str | None) -> Table:
    return Table(COMPAT_TABLE, MetaData(), Column("revision", String(64), primary_key=True),
                 Column("compatible_from", String(64), nullable=False), schema=schema)


def _write_compat(conn: Connection, schema: str | None, service: str, revision: str) -> None:
    table = _compat_table(schema)
    table.create(conn, checkfirst=True)
    conn.execute(delete(table))
    conn.execute(table.insert().values(revision=revision,
                                       compatible_from=compatible_from(service, revision)))


def _read_compat(conn: Connection, schema: str | None, revision: str | None) -> str | None:
    if revision is None or not inspect(conn).has_table(COMPAT_TABLE, schema=schema):
        return None
    table = _compat_table(schema)
    return conn.execute(select(table.c.compatible_from)
                        .where(table.c.revision == revision)).scalar()


@dataclass(frozen=True)
class Found:
    """A database's revision and the oldest revision whose code it declares it serves."""

    revision: str | None
    compatible_from: str | None = None


def _found(conn: Connection, schema: str | None) -> Found:
    revision = _current(conn, schema)
    return Found(revision, _read_compat(conn, schema, revision))


async def found(db: Database) -> Found:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_found, db.schema)


@dataclass(frozen=True)
class Upgraded:
    service: str
    before: str | None
    after: str


async def upgrade(db: Database, service: str, revision: str = "head") -> Upgraded:
    """Bring a service's database to ``revision`` (default the code's head), in one
    transaction; two copies migrating at once take turns (PostgreSQL advisory lock, SQLite's
    write lock). A database made by ``create_all`` before migrations existed is adopted as the
    baseline it equals."""
    async with db.engine.begin() as conn:
        if not db.is_sqlite:
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                               {"key": f"ensemble-migrate:{db.schema or service}"})
            if db.schema:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
        return await conn.run_sync(_upgrade, db.schema, service, revision)


def _upgrade(conn: Connection, schema: str | None, service: str, revision: str) -> Upgraded:
    cfg = config(service, schema, conn)
    before = _current(conn, schema)
    if before is None and inspect(conn).has_table("outbox"):
        log.info("%s: tables without a revision (made before migrations): adopted as the "
                 "baseline %s", service, base(service))
        command.stamp(cfg, base(service))
    command.upgrade(cfg, revision)
    after = _current(conn, schema)
    assert after is not None
    _write_compat(conn, schema, service, after)
    if after != before:
        log.info("%s: database upgraded from %s to %s", service, before or "empty", after)
    return Upgraded(service, before, after)


async def downgrade(db: Database, service: str, revision: str) -> None:
    """Take a service's database back to ``revision`` (tests: the schema an earlier release
    left; deployments restore a backup instead)."""
    def down(conn: Connection) -> None:
        command.downgrade(config(service, db.schema, conn), revision)
        _write_compat(conn, db.schema, service, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(down)


async def migrate(settings: Settings, services: Iterable[str]) -> list[Upgraded]:
    """`ensemble migrate`: each service's database (``settings.database_url``, in its
    ``settings.database_schema``) upgraded to the code's head, one after the other."""
    done = []
    for service in services:
        db = Database(settings.database_url(service), MetaData(),
                      settings.database_schema(service))
        try:
            done.append(await upgrade(db, service))
        finally:
            await db.dispose()
    return done


def mismatch(service: str, found: str | None, compatible: str | None = None) -> str | None:
    """Why a database at revision ``found`` cannot serve this code, or None when it can: at
    the code's head, or ahead of it by migrations that declared themselves compatible with it
    (``compatible``, the oldest revision whose code the database serves, is one this code
    knows)."""
    expected = head(service)
    if found == expected:
        return None
    known = {s.revision for s in ScriptDirectory.from_config(config(service)).walk_revisions()}
    if found not in known and compatible in known:
        return None
    if found is None or found in known:
        return (f"{service}: database schema is at revision {found or 'none (empty)'}, behind "
                f"this code's {expected}: run `ensemble migrate {service}` first")
    return (f"{service}: database schema is at revision {found}, ahead of this code's "
            f"{expected} (a newer version migrated it): run the newer version, or restore the "
            "database from before its migration")


async def require_current(db: Database, service: str) -> None:
    """Refuse (one log line, then :class:`SchemaNotCurrent`) a database whose revision is not
    the code's."""
    at = await found(db)
    problem = mismatch(service, at.revision, at.compatible_from)
    if problem:
        log.error("%s", problem)
        raise SchemaNotCurrent(problem)
    if at.revision != head(service):
        log.warning("%s: database schema is at revision %s, ahead of this code's %s, and "
                    "declares itself compatible with code from %s on: starting (a rolling "
                    "upgrade; replace this copy with the newer version)", service,
                    at.revision, head(service), at.compatible_from)


async def check(settings: Settings, service: str) -> str | None:
    """Why ``service``'s database (per ``settings``) cannot serve this code, or None."""
    db = Database(settings.database_url(service), MetaData(), settings.database_schema(service))
    try:
        at = await found(db)
        return mismatch(service, at.revision, at.compatible_from)
    finally:
        await db.dispose()


async def drift(db: Database, metadata: MetaData) -> list[Any]:
    """What Alembic's autogenerate finds between ``metadata`` (the models) and the database:
    empty when the migrations built exactly what the models describe."""
    messaging_tables(metadata)

    def compare(conn: Connection) -> list[Any]:
        return list(compare_metadata(_context(conn, db.schema, metadata), metadata))

    async with db.engine.connect() as conn:
        return await conn.run_sync(compare)
