"""What the consumer and the outbox relay need of the service they run in, and nothing more:
they depend on this, not on ``ServiceRuntime``, so the runtime has no import cycle."""

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from nats.aio.client import Client
from nats.js import JetStreamContext

from runtime.db import Database
from runtime.districts import Districts
from runtime.settings import Settings
from runtime.uow import MessagingTables, UnitOfWork


class Connected(Protocol):
    """A service's connection to NATS, once it has started."""

    @property
    def jetstream(self) -> JetStreamContext: ...

    @property
    def nats(self) -> Client: ...


class RelayHost(Connected, Protocol):
    name: str
    settings: Settings
    db: Database
    tables: MessagingTables


class ConsumerHost(Connected, Protocol):
    name: str
    settings: Settings
    districts: Districts
    tables: MessagingTables

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]: ...
