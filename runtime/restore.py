"""What a restore lost: events a service published that its database no longer explains.

After a database is restored from a backup, what the service published since the backup is
still on its streams. Events it published while applying other services' events come back:
the consumers replay from the recorded positions (runtime/positions.py) and emit them again
with the same ids (runtime/uow.py), into the outbox. What remains on the stream and not in the
outbox was caused by something the streams do not hold (an HTTP command, a timer, a provider's
answer): the restore lost it. A service reports those at start (log, metric) and
`ensemble restore-report` lists them.

The window is the outbox's: sent rows are kept ``KEEP_SENT`` (runtime/outbox.py), so events
older than that are explained by nothing and are not compared.
"""

import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import select

from contracts.events import EVENTS
from contracts.subjects import INTERNAL_ROOT, PUBLIC_ROOT
from runtime.db import Database, utcnow
from runtime.outbox import KEEP_SENT
from runtime.streams import stream_for_subject
from runtime.uow import MessagingTables

log = logging.getLogger("ensemble.restore")

# The relay prunes sent rows once an hour: an event this close to the edge may be gone already.
MARGIN = timedelta(hours=2)
FETCH = 500


@dataclass(frozen=True)
class Unexplained:
    event_id: str
    event_type: str
    subject: str
    stream: str
    stream_seq: int
    time: datetime


def published_by(service: str) -> list[str]:
    """The subject filters a service publishes on: its own domain, public and internal."""
    own = [cls for cls in EVENTS.values() if cls.domain == service]
    filters = [f"{PUBLIC_ROOT}.*.{service}.>"] if any(not c.internal for c in own) else []
    if any(c.internal for c in own):
        filters.append(f"{INTERNAL_ROOT}.*.{service}.>")
    return filters


async def unexplained(js: JetStreamContext, db: Database, tables: MessagingTables,
                      service: str, since: datetime | None = None) -> list[Unexplained]:
    """Events on ``service``'s own subjects since ``since`` (default: as far as the outbox
    keeps), published by it, whose ids are not in its outbox; in stream order."""
    since = since or utcnow() - KEEP_SENT + MARGIN
    found: list[Unexplained] = []
    for subject_filter in published_by(service):
        on_stream = await _published(js, service, subject_filter, since)
        for start in range(0, len(on_stream), FETCH):
            chunk = on_stream[start:start + FETCH]
            async with db.transaction() as session:
                known = set((await session.scalars(select(tables.outbox.c.event_id).where(
                    tables.outbox.c.event_id.in_([e.event_id for e in chunk])))).all())
            found += [e for e in chunk if e.event_id not in known]
    return found


async def _published(js: JetStreamContext, service: str, subject_filter: str,
                     since: datetime) -> list[Unexplained]:
    """Read the stream from ``since`` through a short-lived consumer named for the service."""
    stream = stream_for_subject(subject_filter)
    name = f"{service}-restore-check"
    with_config = ConsumerConfig(
        name=name, filter_subject=subject_filter, deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=since, ack_policy=AckPolicy.NONE, inactive_threshold=60.0,
        mem_storage=True)
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(stream, name)  # one left by a run that died
    info = await js.add_consumer(stream, config=with_config)
    remaining = info.num_pending or 0
    events: list[Unexplained] = []
    try:
        sub = await js.pull_subscribe_bind(name, stream=stream)
        while remaining > 0:
            try:
                msgs = await sub.fetch(min(FETCH, remaining), timeout=5)
            except TimeoutError:
                break
            for msg in msgs:
                remaining = msg.metadata.num_pending
                event = _event(service, msg.subject, stream, msg.metadata.sequence.stream,
                               msg.data)
                if event is not None:
                    events.append(event)
        await sub.unsubscribe()
    finally:
        with contextlib.suppress(Exception):  # else it goes by itself once inactive
            await js.delete_consumer(stream, name)
    return events


def _event(service: str, subject: str, stream: str, seq: int,
           data: bytes) -> Unexplained | None:
    try:
        envelope = json.loads(data)
        if envelope.get("source") != f"/ensemble/{service}":
            return None
        return Unexplained(str(envelope["id"]), str(envelope["type"]), subject, stream, seq,
                           datetime.fromisoformat(str(envelope["time"]).replace("Z", "+00:00")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not an envelope of ours: the consumers dead-letter such messages


def describe(events: Iterable[Unexplained]) -> list[str]:
    """One line per event: ids, types and where it is, never its data."""
    return [f"{e.time.isoformat(timespec='seconds')} {e.event_type} {e.event_id} "
            f"({e.stream} #{e.stream_seq}, {e.subject})" for e in events]


async def report(js: JetStreamContext, db: Database, tables: MessagingTables,
                 service: str) -> list[Unexplained]:
    """At start: log every event the database no longer explains, ids and types only."""
    lost = await unexplained(js, db, tables, service)
    for line in describe(lost):
        log.warning("%s: published but not in this database (lost by a restore?): %s",
                    service, line)
    if lost:
        log.warning("%s: %d published events are not explained by this database: "
                    "`ensemble restore-report %s` lists them", service, len(lost), service)
    return lost
