"""The webhooks service's one consumer handler (every public event), through an in-memory unit
of work: no NATS, no server, milliseconds each."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from support.uow import HandlerBench

from contracts.asyncapi import public_events
from contracts.envelope import Envelope
from contracts.events import ReferralClosed, ReferralOpened
from contracts.taxonomy import Consent, Need, Outcome, Urgency
from runtime.settings import Settings
from services.webhooks import handlers
from services.webhooks.deps import WebhooksDeps
from services.webhooks.service import build
from services.webhooks.tables import Base, Delivery, Endpoint

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
OPENED = "org.ensemble.referrals.opened.v1"
CLOSED = "org.ensemble.referrals.closed.v1"


@pytest.fixture
async def bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(Base.metadata) as bench:
        yield bench


@pytest.fixture
def deps(tmp_path: Path) -> WebhooksDeps:
    """What the service is built with (its runtime is never started: the handler only wakes
    the dispatcher)."""
    deps = build(Settings(data_dir=tmp_path), clock=lambda: NOW).deps
    assert isinstance(deps, WebhooksDeps)
    return deps


async def endpoint(bench: HandlerBench, name: str, *, district: str = "d001",
                   types: tuple[str, ...] = (), created_at: datetime = NOW - timedelta(hours=1)
                   ) -> str:
    async with bench.db.transaction() as session:
        session.add(Endpoint(id=name, district_id=district, url=f"https://hooks.example/{name}",
                             secret=f"whsec_{name}_0123456789", event_types=list(types),
                             description=None, created_at=created_at))
    return name


def opened() -> Envelope:
    return HandlerBench.envelope(ReferralOpened(
        referral_id="r1", school_id="lincoln-es", student_ref="stu-1", family_id="fam-1",
        need=Need.dental, urgency=Urgency.routine, consent=Consent.given, opened_at=NOW),
        at=NOW)


async def deliveries(bench: HandlerBench) -> list[Delivery]:
    async with bench.db.transaction() as session:
        return list((await session.scalars(
            select(Delivery).order_by(Delivery.endpoint_id))).all())


def woken(deps: WebhooksDeps) -> bool:
    event = deps.dispatcher.worker.wake_event
    was = event.is_set()
    event.clear()
    return was


async def test_an_event_becomes_a_pending_delivery_for_each_endpoint_that_wants_it(
        bench: HandlerBench, deps: WebhooksDeps) -> None:
    await endpoint(bench, "all")
    await endpoint(bench, "opened-only", types=(OPENED,))
    await endpoint(bench, "closed-only", types=(CLOSED,))
    await endpoint(bench, "other-district", district="d002")
    await endpoint(bench, "created-after", created_at=NOW + timedelta(seconds=1))
    envelope = opened()
    assert await bench.deliver(handlers.on_public_event, envelope, deps) == []
    rows = await deliveries(bench)
    assert [d.endpoint_id for d in rows] == ["all", "opened-only"]
    for d in rows:
        assert (d.district_id, d.event_id, d.event_type, d.payload) == (
            "d001", envelope.id, OPENED, envelope.to_bytes())
        assert (d.status, d.attempts, d.next_attempt_at, d.created_at) == (
            "pending", 0, NOW, NOW)
        assert (d.last_status, d.last_error, d.delivered_at) == (None, None, None)
    assert len({d.id for d in rows}) == 2  # each its own Ensemble-Delivery-Id
    assert woken(deps)


async def test_a_redelivered_event_adds_only_what_is_missing(
        bench: HandlerBench, deps: WebhooksDeps) -> None:
    await endpoint(bench, "first")
    envelope = opened()
    await bench.deliver(handlers.on_public_event, envelope, deps)
    [before] = await deliveries(bench)
    await endpoint(bench, "second")  # there before the event, written after it was handled
    await bench.deliver(handlers.on_public_event, envelope, deps)
    rows = await deliveries(bench)
    assert [(d.endpoint_id, d.event_id) for d in rows] == [
        ("first", envelope.id), ("second", envelope.id)]
    assert rows[0].id == before.id  # the same delivery, not a second one
    await bench.deliver(handlers.on_public_event, envelope, deps)
    assert [d.id for d in await deliveries(bench)] == [d.id for d in rows]


async def test_an_event_nobody_subscribed_to_writes_nothing_and_wakes_nobody(
        bench: HandlerBench, deps: WebhooksDeps) -> None:
    await endpoint(bench, "opened-only", types=(OPENED,))
    await endpoint(bench, "other-district", district="d002")
    closed = ReferralClosed(referral_id="r1", outcome=Outcome.services_received, closed_at=NOW)
    assert await bench.handle(handlers.on_public_event, closed, deps, at=NOW) == []
    assert await deliveries(bench) == []
    assert not woken(deps)


def test_every_public_event_is_consumed_by_the_fan_out(tmp_path: Path) -> None:
    assert list(handlers.HANDLERS) == public_events()
    assert set(handlers.HANDLERS.values()) == {handlers.on_public_event}
    assert not any(cls.internal for cls in handlers.HANDLERS)
    service = build(Settings(data_dir=tmp_path))
    consumers = service.runtime.consumers
    assert [c.event_cls for c in consumers] == public_events()
    assert [c.durable for c in consumers] == [
        f"webhooks-{cls.domain}-{cls.name}".replace("_", "-") for cls in public_events()]
