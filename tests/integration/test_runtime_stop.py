"""A stopping service does not wait forever on a batch that never finishes (a lock wait, say):
the batch gets a grace period, then is cancelled and its message delivered again."""

import asyncio
from typing import Any

import nats
import pytest

from contracts.envelope import Envelope
from contracts.events import NoPartnerAvailable
from contracts.subjects import subject_for
from contracts.taxonomy import Need
from runtime.consumer import EventConsumer
from runtime.settings import Settings
from services.referrals.service import build


async def test_a_stuck_batch_is_cancelled_at_stop_after_its_grace(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EventConsumer, "STOP_GRACE_SECONDS", 0.5)
    rt = build(settings).runtime
    await rt.migrate()
    await rt.start()
    [consumer] = [c for c in rt.consumers if c.event_cls is NoPartnerAvailable]
    in_hand, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(*_: Any) -> None:
        in_hand.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    consumer.handler = stuck
    event = NoPartnerAvailable(referral_id="r-stuck", family_id="f-1", need=Need.dental,
                               reason="test")
    envelope = Envelope.wrap(event, source="/ensemble/partners", district="d001", school=None,
                             subject="r-stuck")
    nc = await nats.connect(settings.nats_url)
    try:
        await nc.jetstream().publish(subject_for(NoPartnerAvailable, "d001"),
                                     envelope.to_bytes(), headers={"Nats-Msg-Id": envelope.id})
        await asyncio.wait_for(in_hand.wait(), timeout=15)
        await asyncio.wait_for(rt.stop(), timeout=15)
        assert cancelled.is_set()
        # Not acknowledged: the durable still holds it for the next copy.
        info = await nc.jetstream().consumer_info(consumer.stream, consumer.durable)
        assert info.num_ack_pending + info.num_pending == 1
    finally:
        await nc.close()
