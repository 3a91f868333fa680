"""The dispatcher: POSTs due deliveries, retries with exponential back-off, and after the last
attempt parks a delivery in its endpoint's dead letters.

Only to public addresses unless the deployment allows private ones: the client connects
through services.webhooks.destinations, and a refused address parks the delivery at once.

At least once: a delivery is leased (its next attempt pushed past the request timeout) before it
is sent and marked delivered only after a 2xx, so a crash mid-flight means another try, never a
loss. Receivers dedupe on the Ensemble-Delivery-Id header. Two copies of the service claim
different rows (SKIP LOCKED on PostgreSQL).
"""

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

import httpx
from opentelemetry.trace import SpanKind
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.envelope import CONTENT_TYPE
from runtime import tracing
from runtime.db import Clock, utcnow
from runtime.periodic import Periodic
from runtime.service import ServiceRuntime
from services.webhooks.destinations import GuardedBackend, GuardedTransport, RefusedDestination
from services.webhooks.lifecycle import Delivered, Failed, IllegalMove, Status, decide
from services.webhooks.metrics import BACKLOG, DELIVERIES
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import HEADER, sign
from services.webhooks.tables import DeadLetter, Delivery, Endpoint

log = logging.getLogger("ensemble.webhooks")

USER_AGENT = "Ensemble-Webhooks/1"


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    attempt: int
    url: str
    secret: str
    event_id: str
    event_type: str
    payload: bytes


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    final: bool = False  # no point retrying: park it now


