"""A job that runs once a day across every copy of a service (retention): each copy checks on a
``Periodic`` now and then, and the copy whose transaction moves the job's row in ``job_runs``
from due to tomorrow runs it, in that same transaction. Another copy checking at the same time
waits for that row (PostgreSQL's row lock, SQLite's one writer) and then finds it not due, so
the job runs once; a run that fails rolls its claim back with it and is retried."""

import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Column, MetaData, String, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from runtime.db import Clock, UTCDateTime
from runtime.metrics import RETENTION_REMOVED
from runtime.periodic import Periodic
from runtime.uow import UnitOfWork

if TYPE_CHECKING:
    from runtime.service import ServiceRuntime

log = logging.getLogger("ensemble.daily")

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Work = Callable[[UnitOfWork, datetime], Awaitable[dict[str, int]]]


def job_runs_table(metadata: MetaData) -> Table:
    """The ``job_runs`` table of a service with a daily job: one row per job, when it is due
    next, and which copy ran it last (created by the service's 0003_erasure migration)."""
    if "job_runs" in metadata.tables:
        return metadata.tables["job_runs"]
    return Table(
        "job_runs", metadata,
        Column("name", String(64), primary_key=True),
        Column("next_run_at", UTCDateTime, nullable=False),
        Column("last_run_at", UTCDateTime, nullable=True),
        Column("last_holder", String(128), nullable=True),
    )


async def claim(uow: UnitOfWork, table: Table, name: str, now: datetime,
                period: timedelta, holder: str) -> bool:
    """True when this transaction took the job's run due at ``now`` (the row, once made, is
    moved to ``now + period``); False when it is not due or another copy has it."""
    session = uow.session
    make = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(make(table).values(name=name, next_run_at=EPOCH)
                          .on_conflict_do_nothing(index_elements=["name"]))
    result = await session.execute(
        update(table).where(table.c.name == name, table.c.next_run_at <= now)
        .values(next_run_at=now + period, last_run_at=now, last_holder=holder))
    return bool(getattr(result, "rowcount", 0) == 1)


async def next_run(uow: UnitOfWork, table: Table, name: str) -> datetime | None:
    return await uow.session.scalar(select(table.c.next_run_at).where(table.c.name == name))


@dataclass
class DailyJob:
    """``work(uow, now)`` once per ``period`` across copies; it answers counts per kind, which
    are logged (never ids or personal data)."""

    name: str
    unit_of_work: Callable[[], AbstractAsyncContextManager[UnitOfWork]]
    table: Table
    work: Work
    clock: Clock
    period: timedelta = timedelta(days=1)
    check_seconds: float = 600
    holder: str = field(default_factory=socket.gethostname)
    service: str = ""  # the metric's label
    runs: int = 0  # rounds in which this copy ran the job (tests)
    worker: Periodic = field(init=False)

    def __post_init__(self) -> None:
        self.worker = Periodic(self.name, self.round, self.check_seconds,
                               backoff_max=max(self.check_seconds, 5.0))

    async def round(self) -> bool:
        now = self.clock()
        async with self.unit_of_work() as uow:
            if not await claim(uow, self.table, self.name, now, self.period, self.holder):
                return False
            counts = await self.work(uow, now)
        self.runs += 1
        for kind, n in counts.items():
            RETENTION_REMOVED.labels(self.service or self.name, kind).inc(n)
        log.info("%s ran: %s", self.name,
                 ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "nothing due")
        return False

    async def run(self) -> None:
        await self.worker.run()


def retention_job(rt: "ServiceRuntime", table: Table, work: Work, clock: Clock) -> DailyJob:
    """A service's daily retention job, run in the background for the service's lifetime."""
    job = DailyJob(f"{rt.name} retention", rt.unit_of_work, table, work, clock,
                   check_seconds=rt.settings.retention_check_seconds, service=rt.name)
    rt.run_in_background(job.run)
    return job
