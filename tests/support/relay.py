"""What the outbox relay tests share: commit an event, read the stream, count unsent rows."""

import asyncio

import nats
from nats.errors import TimeoutError as NatsTimeoutError
from sqlalchemy import func, select

from contracts.envelope import Envelope
from contracts.events import ReferralCancelled
from contracts.subjects import subject_for
from runtime.service import ServiceRuntime

SUBJECT = subject_for(ReferralCancelled, "d001")
STREAM = "ENSEMBLE_REFERRALS"


async def cancel(rt: ServiceRuntime, referral_id: str) -> None:
    """Commit one event (a cancellation) through the service's unit of work."""
    async with rt.unit_of_work() as uow:
        uow.emit(ReferralCancelled(referral_id=referral_id, reason="test"), district="d001",
                 subject=referral_id)


async def published(url: str, count: int, timeout: float = 15) -> list[str]:
    """Referral ids of the cancellations on the stream in stream order, once ``count`` are
    there or ``timeout`` has passed."""
    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().pull_subscribe(SUBJECT, stream=STREAM)
        ids: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(ids) < count and loop.time() < deadline:
            try:
                msgs = await sub.fetch(count - len(ids), timeout=1)
            except NatsTimeoutError:
                continue
            ids += [Envelope.model_validate_json(m.data).data["referral_id"] for m in msgs]
        return ids
    finally:
        await nc.close()


async def on_stream(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(STREAM)).state.messages
    finally:
        await nc.close()


async def unsent(rt: ServiceRuntime, timeout: float = 10) -> int:
    """Outbox rows not yet marked sent, once there are none or ``timeout`` has passed."""
    outbox = rt.tables.outbox
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with rt.db.transaction() as session:
            count = int(await session.scalar(
                select(func.count()).where(outbox.c.sent_at.is_(None))) or 0)
        if count == 0 or loop.time() > deadline:
            return count
        await asyncio.sleep(0.1)
