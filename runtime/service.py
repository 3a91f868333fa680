"""A service's runtime: its database, broker connection, consumers and outbox relay.

FastStream's ``NatsBroker`` opens and closes the NATS connection through its public API
(``connect()`` gives back the nats-py ``Client``; ``stop()`` drains it), with its reconnect
logging and its refusal to retry credentials the server rejected. Everything done on the
connection (JetStream streams, pull consumers, publishing) is nats-py's public API on that
client; no FastStream internals (docs/architecture.md, "FastStream")."""

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.security import NatsUserPassword
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError
from sqlalchemy import Insert, MetaData, Table, insert

from contracts.envelope import Envelope
from contracts.events import Event
from runtime.consumer import EventConsumer
from runtime.db import Database
from runtime.districts import Districts, load_districts
from runtime.errors import describe_error
from runtime.metrics import CONSUMER_PENDING, RESTORE_UNEXPLAINED
from runtime.migrations import require_current, upgrade
from runtime.outbox import OutboxRelay
from runtime.restore import published_by, report
from runtime.settings import Settings
from runtime.streams import ensure_streams, streams_exist
from runtime.uow import Handler, Prefetch, UnitOfWork, messaging_tables

log = logging.getLogger("ensemble.service")


@dataclass(eq=False)
class RequestRow:
    """A row for ``table``, written by a Core insert: no ORM flush on a request path that has
    none otherwise (POST /referrals writes with Core)."""

    table: Table
    values: dict[str, Any]
    written: bool = False  # set once the transaction that wrote it has committed


# Rows a request asks to have written with its own first committed transaction (referrals'
# audit trail): one commit per request instead of a second one after it.
_request_rows: ContextVar[list[RequestRow] | None] = ContextVar("request_rows", default=None)


def write_with_request(table: Table, values: dict[str, Any]) -> RequestRow:
    """Have a row of ``table`` written by the current request's next unit of work that
    commits."""
    rows = _request_rows.get()
    if rows is None:
        rows = []
        _request_rows.set(rows)
    row = RequestRow(table, values)
    rows.append(row)
    return row


@functools.cache
def _insert(table: Table) -> Insert:
    return insert(table)  # built once per table: a request only binds its values


def _with(handler: Callable[..., Awaitable[None]], deps: object) -> Handler:
    async def handle(uow: UnitOfWork, env: Envelope, event: Event) -> None:
        await handler(uow, env, event, deps)

    handle.__name__ = handler.__name__
    return handle


