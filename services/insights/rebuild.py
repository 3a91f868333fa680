"""`ensemble insights rebuild`: drop the store and replay the public streams into it.

The store is a function of the public events alone (handlers.py), so this gives the same
numbers as the store it replaces. Its durables are deleted and made again from the start of
each stream; the digests' claims are kept (a rebuilt store sends no digest twice). Stop the
service's copies first: a running copy would pull from the durables being replaced.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError
from sqlalchemy import delete, func, select

from runtime.districts import Districts
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from runtime.streams import ensure_streams
from services.insights import handlers
from services.insights.service import runtime
from services.insights.tables import FACTS

log = logging.getLogger("ensemble.insights")


@dataclass(frozen=True)
class Rebuilt:
    rows: dict[str, int]  # table -> rows after the replay
    seconds: float


async def drop_store(rt: ServiceRuntime) -> None:
    async with rt.db.transaction() as session:
        for table in FACTS:
            await session.execute(delete(table))
        await session.execute(delete(rt.tables.inbox))


async def caught_up(rt: ServiceRuntime) -> bool:
    """Every durable has had and acked all its stream's events (a server too busy to answer
    in time counts as not yet)."""
    try:
        for consumer in rt.consumers:
            info = await rt.jetstream.consumer_info(consumer.stream, consumer.durable,
                                                    timeout=30)
            if info.num_pending or info.num_ack_pending:
                return False
    except (TimeoutError, NatsTimeoutError):
        return False
    return True


async def row_counts(rt: ServiceRuntime) -> dict[str, int]:
    async with rt.db.transaction() as session:
        return {t.__tablename__: int(await session.scalar(select(func.count()).select_from(t))
                                     or 0) for t in FACTS}


async def rebuild(settings: Settings, districts: Districts | None = None, *,
                  patience: float = 3 * 3600, poll: float = 0.5) -> Rebuilt:
    started = time.perf_counter()
    rt = runtime(settings, districts)
    rt.consume(handlers.HANDLERS, None)  # the handlers need nothing from deps
    await rt.connect()
    try:
        await ensure_streams(rt.jetstream, settings.stream_replicas)  # looks them up
        for consumer in rt.consumers:
            with contextlib.suppress(NotFoundError):
                await rt.jetstream.delete_consumer(consumer.stream, consumer.durable)
        await drop_store(rt)
        for consumer in rt.consumers:  # made again from the start of each stream; a large
            # stream on a busy server can take longer than a request's usual 5 s
            await rt.jetstream.add_consumer(consumer.stream, config=consumer.consumer_config(),
                                            timeout=120)
        log.info("insights: store dropped; replaying %d streams' events", len(rt.consumers))
    finally:
        await rt.disconnect()
    await rt.start()
    try:
        deadline = time.monotonic() + patience
        while not await caught_up(rt):
            if time.monotonic() > deadline:
                raise TimeoutError("the replay did not catch up in time")
            await asyncio.sleep(poll)
        rows = await row_counts(rt)
    finally:
        await rt.stop()
    return Rebuilt(rows, time.perf_counter() - started)
