"""The dispatcher: sends queued messages, retries what failed for a while, falls back to the
other channel when one fails for good, and reports each end as an event.

Sending happens outside any transaction: a message is claimed with a lease, sent, then its end
is committed with its event. A process that dies between the send and the commit sends again
when the lease runs out (at-least-once; the SMTP Message-ID and the SMS idempotency token carry
the same key so a relay or provider can tell).
"""

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

from sqlalchemy import or_, select

from contracts.events import NotificationFailed, NotificationSent
from contracts.taxonomy import Channel
from runtime.db import utcnow
from runtime.errors import describe_error
from runtime.logs import correlation
from runtime.outbox import UnitOfWork
from runtime.service import ServiceRuntime
from services.notifications.errors import PermanentSendError, TransientSendError
from services.notifications.metrics import NOTIFICATIONS
from services.notifications.providers import Outgoing, Provider
from services.notifications.rendering import TemplateMissingError, render
from services.notifications.tables import Message

log = logging.getLogger("ensemble.notifications.dispatch")


class Dispatcher:
    def __init__(
        self,
        rt: ServiceRuntime,
        providers: dict[Channel, Provider],
        *,
        batch: int = 100,
        concurrency: int = 20,
        lease: timedelta = timedelta(seconds=120),
        max_attempts: int = 8,
        retry_base_seconds: float = 2.0,
    ) -> None:
        self.rt = rt
        self.providers = providers
        self.batch = batch
        self.lease = lease
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=0.5)
            self.wake.clear()
            try:
                while await self.dispatch_due() == self.batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dispatch failed (%s); retrying", describe_error(exc))
                await asyncio.sleep(1)

    async def dispatch_due(self) -> int:
        claimed = await self._claim()
        await asyncio.gather(*(self._send_one(message) for message in claimed))
        return len(claimed)

    async def _claim(self) -> list[Message]:
        now = utcnow()
        async with self.rt.unit_of_work() as uow:
            messages = list(
                (
                    await uow.session.scalars(
                        select(Message)
                        .where(
                            or_(Message.status == "queued", Message.status == "sending"),
                            Message.next_attempt_at <= now,  # for 'sending': its lease ran out
                        )
                        .order_by(Message.next_attempt_at)
                        .limit(self.batch)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
            )
            for message in messages:
                message.status = "sending"
                message.next_attempt_at = now + self.lease
        return messages

    async def _send_one(self, message: Message) -> None:
        async with self._slots:
            with correlation(message.correlation_id):
                channel = Channel(message.channels[0])
                try:
                    outgoing, language, fell_back = self._compose(message, channel)
                    provider_id = await self.providers[channel].send(outgoing)
                except TransientSendError as exc:
                    await self._retry(message, exc.reason, exc.retry_after)
                except (PermanentSendError, TemplateMissingError) as exc:
                    await self._give_up_on_channel(message, channel, str(exc))
                else:
                    await self._sent(message, channel, language, fell_back, provider_id)

    def _compose(self, message: Message, channel: Channel) -> tuple[Outgoing, str, bool]:
        variables = {
            **message.variables,
            "family_name": message.family_name.split()[0] if message.family_name else "",
            "unsubscribe_url": f"{self.rt.settings.public_base_url}/api/v1/messages/"
            f"{message.id}/unsubscribe",
        }
        if channel == Channel.sms:
            body = render(message.kind, message.language, "sms", **variables)
            assert message.phone
            return Outgoing(message.phone, "", body.text, None, message.id), body.language, \
                body.fell_back
        subject = render(message.kind, message.language, "subject", **variables)
        text = render(message.kind, message.language, "txt", **variables)
        html = render(message.kind, message.language, "html", **variables)
        assert message.email
        return (
            Outgoing(message.email, subject.text, text.text, html.text, message.id),
            text.language,
            text.fell_back,
        )

    async def _sent(self, message: Message, channel: Channel, language: str, fell_back: bool,
                    provider_id: str) -> None:
        async with self.rt.unit_of_work() as uow:
            row = await self._reload(uow, message)
            row.status = "sent"
            row.channel = channel
            row.used_language = language
            row.fell_back = fell_back
            row.provider_id = provider_id
            row.attempts += 1
            row.sent_at = utcnow()
            self._emit(uow, row, NotificationSent(
                notification_id=row.id, outreach_id=row.outreach_id, family_id=row.family_id,
                referral_id=row.referral_id, channel=channel, language=language,
                fell_back_to_english=fell_back))
        NOTIFICATIONS.labels(channel.value, "sent").inc()

    async def _retry(self, message: Message, reason: str, retry_after: float | None) -> None:
        if message.attempts + 1 >= self.max_attempts:
            await self._give_up_on_channel(message, Channel(message.channels[0]),
                                           f"gave up after {message.attempts + 1} tries: {reason}")
            return
        delay = retry_after or self.retry_base_seconds * 2**message.attempts
        async with self.rt.unit_of_work() as uow:
            row = await self._reload(uow, message)
            row.status = "queued"
            row.attempts += 1
            row.last_error = reason
            row.next_attempt_at = utcnow() + timedelta(seconds=delay * random.uniform(0.8, 1.2))
        NOTIFICATIONS.labels(message.channels[0], "retried").inc()

    async def _give_up_on_channel(self, message: Message, channel: Channel, reason: str) -> None:
        async with self.rt.unit_of_work() as uow:
            row = await self._reload(uow, message)
            row.last_error = reason[:500]
            row.attempts += 1
            remaining = row.channels[1:]
            if remaining:  # fall back to the family's other consented channel
                row.channels = remaining
                row.status = "queued"
                row.next_attempt_at = utcnow()
            else:
                row.status = "failed"
                self._emit(uow, row, NotificationFailed(
                    notification_id=row.id, outreach_id=row.outreach_id,
                    family_id=row.family_id, referral_id=row.referral_id, channel=channel,
                    reason=reason[:200], permanent=True))
        NOTIFICATIONS.labels(channel.value, "failed").inc()
        if remaining:
            self.wake.set()

    async def _reload(self, uow: UnitOfWork, message: Message) -> Message:
        row = await uow.session.get(Message, message.id, with_for_update=True)
        assert row is not None
        return row

    @staticmethod
    def _emit(uow: UnitOfWork, row: Message, event: NotificationSent | NotificationFailed) -> None:
        uow.emit(event, district=row.district_id, school=row.school_id, subject=row.outreach_id,
                 correlation=row.correlation_id, causation=row.causation_id)
