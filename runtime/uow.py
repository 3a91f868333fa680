"""The unit of work a handler or an endpoint writes through, and the outbox and inbox tables it
writes: a state change and the events it emits commit in one transaction."""

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple
from uuid import NAMESPACE_URL, uuid4, uuid5

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
)
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.envelope import Envelope
from contracts.events import Event, event_class
from contracts.subjects import subject_for
from runtime.db import UTCDateTime, utcnow
from runtime.tracing import current_fields

SEQ = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    inbox: Table
    positions: Table


def messaging_tables(metadata: MetaData) -> MessagingTables:
    if "outbox" in metadata.tables:  # a service built twice in one process (tests)
        return MessagingTables(metadata.tables["outbox"], metadata.tables["inbox"],
                               metadata.tables["consumer_positions"])
    outbox = Table(
        "outbox",
        metadata,
        Column("seq", SEQ, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("event_type", String(128), nullable=False),
        Column("subject", String(255), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("sent_at", UTCDateTime, nullable=True),
    )
    Index(
        "ix_outbox_unsent",
        outbox.c.seq,
        sqlite_where=outbox.c.sent_at.is_(None),
        postgresql_where=outbox.c.sent_at.is_(None),
    )
    Index("ix_outbox_sent_at", outbox.c.sent_at)
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(128), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("applied_at", UTCDateTime, nullable=False, index=True),
    )
    # The last stream sequence each durable consumer applied, written in the transaction of
    # its effects: a database restored from a backup says where its stream must replay from
    # (runtime/positions.py).
    positions = Table(
        "consumer_positions",
        metadata,
        Column("consumer", String(128), primary_key=True),
        Column("stream", String(64), nullable=False),
        Column("stream_seq", SEQ, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    return MessagingTables(outbox, inbox, positions)


class Pending(NamedTuple):
    """An outbox row as the relay publishes it."""

    event_id: str
    event_type: str
    subject: str
    payload: bytes


@dataclass
class UnitOfWork:
    """One transaction: domain changes through ``session``, events through ``emit``."""

    session: AsyncSession
    source: str
    cause: Envelope | None = None
    # Set by a consumer (its durable name) while it applies ``cause``: the events emitted then
    # get ids derived from the cause, so applying it again after a restore emits the same ids
    # and the services downstream drop them as already applied.
    consumer: str | None = None
    emitted: list[Envelope] = field(default_factory=list)
    written: list[Pending] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # Transaction-level locks this transaction already holds (runtime.erasure): a batch takes
    # each once, not once per event.
    held_locks: set[str] = field(default_factory=set)
    _derived: Counter[str] = field(default_factory=Counter)

    def emit(
        self,
        event: Event,
        *,
        district: str | None = None,
        school: str | None = None,
        subject: str | None = None,
        correlation: str | None = None,
        causation: str | None = None,
    ) -> Envelope:
        """Queue an event; it is written to the outbox in this transaction.

        The ``subject`` is the contract's rule (``Event.subject_id``: the referral, else the
        entity the event is about); a caller that names one must name the same. The chain's
        ``correlation`` follows the cause unless given (a referral's stored correlation id)."""
        cause = self.cause
        district = district or (cause.districtid if cause else None)
        if district is None:
            raise ValueError("an event needs its district")
        ruled = event.subject_id()
        if subject is not None and subject != ruled:
            raise ValueError(f"{type(event).__name__}'s subject is {ruled!r} by the contract's "
                             f"rule, not {subject!r}")
        envelope = Envelope.wrap(
            event,
            source=self.source,
            district=district,
            school=school if school is not None else (cause.schoolid if cause else None),
            subject=ruled,
            cause=cause,
            correlation=correlation,
            causation=causation,
            event_id=self._derived_id(event),
            # The span emitting it: stored with the outbox row, so the trace survives the relay
            # and restarts (runtime/tracing.py). Nothing when tracing is off.
            extensions=current_fields(),
        )
        self.emitted.append(envelope)
        return envelope

    def new_id(self, kind: str) -> str:
        """An id for a row this transaction creates. Derived like an emitted event's id while a
        consumer applies its cause, so a replay after a restore makes the same row (and the
        events about it keep their ids downstream); random outside a consumer."""
        if self.consumer is None or self.cause is None:
            return str(uuid4())
        key = f"{self.consumer}/{self.cause.id}/row:{kind}"
        self._derived[key] += 1
        return str(uuid5(NAMESPACE_URL, f"ensemble:{key}/{self._derived[key]}"))

    def _derived_id(self, event: Event) -> str | None:
        """The id of the n-th event of this type emitted while a consumer applies its cause:
        the same each time the cause is applied (a replay after a restore), another for
        another decision. None (a random id) outside a consumer."""
        if self.consumer is None or self.cause is None:
            return None
        key = f"{self.consumer}/{self.cause.id}/{event.ce_type()}"
        self._derived[key] += 1
        return str(uuid5(NAMESPACE_URL, f"ensemble:{key}/{self._derived[key]}"))

    async def flush(self, outbox: Table) -> None:
        if not self.emitted:
            return
        now = utcnow()
        self.written = [
            Pending(env.id, env.type, subject_for(_registered(env.type), env.districtid),
                    env.to_bytes())
            for env in self.emitted
        ]
        await self.session.execute(
            insert(outbox), [{**row._asdict(), "created_at": now} for row in self.written]
        )


def _registered(ce_type: str) -> type[Event]:
    cls = event_class(ce_type)
    assert cls is not None, ce_type  # envelopes are made from registered events only
    return cls


Handler = Callable[[UnitOfWork, Envelope, Event], Awaitable[None]]
# Called once per consumer batch, before its handlers, with the batch's new events: loads the
# rows they will touch in one statement per table (``runtime.prefetch.load``), so each
# handler's ``prefetch.get`` is answered without a round trip per event.
Prefetch = Callable[[UnitOfWork, list[tuple[Envelope, Event]]], Awaitable[None]]