class Dispatcher:
    """Runs on a Periodic: a round every ``webhooks_poll_seconds``, at once after ``wake()`` (a
    consumer's commit wrote deliveries, a dead letter was replayed) and again at once after a
    full batch; a round that fails (the database away) backs off, and the rows stay."""

    def __init__(self, rt: ServiceRuntime, settings: WebhooksSettings,
                 clock: Clock = utcnow) -> None:
        self.rt = rt
        self.settings = settings
        self.clock = clock
        self.backend = GuardedBackend(allow_private=settings.webhooks_allow_private)
        self.worker = Periodic("webhook dispatch", self._round, settings.webhooks_poll_seconds)
        self._client: httpx.AsyncClient | None = None
        self._pruned_at = 0.0

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll."""
        self.worker.wake()

    async def run(self) -> None:
        s = self.settings
        limits = httpx.Limits(max_connections=s.webhooks_concurrency)
        async with httpx.AsyncClient(transport=GuardedTransport(self.backend, limits),
                                     timeout=s.webhooks_timeout_seconds, follow_redirects=False,
                                     headers={"User-Agent": USER_AGENT}) as client:
            self._client = client
            self._pruned_at = asyncio.get_running_loop().time()
            try:
                await self.worker.run()
            finally:
                self._client = None

    async def _round(self) -> bool:
        """Send what is due; True when a full batch was sent (more may be waiting)."""
        assert self._client is not None, "rounds run inside run()"
        sent = await self.dispatch_due(self._client)
        now = asyncio.get_running_loop().time()
        if now - self._pruned_at > 3600:
            self._pruned_at = now
            await self.prune()
        return sent >= self.settings.webhooks_batch

    async def dispatch_due(self, client: httpx.AsyncClient) -> int:
        attempts = await self._claim()
        if not attempts:
            return 0
        gate = asyncio.Semaphore(self.settings.webhooks_concurrency)

        async def send(attempt: Attempt) -> Result:
            async with gate:
                return await self._post(client, attempt)

        results = await asyncio.gather(*(send(a) for a in attempts))
        await self._record(list(zip(attempts, results, strict=True)))
        return len(attempts)

    async def _claim(self) -> list[Attempt]:
        s = self.settings
        now = self.clock()
        lease = now + timedelta(seconds=s.webhooks_timeout_seconds * 2 + 30)
        async with self.rt.db.transaction() as session:
            rows = (
                await session.execute(
                    select(Delivery, Endpoint.url, Endpoint.secret)
                    .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                    .where(Delivery.status == Status.pending, Delivery.next_attempt_at <= now)
                    .order_by(Delivery.next_attempt_at)
                    .limit(s.webhooks_batch)
                    .with_for_update(skip_locked=True, of=Delivery)
                )
            ).all()
            attempts = []
            for delivery, url, secret in rows:
                delivery.next_attempt_at = lease  # in flight: not claimed again before this
                attempts.append(Attempt(delivery.id, delivery.attempts + 1, url, secret,
                                        delivery.event_id, delivery.event_type, delivery.payload))
        return attempts

    async def _post(self, client: httpx.AsyncClient, attempt: Attempt) -> Result:
        """One delivery, a client span in the event's trace (the traceparent it carries); the
        endpoint receives that span's context as traceparent/tracestate headers."""
        with tracing.span(f"webhook {attempt.event_type}",
                          parent=tracing.payload_context(attempt.payload), kind=SpanKind.CLIENT,
                          attributes={"ensemble.delivery_id": attempt.delivery_id,
                                      "cloudevents.event_id": attempt.event_id,
                                      "cloudevents.event_type": attempt.event_type,
                                      "ensemble.attempt": attempt.attempt}) as made:
            result = await self._attempt(client, attempt)
            if result.status is not None:
                made.set_attribute("http.response.status_code", result.status)
            return result

    async def _attempt(self, client: httpx.AsyncClient, attempt: Attempt) -> Result:
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Ensemble-Delivery-Id": attempt.delivery_id,
            "Ensemble-Event-Id": attempt.event_id,
            "Ensemble-Event-Type": attempt.event_type,
            "Ensemble-Attempt": str(attempt.attempt),
            HEADER: sign(attempt.secret, attempt.payload),
            **tracing.current_fields(),
        }
        try:
            response = await client.post(attempt.url, content=attempt.payload, headers=headers)
        except RefusedDestination as exc:
            log.warning("webhook delivery %s refused: %s resolves to %s", attempt.delivery_id,
                        exc.host, exc.address)
            return Result(False, error=str(exc)[:300], final=True)
        except httpx.HTTPError as exc:
            return Result(False, error=type(exc).__name__)
        if 200 <= response.status_code < 300:
            return Result(True, response.status_code)
        return Result(False, response.status_code, f"HTTP {response.status_code}",
                      _retry_after(response))

    async def _record(self, outcomes: list[tuple[Attempt, Result]]) -> None:
        """Each attempt's answer, through the lifecycle: delivered, retried after a back-off,
        or dead and parked in its endpoint's dead letters."""
        now = self.clock()
        async with self.rt.db.transaction() as session:
            for attempt, result in outcomes:
                delivery = await session.get(Delivery, attempt.delivery_id)
                if delivery is None:
                    continue  # its endpoint was deleted meanwhile
                fact = Delivered() if result.ok else Failed(
                    attempt.attempt, self.settings.webhooks_max_attempts, result.final)
                try:
                    status = decide(Status(delivery.status), fact)
                except IllegalMove:
                    continue  # no longer pending
                delivery.status = status
                delivery.attempts = attempt.attempt
                delivery.last_status = result.status
                delivery.last_error = result.error
                self._after(delivery, status, attempt, result, now, session)
            backlog = await session.scalar(
                select(func.count()).select_from(Delivery).where(
                    Delivery.status == Status.pending))
        BACKLOG.labels(self.rt.name).set(backlog or 0)

    def _after(self, delivery: Delivery, status: Status, attempt: Attempt, result: Result,
               now: datetime, session: AsyncSession) -> None:
        """What follows the delivery's new status: its time, its dead letter or its next try."""
        if status == Status.delivered:
            delivery.delivered_at = now
            DELIVERIES.labels(self.rt.name, "delivered").inc()
        elif status == Status.dead:
            session.add(_dead_letter(delivery, now))
            DELIVERIES.labels(self.rt.name, "dead_lettered").inc()
            log.warning("webhook delivery %s dead-lettered after %d attempts: %s",
                        delivery.id, attempt.attempt, result.error)
        else:
            delivery.next_attempt_at = now + timedelta(
                seconds=self.backoff(attempt.attempt, result.retry_after))
            DELIVERIES.labels(self.rt.name, "retried").inc()

    async def prune(self, keep: timedelta = timedelta(days=7)) -> None:
        """Forget deliveries done a week ago (their events stay replayable from the stream)."""
        async with self.rt.db.transaction() as session:
            await session.execute(delete(Delivery).where(
                Delivery.status == Status.delivered, Delivery.delivered_at < self.clock() - keep))

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        s = self.settings
        delay = s.webhooks_retry_base_seconds * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, s.webhooks_retry_max_seconds)


def _retry_after(response: httpx.Response) -> float | None:
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _dead_letter(delivery: Delivery, now: datetime) -> DeadLetter:
    return DeadLetter(id=str(uuid4()), endpoint_id=delivery.endpoint_id,
                      district_id=delivery.district_id, delivery_id=delivery.id,
                      event_id=delivery.event_id, event_type=delivery.event_type,
                      attempts=delivery.attempts, last_status=delivery.last_status,
                      last_error=delivery.last_error, dead_at=now)
