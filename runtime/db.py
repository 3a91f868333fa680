"""One SQLAlchemy code path for SQLite (default) and PostgreSQL (production)."""

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator

from runtime.tracing import instrument_engine

LOCK_WAIT_MS = 30_000  # how long a statement waits for another process's write lock


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def advisory_locks(session: AsyncSession, keys: list[str]) -> None:
    """PostgreSQL: take a transaction-level advisory lock per key, in sorted order (two
    transactions asking for overlapping keys never deadlock on them); held to the commit.
    SQLite runs one writer at a time, so nothing is needed there."""
    if keys and session.bind.dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(k)) "
                 "FROM (SELECT unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS sorted"),
            {"keys": keys})


def utcnow() -> datetime:
    return datetime.now(UTC)


# What every service takes instead of reading the wall clock itself (tests move hours in
# milliseconds); utcnow is the one a deployment runs on.
Clock = Callable[[], datetime]


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// and sqlite:// URLs and pick the async drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


class Database:
    """A service's own database: engine, sessions and schema."""

    def __init__(self, url: str, metadata: MetaData, schema: str | None = None) -> None:
        self.url = normalize_url(url)
        self.metadata = metadata
        self.schema = schema
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = self._make_engine()
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def _make_engine(self) -> AsyncEngine:
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                # One connection per process: SQLite has one writer; queueing in-process beats
                # "database is locked" between our own tasks. busy_timeout covers other
                # processes. (In memory, for handler tests, SQLAlchemy keeps one connection.)
                kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
            if self.schema:
                kwargs["connect_args"] = {"server_settings": {"search_path": self.schema}}
        if self.is_sqlite:
            kwargs["async_creator"] = _inline_sqlite_creator(make_url(self.url).database)
        engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _sqlite_pragmas(engine)
        instrument_engine(engine.sync_engine)  # database spans, when tracing is on
        return engine

    async def create_schema(self) -> None:
        """The tables straight from the models (``create_all``), for tests of a handler or a
        table on its own. Services never do this: `ensemble migrate` makes and upgrades their
        schemas (runtime/migrations.py) and a service refuses a database not at its head."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Two copies starting together would both create tables; one waits instead.
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                                   {"key": f"ensemble-schema:{self.schema or ''}"})
            if self.schema and not self.is_sqlite:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            await conn.run_sync(self.metadata.create_all)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


class InlineSqlite(aiosqlite.Connection):
    """aiosqlite with its statements run on the event loop instead of its thread.

    A statement on a local SQLite file takes microseconds; handing each one to a thread and
    back cost more than the work (about four GIL hand-offs per statement, each up to the 5 ms
    switch interval under load). Only waiting for another process's write lock would block the
    loop, so a statement that finds the database busy is retried on aiosqlite's thread with a
    long busy timeout."""

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        return await super()._execute(_wait_for_lock, self._connection, fn, args, kwargs)


def _wait_for_lock(conn: sqlite3.Connection, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    conn.execute(f"PRAGMA busy_timeout={LOCK_WAIT_MS}")
    try:
        return fn(*args, **kwargs)
    finally:
        conn.execute("PRAGMA busy_timeout=0")


def _inline_sqlite_creator(database: str | None) -> Callable[[], Awaitable[InlineSqlite]]:
    async def connect() -> InlineSqlite:
        def connector() -> sqlite3.Connection:
            conn = sqlite3.connect(database or ":memory:", check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={LOCK_WAIT_MS}")  # the pragmas below may wait
            return conn

        connection = InlineSqlite(connector, iter_chunk_size=64)
        # As SQLAlchemy does for aiosqlite: an engine left undisposed must not keep the process
        # from exiting.
        connection._thread.daemon = True
        return await connection

    return connect


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=0")  # from now on a lock is waited for off the loop
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front so two processes never deadlock upgrading a read lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def key_in(columns: Sequence[Any], keys: Iterable[tuple[Any, ...]]) -> list[Any]:
    """``WHERE`` clauses for rows whose ``columns`` hold one of ``keys``: one ``IN`` per column,
    never a row value ``(a, b) IN (VALUES ...)``, which SQLite answers by reading the whole
    table (the columns' own index serves this). It may match a pair not asked for (a from one
    key, b from another): keep the rows whose key is in ``keys``."""
    keys = list(keys)
    return [column.in_(sorted({k[i] for k in keys})) for i, column in enumerate(columns)]
