"""Idempotent, batched JetStream consumers with explicit acks, back-off and dead letters.

A pull batch is applied in one transaction that also records each event id in the inbox, so a
redelivered event has one effect. If the batch fails, its messages are applied one by one so a
single bad message cannot hold the others back; a failing message is redelivered with back-off
and, at the last allowed delivery, parked on the dead-letter stream with its reason.
"""

import asyncio
import logging
import random
import time

from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from contracts.envelope import Envelope, EnvelopeError, decode_envelope
from contracts.events import Event
from contracts.subjects import dlq_subject, filter_for
from runtime.errors import RetryLater, Unavailable, describe_error
from runtime.logs import correlation
from runtime.metrics import CONSUMED, DEAD_LETTERS, HANDLER_SECONDS, REDELIVERIES, REPLAYED
from runtime.periodic import doubling
from runtime.ports import ConsumerHost
from runtime.positions import record, recorded, replay_from
from runtime.pull import PullFeed
from runtime.streams import stream_for_subject
from runtime.tracing import consuming_batch, handling
from runtime.uow import Handler, Prefetch

log = logging.getLogger("ensemble.consumer")

Item = tuple[Msg, Envelope, Event]


def is_outage(exc: BaseException) -> bool:
    """Errors that say the database cannot be reached or is overloaded right now."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | PoolTimeout | ConnectionError)


class EventConsumer:
    def __init__(self, runtime: ConsumerHost, event_cls: type[Event], handler: Handler,
                 prefetch: Prefetch | None = None) -> None:
        self.runtime = runtime
        self.event_cls = event_cls
        self.handler = handler
        self.prefetch = prefetch
        self.event_label = event_cls.ce_type()
        self.filter_subject = filter_for(event_cls)
        self.durable = f"{runtime.name}-{event_cls.domain}-{event_cls.name}".replace("_", "-")
        self.stream = stream_for_subject(self.filter_subject)
        # The inbox's statements, built once: a batch only binds its values.
        inbox = runtime.tables.inbox
        self._seen = select(inbox.c.event_id).where(
            inbox.c.consumer == self.durable,
            inbox.c.event_id.in_(bindparam("ids", expanding=True)))
        self._applied = insert(inbox)

    def consumer_config(self, start_seq: int | None = None) -> ConsumerConfig:
        return ConsumerConfig(
            # With a name, nats-py puts the filter in the create subject, so NATS permissions
            # pin each service's durable to the events it consumes (deploy/nats/accounts.conf).
            name=self.durable,
            durable_name=self.durable,
            filter_subject=self.filter_subject,
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if start_seq is None
            else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            ack_wait=30,
            max_ack_pending=10_000,
            # Dead-lettering is ours (settings.max_deliver); the server never drops silently.
            max_deliver=-1,
        )

    async def start(self) -> None:
        self._stopping = False
        self._fetching = False
        js = self.runtime.jetstream
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:  # an existing consumer keeps its configuration
            info = await js.add_consumer(self.stream, config=self.consumer_config())
        await self.catch_up(info)
        self._feed = PullFeed(self.runtime.nats, self.stream, self.durable,
                              self.runtime.settings.fetch_batch)
        await self._feed.start()
        self._task = asyncio.create_task(self._run(), name=f"consume-{self.durable}")

    async def catch_up(self, info: ConsumerInfo) -> None:
        """A database restored from a backup is behind what the durable acknowledged: re-create
        the durable to deliver again from the message after the database's recorded position;
        the inbox drops what the database already had. A database with no position yet (new,
        or from before positions) adopts the durable's ack floor."""
        acknowledged = info.ack_floor.stream_seq if info.ack_floor else 0
        async with self.runtime.unit_of_work() as uow:
            position = await recorded(uow.session, self.runtime.tables.positions, self.durable)
            if position is None:
                await record(uow.session, self.runtime.tables.positions, self.durable,
                             self.stream, acknowledged)
        start = replay_from(position, acknowledged)
        if start is None:
            return
        log.warning("%s: this database applied %s up to stream sequence %d, the durable "
                    "acknowledged up to %d (a restored backup?): delivering again from %d",
                    self.durable, self.stream, position, acknowledged, start)
        js = self.runtime.jetstream
        await js.delete_consumer(self.stream, self.durable)
        await js.add_consumer(self.stream, config=self.consumer_config(start))
        REPLAYED.labels(self.runtime.name, self.durable).inc(acknowledged - start + 1)

    # A batch in hand gets this long to finish at stop; then it is cancelled (its transaction
    # rolls back, its messages are redelivered after ack_wait) so a stuck handler, a lock wait
    # say, cannot hold a stopping process forever. With the outbox flush (10 s at most) it fits
    # the 30 s a Kubernetes pod is given before SIGKILL (deploy/k8s).
    STOP_GRACE_SECONDS = 15.0

    async def stop(self) -> None:
        """Stop fetching; a batch in hand is finished and acked first."""
        self._stopping = True
        if self._fetching:
            self._task.cancel()
        _, pending = await asyncio.wait({self._task}, timeout=self.STOP_GRACE_SECONDS)
        if pending:
            log.warning("%s: the batch in hand did not finish in %.0f s at stop; cancelled, "
                        "its messages are delivered again", self.durable,
                        self.STOP_GRACE_SECONDS)
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        # Messages fetched but not handled are redelivered to the next copy after ack_wait.
        await self._feed.stop()

    async def _run(self) -> None:
        # Our own pull loop (runtime.pull): a batch is handled as soon as one message is there.
        # FastStream 0.7.8's batch loop waits out its timeout for every batch and dies on the
        # asyncio.TimeoutError nats-py 2.16 raises.
        while not self._stopping:
            self._fetching = True
            try:
                msgs = await self._feed.next_batch()
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except Exception as exc:  # connection trouble: the client reconnects by itself
                log.warning("%s: fetch failed (%s)", self.durable, describe_error(exc))
                await asyncio.sleep(1)
                continue
            finally:
                self._fetching = False
            if not msgs:
                continue
            try:
                with consuming_batch(self.durable, len(msgs)):
                    await self.process(msgs)
            except Exception as exc:  # never lose the loop; unacked messages come back
                log.exception("%s: batch not processed (%s)", self.durable, describe_error(exc))
                await asyncio.sleep(1)

    async def process(self, msgs: list[Msg]) -> None:
        ready: list[Item] = []
        for msg in msgs:
            if msg.metadata.num_delivered > 1:
                REDELIVERIES.labels(self.runtime.name, self.event_label).inc()
            try:
                envelope, event = decode_envelope(msg.data)
                self._check(msg, envelope, event)
            except EnvelopeError as exc:
                await self.dead_letter(msg, str(exc))
                continue
            ready.append((msg, envelope, event))
        if not ready:
            return
        started = time.perf_counter()
        try:
            results = await self._apply(ready)
        except Exception as exc:
            if len(ready) > 1:
                log.info("batch of %d failed (%s); applying one by one", len(ready),
                         describe_error(exc))
            for item in ready:
                await self._apply_one(item)
            return
        HANDLER_SECONDS.labels(self.runtime.name, self.event_label).observe(
            time.perf_counter() - started
        )
        for (msg, _, _), result in zip(ready, results, strict=True):
            await msg.ack()
            CONSUMED.labels(self.runtime.name, self.event_label, result).inc()

    def _check(self, msg: Msg, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, self.event_cls):
            raise EnvelopeError(f"{envelope.type} does not belong on {msg.subject}")
        if self.runtime.districts.get(envelope.districtid) is None:
            raise EnvelopeError(f"unknown district {envelope.districtid!r}")
        if msg.subject.split(".")[1] != envelope.districtid:
            raise EnvelopeError("the envelope's district differs from the subject's")

    async def _apply(self, items: list[Item]) -> list[str]:
        """Apply new events in one transaction; return 'applied' or 'duplicate' per item."""
        results: list[str] = []
        async with self.runtime.unit_of_work() as uow:
            uow.consumer = self.durable
            ids = [env.id for _, env, _ in items]
            seen = set((await uow.session.scalars(self._seen, {"ids": ids})).all())
            if self.prefetch is not None:
                await self.prefetch(uow, [(env, ev) for _, env, ev in items if env.id not in seen])
            rows = []
            for msg, envelope, event in items:
                if envelope.id in seen:
                    results.append("duplicate")
                    continue
                seen.add(envelope.id)
                uow.cause = envelope
                with correlation(envelope.correlationid), handling(
                        self.durable, envelope.type, envelope.id, msg.headers,
                        envelope.model_extra):
                    await self.handler(uow, envelope, event)
                rows.append(
                    {"consumer": self.durable, "event_id": envelope.id, "applied_at": envelope.time}
                )
                results.append("applied")
            if rows:
                await uow.session.execute(self._applied, rows)
            await record(uow.session, self.runtime.tables.positions, self.durable, self.stream,
                         max(msg.metadata.sequence.stream for msg, _, _ in items))
        return results

    async def _apply_one(self, item: Item) -> None:
        msg = item[0]
        try:
            [result] = await self._apply([item])
        except Exception as exc:
            await self._retry_or_park(msg, exc)
            return
        await msg.ack()
        CONSUMED.labels(self.runtime.name, self.event_label, result).inc()

    async def _retry_or_park(self, msg: Msg, exc: Exception) -> None:
        settings = self.runtime.settings
        delivered = msg.metadata.num_delivered
        reason = describe_error(exc)
        if is_outage(exc):
            # The database is away, not the message at fault: wait, never dead-letter for it.
            log.warning("%s: database unavailable (%s); retrying", self.durable, reason)
            await msg.nak(delay=settings.retry_max_seconds)
            CONSUMED.labels(self.runtime.name, self.event_label, "retried").inc()
            return
        if isinstance(exc, Unavailable):
            log.warning("%s: delivery %d waits (%s); retrying", self.durable, delivered, reason)
        elif delivered >= settings.max_deliver:
            await self.dead_letter(msg, f"failed {delivered} times; last: {reason}")
            return
        elif not isinstance(exc, RetryLater):
            log.warning("%s: delivery %d failed: %s", self.durable, delivered, reason)
        delay = doubling(delivered - 1, settings.retry_base_seconds, settings.retry_max_seconds)
        await msg.nak(delay=delay * random.uniform(0.8, 1.2))
        CONSUMED.labels(self.runtime.name, self.event_label, "retried").inc()

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Park the message with its reason, then ack it so the consumer goes on. If parking
        fails the message is nak'ed: kept, never dropped."""
        meta = msg.metadata
        headers = {
            "Nats-Msg-Id": f"{self.durable}:{meta.sequence.stream}",
            "Ensemble-Reason": reason[:1000],
            "Ensemble-Consumer": self.durable,
            "Ensemble-Original-Subject": msg.subject,
            "Ensemble-Original-Sequence": str(meta.sequence.stream),
            "Ensemble-Delivered": str(meta.num_delivered),
        }
        try:
            await self.runtime.jetstream.publish(
                dlq_subject(self.runtime.name, msg.subject), msg.data, headers=headers
            )
        except Exception as exc:
            log.error("%s: could not dead-letter (%s); will retry", self.durable,
                      type(exc).__name__)
            await msg.nak(delay=self.runtime.settings.retry_max_seconds)
            return
        try:  # so a restart does not take the stream's last message for one never applied
            async with self.runtime.unit_of_work() as uow:
                await record(uow.session, self.runtime.tables.positions, self.durable,
                             self.stream, meta.sequence.stream)
        except Exception as exc:  # at worst it is parked again after a restore
            log.warning("%s: position not recorded (%s)", self.durable, describe_error(exc))
        await msg.ack()
        log.warning("%s: dead-lettered stream seq %d: %s", self.durable, meta.sequence.stream,
                    reason)
        DEAD_LETTERS.labels(self.runtime.name, self.event_label).inc()
        CONSUMED.labels(self.runtime.name, self.event_label, "dead_lettered").inc()