def _prefetch_with(load: Callable[..., Awaitable[None]] | None, deps: object) -> Prefetch | None:
    if load is None:
        return None

    async def prefetch(uow: UnitOfWork, batch: list[tuple[Envelope, Event]]) -> None:
        await load(uow, batch, deps)

    return prefetch


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        settings: Settings,
        metadata: MetaData,
        districts: Districts | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.source = f"/ensemble/{name}"
        self.districts = districts or load_districts(settings.districts_file)
        self.tables = messaging_tables(metadata)
        self.db = Database(settings.database_url(name), metadata, settings.database_schema(name))
        self.broker = NatsBroker(
            servers=settings.nats_url.split(","),
            security=(
                NatsUserPassword(settings.nats_user, settings.nats_password or "")
                if settings.nats_user
                else None
            ),
            name=f"ensemble-{name}",
            # FastStream's two lines per message go to DEBUG; our consumer logs what matters.
            logger=logging.getLogger(f"ensemble.faststream.{name}"),
            log_level=logging.DEBUG,
            max_reconnect_attempts=-1,
            graceful_timeout=20.0,
        )
        self._nc: Client | None = None  # what broker.connect() gave, while started
        self._js: JetStreamContext | None = None
        self.consumers: list[EventConsumer] = []
        self.relay = OutboxRelay(self)
        self.background: list[Callable[[], Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    @property
    def jetstream(self) -> JetStreamContext:
        assert self._js is not None, "broker not connected"
        return self._js

    @property
    def nats(self) -> Client:
        assert self._nc is not None, "broker not connected"
        return self._nc

    def consume(self, handlers: Mapping[type[Event], Callable[..., Awaitable[None]]],
                deps: object,
                prefetch: Mapping[type[Event], Callable[..., Awaitable[None]]] | None = None,
                ) -> None:
        """Register a service's handlers from its one explicit map (``handlers.HANDLERS``):
        each is a module-level ``async def on_x(uow, env, event, deps)``; ``deps`` is injected
        once here, so a test calls the same function with its own. ``prefetch`` (its
        ``handlers.PREFETCH``) names, per event type, an ``async def load_x(uow, batch, deps)``
        run once per batch before the handlers (runtime.uow.Prefetch)."""
        loads = prefetch or {}
        for event_cls, handler in handlers.items():
            self.consumers.append(EventConsumer(
                self, event_cls, _with(handler, deps),
                _prefetch_with(loads.get(event_cls), deps)))

    def run_in_background(self, factory: Callable[[], Any]) -> None:
        """A coroutine factory run for the service's lifetime (timers, dispatchers)."""
        self.background.append(factory)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        rows = _request_rows.get()
        waiting = list(rows or ())
        async with self.db.transaction() as session:
            for row in waiting:
                await session.execute(_insert(row.table), [row.values])
            uow = UnitOfWork(session, self.source)
            yield uow
            await uow.flush(self.tables.outbox)
        if rows and waiting:  # committed: they are written (a rollback leaves them waiting)
            del rows[:len(waiting)]
            for row in waiting:
                row.written = True
        if uow.written:
            self.relay.committed(uow.written)
        for callback in uow.after_commit:
            callback()

    async def migrate(self) -> None:
        """Upgrade this service's database to the code's head (`ensemble migrate` does it for
        a deployment; tests call this before ``start``)."""
        await upgrade(self.db, self.name)

    async def connect(self) -> None:
        """The broker connection alone (``jetstream`` and ``nats`` usable), without consumers,
        relay or background work: for tools that manage durables before a start (insights'
        rebuild). ``start`` connects too; ``disconnect`` undoes this one."""
        self._nc = await self.broker.connect()
        self._js = self._nc.jetstream()

    async def disconnect(self) -> None:
        await self.broker.stop()
        self._nc = self._js = None

    async def start(self) -> None:
        # The schema is `ensemble migrate`'s to change: a database behind or ahead of this
        # code is refused, with the command to run (runtime/migrations.py).
        await require_current(self.db, self.name)
        await self.connect()
        await self._ensure_streams()
        await self.broker.start()
        for consumer in self.consumers:
            await consumer.start()
        self._tasks = [asyncio.create_task(self.relay.run(), name=f"{self.name}-relay")]
        self._tasks.append(asyncio.create_task(self._watch_lag(), name=f"{self.name}-lag"))
        if published_by(self.name):
            self._tasks.append(asyncio.create_task(self._restore_check(),
                                                   name=f"{self.name}-restore-check"))
        self._tasks += [
            asyncio.create_task(factory(), name=f"{self.name}-bg") for factory in self.background
        ]
        self.started = True
        log.info("%s started with %d consumers", self.name, len(self.consumers))

    async def _ensure_streams(self, patience: float = 60) -> None:
        """A cluster still electing its JetStream leader answers with time-outs: wait for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        delay = 0.2
        while True:
            try:
                await ensure_streams(self.jetstream, self.settings.stream_replicas)
                return
            except (NatsTimeoutError, TimeoutError, ServiceUnavailableError,
                    NoRespondersError) as exc:
                if loop.time() > deadline:
                    raise
                log.warning("%s: JetStream not ready (%s); retrying", self.name,
                            type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def stop(self) -> None:
        """Stop taking messages, let handlers in hand finish, flush the outbox, close."""
        self.started = False
        # Each stops fetching and finishes its batch in hand, all at once: one stuck batch
        # costs its grace once, not once per consumer after it.
        await asyncio.gather(*(consumer.stop() for consumer in self.consumers))
        self.relay.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self.relay.publish_pending(), timeout=10)
        except Exception as exc:
            log.warning("%s: outbox not flushed at stop (%s); it is sent at next start",
                        self.name, type(exc).__name__)
        await self.broker.stop()  # drains the connection
        self._nc = self._js = None
        await self.db.dispose()
        log.info("%s stopped: consumers drained, outbox flushed", self.name)

    async def readiness(self) -> dict[str, bool]:
        checks = {"database": False, "nats": False, "streams": False, "consumers": False}
        try:
            await self.db.ping()
            checks["database"] = True
        except Exception:
            pass
        checks["nats"] = bool(self.started and self._nc is not None and self._nc.is_connected)
        if checks["nats"]:
            checks["streams"] = await streams_exist(self.jetstream)
            checks["consumers"] = await self._consumers_exist()
        return checks

    async def _consumers_exist(self) -> bool:
        try:
            for consumer in self.consumers:
                await self.jetstream.consumer_info(consumer.stream, consumer.durable)
        except Exception:
            return False
        return True

    async def _restore_check(self, patience: float = 300) -> None:
        """Once the consumers have caught up (a restored database replays first and emits
        again what it had emitted), report what this service published that its database no
        longer explains (runtime/restore.py)."""
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + patience
            for _ in range(int(patience)):
                if await self._caught_up() or loop.time() > deadline:
                    break
                await asyncio.sleep(1)
            lost = await report(self.jetstream, self.db, self.tables, self.name)
            RESTORE_UNEXPLAINED.labels(self.name).set(len(lost))
        except Exception as exc:
            log.warning("%s: restore check not done (%s)", self.name, describe_error(exc))

    async def _caught_up(self) -> bool:
        for consumer in self.consumers:
            info = await self.jetstream.consumer_info(consumer.stream, consumer.durable)
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    async def _watch_lag(self) -> None:
        while True:
            await asyncio.sleep(5)
            for consumer in self.consumers:
                try:
                    info = await self.jetstream.consumer_info(consumer.stream, consumer.durable)
                except Exception:
                    continue
                CONSUMER_PENDING.labels(self.name, consumer.durable).set(info.num_pending or 0)
