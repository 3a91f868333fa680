"""The outbox relay: what a unit of work (runtime/uow.py) committed reaches JetStream.

A state change and the events it emits commit in one transaction; the relay publishes them to
JetStream with the event id as ``Nats-Msg-Id`` and marks them sent only after the PubAck.
Sent rows are kept for a while so a stream that lost them can be fed again.
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.envelope import CONTENT_TYPE
from runtime.db import UTCDateTime, utcnow
from runtime.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST, PUBLISHED
from runtime.periodic import Periodic
from runtime.ports import RelayHost
from runtime.tracing import producing
from runtime.uow import (  # re-exported: where services have always imported them from
    Handler,
    MessagingTables,
    Pending,
    UnitOfWork,
    messaging_tables,
)

__all__ = ["Handler", "MessagingTables", "OutboxRelay", "Pending", "UnitOfWork",
           "messaging_tables"]

log = logging.getLogger("ensemble.outbox")

# Sent rows are kept this long: a stream that lost them can be fed again, and a restored
# database's outbox says what the service had published (runtime/restore.py).
KEEP_SENT = timedelta(days=7)


class OutboxRelay:
    """Publishes committed events with async publish, and marks them sent with one UPDATE.

    Events this process commits are handed to the relay right after the commit and published
    from memory, so an event reaches the bus without waiting for a read of the table (on SQLite
    that read queues behind every request for the one connection). The table is read in seq
    order when the relay starts, after any failure, and for rows left stale (another copy died
    holding them, or a commit whose outcome was unknown): nothing committed is left behind.
    A row published twice at those turns is dropped by JetStream's ``Nats-Msg-Id`` dedupe.

    Rows are marked sent by a worker of their own (``marks``): marking waits for a database
    connection (SQLite has one per process, queued behind every request), and events committed
    meanwhile are published without waiting for it.
    """

    # A row still unsent this long after its commit was not handed over by its own process;
    # the table is looked at for such rows every SWEEP_SECONDS.
    STALE_AFTER = timedelta(seconds=10)
    SWEEP_SECONDS = 5.0

    def __init__(self, runtime: RelayHost, batch: int = 500) -> None:
        self.runtime = runtime
        self.batch = batch
        self.worker = Periodic("outbox relay", self._round, runtime.settings.outbox_poll_seconds)
        self.marks = Periodic("outbox marks", self.mark_published,
                              runtime.settings.outbox_poll_seconds)
        self._last_sweep = self._last_gauges = self._last_prune = 0.0
        self._committed: list[Pending] = []
        self._published: list[Pending] = []  # acknowledged by JetStream, not marked sent yet
        self._from_table = True  # at start: rows an earlier run left unsent, in order
        self.keep_sent = KEEP_SENT
        self.keep_inbox = timedelta(days=30)

    def committed(self, rows: list[Pending]) -> None:
        """Called by the unit of work once its transaction has committed."""
        self._committed.extend(rows)
        self.worker.wake()

    async def run(self) -> None:
        await asyncio.gather(self.worker.run(), self.marks.run())

    def stop(self) -> None:
        self.worker.stop()
        self.marks.stop()

    async def _round(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self.publish_pending(mark=False)
            if loop.time() - self._last_sweep > self.SWEEP_SECONDS:
                self._last_sweep = loop.time()
                await self._publish_table(older_than=self.STALE_AFTER)
            if loop.time() - self._last_gauges > 5:
                self._last_gauges = loop.time()
                await self.update_gauges()
            if loop.time() - self._last_prune > 3600:
                self._last_prune = loop.time()
                await self.prune()
        except Exception:  # NATS or the database is away: the rows stay, read again in order
            self._from_table = True
            raise

    async def publish_pending(self, *, mark: bool = True) -> int:
        """Publish what was committed; with ``mark``, also mark it sent before returning
        (else the ``marks`` worker does)."""
        total = 0
        if self._from_table:
            # Whatever was handed over is in the table too, read below in order.
            self._committed.clear()
            total += await self._publish_table()
            self._from_table = False
        while self._committed:
            rows, self._committed = self._committed[:self.batch], self._committed[self.batch:]
            try:
                await self._publish(rows)
            except BaseException:
                self._from_table = True  # the rows are still unsent in the table
                raise
            self._published += rows
            self._count(rows)
            total += len(rows)
        if mark:
            await self.mark_published()
        elif self._published:
            self.marks.wake()
        return total

    async def mark_published(self) -> None:
        """Mark sent, in one UPDATE, the rows JetStream has acknowledged. If that fails they
        are marked at the next round; a restart before then publishes them again (dropped as
        duplicates)."""
        rows, self._published = self._published, []
        if not rows:
            return
        try:
            await self._mark_in_transaction(rows)
        except BaseException:
            self._published[:0] = rows
            raise

    async def _mark_in_transaction(self, rows: Sequence[Pending]) -> None:
        async with self.runtime.db.transaction() as session:
            await self._mark_sent(session, rows)

    async def _publish_table(self, older_than: timedelta | None = None) -> int:
        total = 0
        while True:
            if self.runtime.db.is_sqlite:
                # SQLite has one connection per process: do not hold it while NATS answers.
                async with self.runtime.db.transaction() as session:
                    rows = await self._pending(session, lock=False, older_than=older_than)
                await self._publish(rows)
                async with self.runtime.db.transaction() as session:
                    await self._mark_sent(session, rows)
            else:
                async with self.runtime.db.transaction() as session:
                    # Rows stay locked while published: two copies relay different rows.
                    rows = await self._pending(session, lock=True, older_than=older_than)
                    await self._publish(rows)
                    await self._mark_sent(session, rows)
            self._count(rows)
            total += len(rows)
            if len(rows) < self.batch:
                return total

    def _count(self, rows: Sequence[Pending | Row[Any]]) -> None:
        for row in rows:
            PUBLISHED.labels(self.runtime.name, row.event_type).inc()

    async def _pending(self, session: AsyncSession, *, lock: bool,
                       older_than: timedelta | None = None) -> list[Row[Any]]:
        outbox = self.runtime.tables.outbox
        query = (
            select(outbox.c.event_id, outbox.c.event_type, outbox.c.subject, outbox.c.payload)
            .where(outbox.c.sent_at.is_(None))
            .order_by(outbox.c.seq)
            .limit(self.batch)
        )
        if older_than is not None:
            query = query.where(outbox.c.created_at < utcnow() - older_than)
        if lock:
            query = query.with_for_update(skip_locked=True)
        return list((await session.execute(query)).all())

    async def _publish(self, rows: Sequence[Pending | Row[Any]]) -> None:
        if not rows:
            return
        js = self.runtime.jetstream
        futures = []
        for row in rows:
            headers = {"Nats-Msg-Id": row.event_id, "Content-Type": CONTENT_TYPE}
            # In the event's trace (its stored traceparent), carried on in the NATS headers.
            with producing(row.subject, row.event_id, row.event_type, row.payload, headers):
                futures.append(await js.publish_async(row.subject, row.payload, headers=headers))
        # Raises if any publish was not acknowledged, or no ack came in time (a node died
        # holding it): nothing is marked, all retried; Nats-Msg-Id dedupes.
        await asyncio.wait_for(asyncio.gather(*futures), timeout=10)

    async def _mark_sent(self, session: AsyncSession, rows: Sequence[Pending | Row[Any]]) -> None:
        if rows:
            outbox = self.runtime.tables.outbox
            await session.execute(
                update(outbox).where(outbox.c.event_id.in_([row.event_id for row in rows]))
                .values(sent_at=utcnow())
            )

    async def update_gauges(self) -> None:
        rt = self.runtime
        outbox = rt.tables.outbox
        async with rt.db.transaction() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.sent_at.is_(None)
                    )
                )
            ).one()
        OUTBOX_BACKLOG.labels(rt.name).set(count)
        if oldest is not None:
            oldest = UTCDateTime().process_result_value(oldest, rt.db.engine.dialect)
        OUTBOX_OLDEST.labels(rt.name).set((utcnow() - oldest).total_seconds() if oldest else 0)

    async def prune(self) -> None:
        rt = self.runtime
        now = utcnow()
        async with rt.db.transaction() as session:
            await session.execute(
                delete(rt.tables.outbox).where(rt.tables.outbox.c.sent_at < now - self.keep_sent)
            )
            await session.execute(
                delete(rt.tables.inbox).where(rt.tables.inbox.c.applied_at < now - self.keep_inbox)
            )


