"""The outbox relay: what a process commits reaches the bus in commit order, once, without
waiting for a read of the table; rows left behind by another process are found and sent."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from support.relay import SUBJECT, cancel, on_stream, published, unsent

from contracts.envelope import Envelope
from contracts.events import ReferralCancelled
from runtime.db import utcnow
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.referrals.service import build


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[ServiceRuntime]:
    rt = build(settings).runtime
    await rt.migrate()
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


async def test_events_reach_the_bus_once_in_commit_order_and_are_marked_sent(
        runtime: ServiceRuntime, settings: Settings) -> None:
    ids = [f"r-{i}" for i in range(300)]
    for referral_id in ids:
        await cancel(runtime, referral_id)
    assert await published(settings.nats_url, len(ids)) == ids
    assert await unsent(runtime) == 0
    assert await on_stream(settings.nats_url) == len(ids)


async def test_a_row_another_process_left_unsent_is_found_and_sent(
        runtime: ServiceRuntime, settings: Settings) -> None:
    # As a copy that committed and died before publishing leaves it: no process hands it over.
    envelope = Envelope.wrap(
        ReferralCancelled(referral_id="r-orphan", reason="test"), source="/ensemble/referrals",
        district="d001", school=None, subject="r-orphan")
    async with runtime.db.transaction() as session:
        await session.execute(insert(runtime.tables.outbox).values(
            event_id=envelope.id, event_type=envelope.type, subject=SUBJECT,
            payload=envelope.to_bytes(), created_at=utcnow() - timedelta(minutes=1)))
    await cancel(runtime, "r-fresh")
    assert sorted(await published(settings.nats_url, 2)) == ["r-fresh", "r-orphan"]
    assert await unsent(runtime) == 0


async def test_events_are_published_while_earlier_ones_wait_to_be_marked_sent(
        runtime: ServiceRuntime, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Marking rows sent waits for a database connection (SQLite's one is queued behind every
    request): what commits meanwhile is published without waiting for it, and marked once
    the database answers."""
    # The relay's first round reads the table (rows an earlier run left) and marks what it
    # finds in the same pass: once one event is marked sent, that round is over.
    await cancel(runtime, "r-before")
    assert await unsent(runtime) == 0
    relay = runtime.relay
    release = asyncio.Event()
    mark = relay._mark_in_transaction

    async def waiting_for_the_database(rows: Any) -> None:
        await release.wait()
        await mark(rows)

    monkeypatch.setattr(relay, "_mark_in_transaction", waiting_for_the_database)
    await cancel(runtime, "r-first")
    await cancel(runtime, "r-second")  # committed while r-first waits to be marked
    assert await published(settings.nats_url, 3) == ["r-before", "r-first", "r-second"]
    assert await unsent(runtime, timeout=0.5) == 2
    release.set()
    assert await unsent(runtime) == 0
    assert await on_stream(settings.nats_url) == 3
