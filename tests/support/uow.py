"""Handlers without NATS: a service's tables in an in-memory SQLite database, and units of work
over it that record what each handler emitted. A handler test runs in milliseconds:

    async with HandlerBench(Base.metadata) as bench:
        emitted = await bench.handle(handlers.on_partner_matched, matched, deps)
        assert [type(e) for e in emitted] == [ReferralMatched]
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Self

from sqlalchemy import MetaData

from contracts.envelope import Envelope
from contracts.events import Event, event_class
from runtime.db import Database
from runtime.uow import UnitOfWork, messaging_tables

DISTRICT = "d001"


class HandlerBench:
    def __init__(self, metadata: MetaData, source: str = "/tests/handler") -> None:
        messaging_tables(metadata)  # the outbox a real unit of work writes to
        self.metadata = metadata
        self.source = source
        self.db = Database("sqlite://", metadata)
        self.emitted: list[Envelope] = []

    async def __aenter__(self) -> Self:
        await self.db.create_schema()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.db.dispose()

    @asynccontextmanager
    async def unit_of_work(self, cause: Envelope | None = None) -> AsyncIterator[UnitOfWork]:
        """As ServiceRuntime.unit_of_work: one transaction, events written to its outbox; what
        was emitted is kept in ``self.emitted`` once it commits."""
        async with self.db.transaction() as session:
            uow = UnitOfWork(session, self.source, cause=cause)
            yield uow
            await uow.flush(self.metadata.tables["outbox"])
        self.emitted += uow.emitted
        for callback in uow.after_commit:
            callback()

    async def handle(self, handler: Callable[..., Awaitable[None]], event: Event, deps: Any,
                     *, district: str = DISTRICT, school: str | None = None,
                     subject: str | None = None, at: datetime | None = None) -> list[Event]:
        """Deliver ``event`` to ``handler`` as the consumer would; the events it emitted."""
        envelope = self.envelope(event, district=district, school=school, subject=subject, at=at)
        return await self.deliver(handler, envelope, deps)

    async def deliver(self, handler: Callable[..., Awaitable[None]], envelope: Envelope,
                      deps: Any) -> list[Event]:
        """Deliver ``envelope`` (again, for a redelivery) to ``handler``; what it emitted."""
        async with self.unit_of_work(cause=envelope) as uow:
            await handler(uow, envelope, decoded(envelope), deps)
            emitted = list(uow.emitted)
        return [decoded(e) for e in emitted]

    async def deliver_batch(self, handler: Callable[..., Awaitable[None]],
                            envelopes: list[Envelope], deps: Any,
                            prefetch: Callable[..., Awaitable[None]] | None = None,
                            ) -> list[Event]:
        """Deliver ``envelopes`` as one consumer batch would: one transaction, the batch's
        prefetch (its ``PREFETCH`` entry) first, then the handler per event in order."""
        emitted: list[Event] = []
        async with self.db.transaction() as session:
            uow = UnitOfWork(session, self.source)
            if prefetch is not None:
                await prefetch(uow, [(env, decoded(env)) for env in envelopes], deps)
            for envelope in envelopes:
                uow.cause = envelope
                await handler(uow, envelope, decoded(envelope), deps)
            await uow.flush(self.metadata.tables["outbox"])
            emitted = [decoded(e) for e in uow.emitted]
        self.emitted += uow.emitted
        for callback in uow.after_commit:
            callback()
        return emitted

    @staticmethod
    def envelope(event: Event, *, district: str = DISTRICT, school: str | None = None,
                 subject: str | None = None, at: datetime | None = None) -> Envelope:
        """``event`` as another service published it (at ``at``, else now)."""
        envelope = Envelope.wrap(event, source="/tests/upstream", district=district,
                                 school=school, subject=subject)
        return envelope if at is None else envelope.model_copy(update={"time": at})

    async def get(self, entity: type[Any], key: Any) -> Any:
        async with self.db.transaction() as session:
            return await session.get(entity, key)


def decoded(envelope: Envelope) -> Event:
    cls = event_class(envelope.type)
    assert cls is not None, envelope.type
    return cls.model_validate(envelope.data)
