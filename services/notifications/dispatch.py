"""The dispatcher: sends queued messages in batches, holds routine ones through quiet hours and
the daily cap, retries transient failures with back-off and jitter, falls back to the other
channel when one fails for good or is opted out, and reports each end as an event.

Sending happens outside any transaction: a batch is claimed with a lease, sent, then every
outcome of the batch is committed with its events in one transaction. A process that dies
between the send and the commit sends again when the lease runs out (at-least-once; the SMTP
Message-ID and the SMS idempotency token carry the message's key so the relay or provider can
tell, and the development provider and Twilio drop the repeat).
"""

import asyncio
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr

from jinja2 import UndefinedError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import NotificationFailed, NotificationSent
from contracts.taxonomy import Channel
from runtime import tracing
from runtime.db import Clock, key_in, utcnow
from runtime.errors import describe_error
from runtime.logs import correlation
from runtime.outbox import UnitOfWork
from runtime.periodic import Periodic
from runtime.service import ServiceRuntime
from services.notifications.claims import Due, claim, record, still_sending
from services.notifications.delivery import apply_status, lock_provider_ids, move
from services.notifications.errors import PermanentSendError, SendError, TransientSendError
from services.notifications.lifecycle import (
    PENDING,
    GaveUp,
    MessageStatus,
    Requeued,
)
from services.notifications.lifecycle import Sent as SentFact
from services.notifications.metrics import BACKLOG, NOTIFICATIONS
from services.notifications.opt_outs import TRANSACTIONAL, record_opt_out
from services.notifications.policy import Hold, Holds, Routed
from services.notifications.providers import Outgoing, Provider
from services.notifications.rendering import TemplateMissingError, render
from services.notifications.settings import NotificationsSettings
from services.notifications.sms_segments import count_segments
from services.notifications.tables import EarlyStatus, InboundSeen, Message, OptOut
from services.notifications.twilio import TWILIO_UNSUBSCRIBED

log = logging.getLogger("ensemble.notifications.dispatch")

# Answers to the family's own STOP/START: they go at once, even to an opted-out number.
KEEP_EARLY_STATUSES = timedelta(days=1)
KEEP_WEBHOOK_IDS = timedelta(days=7)
POLL_SECONDS = 0.5  # between rounds when nothing woke the dispatcher
GAUGE_SECONDS = 5.0
PRUNE_SECONDS = 3600.0


@dataclass
class Sent:
    channel: Channel
    language: str
    fell_back: bool
    provider_id: str
    segments: int | None = None
    encoding: str | None = None


@dataclass
class Retry:
    channel: Channel
    reason: str
    retry_after: float | None


@dataclass
class GiveUp:
    channel: Channel | None
    reason: str
    opted_out: bool = False  # the provider says the family unsubscribed (Twilio 21610)


Outcome = Sent | Retry | GiveUp | Hold


@dataclass
class _Planned:
    message: Due
    channel: Channel
    outgoing: Outgoing
    language: str
    fell_back: bool
    segments: int | None = None
    encoding: str | None = None


class Dispatcher:
    def __init__(
        self,
        rt: ServiceRuntime,
        providers: dict[Channel, Provider],
        settings: NotificationsSettings | None = None,
        *,
        clock: Clock = utcnow,
        lease: timedelta = timedelta(seconds=120),
    ) -> None:
        self.rt = rt
        self.providers = providers
        self.settings = settings or NotificationsSettings.of(rt.settings)
        self.clock = clock
        self.lease = lease
        self.holds = Holds(self.settings, rt.districts)
        self.worker = Periodic("notifications dispatch", self._round, POLL_SECONDS)
        self._last_gauge = self._last_prune = 0.0
        _, address = parseaddr(rt.settings.email_from)
        self.reply_domain = address.rpartition("@")[2] or "ensemble.local"

    def wake(self) -> None:
        """Send what was just queued without waiting for the next round."""
        self.worker.wake()

    async def run(self) -> None:
        try:
            await self.worker.run()
        finally:  # the service is stopping: close the providers' connections
            for provider in self.providers.values():
                await provider.aclose()

    async def _round(self) -> bool:
        """Due messages, a batch at a time (a full batch is followed by another at once); the
        backlog gauge every few seconds and the hourly pruning between batches."""
        loop = asyncio.get_running_loop()
        full = await self.dispatch_due() == self.settings.dispatch_batch
        if loop.time() - self._last_gauge > GAUGE_SECONDS:
            self._last_gauge = loop.time()
            await self.update_backlog()
        if loop.time() - self._last_prune > PRUNE_SECONDS:
            self._last_prune = loop.time()
            await self.prune()
        return full

    async def prune(self) -> None:
        """Forget what matters only for a while: delivery reports for sends never recorded
        here (a report beats its send's record by seconds; a day-old one is not ours) and
        provider webhook ids (a provider retries a webhook for hours, not weeks)."""
        now = self.clock()
        async with self.rt.unit_of_work() as uow:
            await uow.session.execute(
                delete(EarlyStatus).where(EarlyStatus.received_at < now - KEEP_EARLY_STATUSES))
            await uow.session.execute(
                delete(InboundSeen).where(InboundSeen.at < now - KEEP_WEBHOOK_IDS))

    async def update_backlog(self) -> None:
        async with self.rt.unit_of_work() as uow:
            rows = (await uow.session.execute(
                select(Message.kind, func.count()).where(Message.status.in_(sorted(PENDING)))
                .group_by(Message.kind))).all()
        for kind in ("partner_matched", "announcement", "family_event_invitation"):
            BACKLOG.labels(kind).set(0)
        for kind, count in rows:
            BACKLOG.labels(kind).set(count)

    # --- one batch -------------------------------------------------------------------------

    async def dispatch_due(self) -> int:
        now = self.clock()
        claimed, suppressed, recent = await self._claim(now)
        if not claimed:
            return 0
        outcomes: dict[str, Outcome] = {}
        planned: dict[Channel, list[_Planned]] = defaultdict(list)
        for message in claimed:
            with correlation(message.correlation_id):
                outcome = self._plan(message, now, suppressed, recent)
            if isinstance(outcome, _Planned):
                planned[outcome.channel].append(outcome)
            else:
                outcomes[message.id] = outcome
        await asyncio.gather(*(self._send(channel, items, outcomes)
                               for channel, items in planned.items()))
        requeued = await self._apply(claimed, outcomes)
        if requeued:
            self.wake()
        return len(claimed)

    async def _claim(self, now: datetime) -> tuple[list[Due], set[tuple[str, str]],
                                                  dict[str, list[datetime]]]:
        """The round's messages, leased, with the opt-outs of their addresses and their
        families' sends of the last day: one transaction."""
        async with self.rt.unit_of_work() as uow:
            claimed = await claim(uow.session, now, now + self.lease,
                                  self.settings.dispatch_batch)
            if not claimed:
                return [], set(), {}
            suppressed = await self._suppressed(uow.session, claimed)
            recent = await self._recent_sends(uow.session, claimed, now)
        return claimed, suppressed, recent

    @staticmethod
    async def _suppressed(session: AsyncSession, messages: list[Due]) -> set[tuple[str, str]]:
        keys = {(Channel.email.value, m.email) for m in messages if m.email} | {
            (Channel.sms.value, m.phone) for m in messages if m.phone}
        if not keys:
            return set()
        rows = (await session.execute(
            select(OptOut.channel, OptOut.address).where(
                *key_in((OptOut.channel, OptOut.address), keys), OptOut.opted_out.is_(True)))).all()
        return {(c, a) for c, a in rows} & keys

    @staticmethod
    async def _recent_sends(session: AsyncSession, messages: list[Due], now: datetime
                            ) -> dict[str, list[datetime]]:
        families = sorted({m.family_id for m in messages})
        rows = (await session.execute(
            select(Message.family_id, Message.sent_at).where(
                Message.family_id.in_(families),
                Message.sent_at > now - timedelta(hours=24),
                Message.kind.not_in(TRANSACTIONAL)))).all()
        recent: dict[str, list[datetime]] = defaultdict(list)
        for family_id, sent_at in rows:
            recent[family_id].append(sent_at)
        return recent

    def hold(self, message: Routed, now: datetime,
             recent: dict[str, list[datetime]] | None = None) -> Hold | None:
        """Why and until when a routine message must wait (``policy.Holds``)."""
        return self.holds.hold(message, now, recent)

    def _plan(self, message: Due, now: datetime, suppressed: set[tuple[str, str]],
              recent: dict[str, list[datetime]]) -> Outcome | _Planned:
        hold = self.hold(message, now, recent)
        if hold:
            return hold
        channels = [Channel(c) for c in message.channels]
        if message.kind not in TRANSACTIONAL:
            channels = [c for c in channels if (c.value, self._address(message, c)) not in
                        suppressed]
        if not channels:
            return GiveUp(Channel(message.channels[0]) if message.channels else None,
                          "opted out of every channel", opted_out=False)
        channel = channels[0]
        if channel.value != message.channels[0]:
            message.channels = [c.value for c in channels]  # drop the opted-out ones
        try:
            planned = self._compose(message, channel)
        except (TemplateMissingError, UndefinedError) as exc:
            return GiveUp(channel, f"template: {type(exc).__name__}: {exc}"[:200])
        if message.kind not in TRANSACTIONAL:
            recent[message.family_id].append(now)
        return planned

    @staticmethod
    def _address(message: Due, channel: Channel) -> str | None:
        return message.email if channel == Channel.email else message.phone

    def unsubscribe_url(self, message: Due) -> str:
        return (f"{self.rt.settings.public_base_url}/api/v1/messages/{message.id}/unsubscribe"
                f"?token={message.token}")

    def reply_address(self, message: Due) -> str:
        return f"reply+{message.id}.{message.token}@{self.reply_domain}"

    def _compose(self, message: Due, channel: Channel) -> _Planned:
        variables = {
            "reply_code": "",  # engagement names one only when several outreach share a phone
            **message.variables,
            "family_name": message.family_name.split()[0] if message.family_name else "",
            "unsubscribe_url": self.unsubscribe_url(message),
        }
        if channel == Channel.sms:
            if not message.phone:
                raise TemplateMissingError("no phone number for sms")
            body = render(message.kind, message.language, "sms", **variables)
            length = count_segments(body.text)
            return _Planned(message, channel, Outgoing(message.phone, "", body.text, None,
                                                       message.id, trace=message.trace()),
                            body.language, body.fell_back, length.segments, length.encoding)
        if not message.email:
            raise TemplateMissingError("no email address")
        subject = render(message.kind, message.language, "subject", **variables)
        text = render(message.kind, message.language, "txt", **variables)
        html = render(message.kind, message.language, "html", **variables)
        unsubscribe = self.unsubscribe_url(message)
        headers = {
            "Reply-To": self.reply_address(message),
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Content-Language": text.language,
        }
        outgoing = Outgoing(message.email, subject.text, text.text, html.text, message.id,
                            headers, message.trace())
        return _Planned(message, channel, outgoing, text.language, text.fell_back)

    async def _send(self, channel: Channel, items: list[_Planned],
                    outcomes: dict[str, Outcome]) -> None:
        try:
            results = await self.providers[channel].send_many([p.outgoing for p in items])
        except Exception as exc:  # a provider bug must not lose the batch: retry it later
            log.warning("%s provider failed (%s)", channel.value, describe_error(exc))
            results = [TransientSendError(f"provider error: {type(exc).__name__}")] * len(items)
        for item, result in zip(items, results, strict=True):
            outcomes[item.message.id] = self._outcome(item, result)

    @staticmethod
    def _outcome(item: _Planned, result: str | SendError) -> Outcome:
        if isinstance(result, TransientSendError):
            return Retry(item.channel, result.reason, result.retry_after)
        if isinstance(result, PermanentSendError):
            return GiveUp(item.channel, result.reason, opted_out=result.code == TWILIO_UNSUBSCRIBED)
        if isinstance(result, SendError):
            return Retry(item.channel, result.reason, None)
        return Sent(item.channel, item.language, item.fell_back, result, item.segments,
                    item.encoding)

    # --- commit every outcome of the batch at once ------------------------------------------

    async def _apply(self, claimed: list[Due], outcomes: dict[str, Outcome]) -> bool:
        now = self.clock()
        requeued = False
        counts: dict[tuple[str, str], int] = defaultdict(int)
        async with self.rt.unit_of_work() as uow:
            live = await still_sending(uow.session, [m.id for m in claimed])
            changed: list[Due] = []
            for row in claimed:
                outcome = outcomes.get(row.id)
                if outcome is None or row.id not in live:
                    continue  # moved on meanwhile (a report): the outcome is too late
                match outcome:
                    case Sent():
                        self._sent(uow, row, outcome, now)
                    case Hold():
                        move(row, Requeued())
                        row.held_reason = outcome.reason
                        row.next_attempt_at = outcome.until
                    case Retry():
                        requeued |= self._retry(uow, row, outcome, now)
                    case GiveUp():
                        if outcome.opted_out and outcome.channel:
                            await self._opt_out(uow, row, outcome.channel, now)
                        requeued |= self._give_up(uow, row, outcome, now)
                changed.append(row)
                counts[(self._label(outcome), type(outcome).__name__)] += 1
            await record(uow.session, changed)
            await self._apply_early_statuses(uow, changed, now)
        for (channel, kind), n in counts.items():
            result = {"Sent": "sent", "Hold": "held", "Retry": "retried", "GiveUp": "failed"}[kind]
            NOTIFICATIONS.labels(channel, result).inc(n)
        return requeued

    async def _apply_early_statuses(self, uow: UnitOfWork, rows: list[Due],
                                    now: datetime) -> None:
        """Delivery reports that came in before this batch's sends were recorded (rare: the
        messages they concern are then loaded as objects, after the round's record)."""
        sent = {row.provider_id: row.id for row in rows
                if row.status == MessageStatus.sent and row.provider_id
                and row.channel == Channel.sms}
        if not sent:
            return
        await lock_provider_ids(uow.session, sorted(sent))
        early = (await uow.session.scalars(
            select(EarlyStatus).where(EarlyStatus.sid.in_(sorted(sent))))).all()
        if not early:
            return
        messages = {m.provider_id: m for m in (await uow.session.scalars(
            select(Message).where(Message.id.in_([sent[r.sid] for r in early])))).all()}
        for report in early:
            await apply_status(uow, self.wake, messages[report.sid], report.status,
                               report.error_code, now)
            await uow.session.delete(report)

    @staticmethod
    def _label(outcome: Outcome) -> str:
        channel = getattr(outcome, "channel", None)
        return channel.value if channel else "none"

    def _sent(self, uow: UnitOfWork, row: Due, outcome: Sent, now: datetime) -> None:
        move(row, SentFact())
        row.channel = outcome.channel
        row.used_language = outcome.language
        row.fell_back = outcome.fell_back
        row.provider_id = outcome.provider_id
        row.segments = outcome.segments
        row.encoding = outcome.encoding
        row.held_reason = None
        row.attempts += 1
        row.sent_at = now
        if row.batch_id is None and row.kind not in TRANSACTIONAL:
            # Bulk messages report progress by count (HTTP, metrics), not an event each.
            self._emit(uow, row, NotificationSent(
                notification_id=row.id, outreach_id=row.outreach_id, family_id=row.family_id,
                referral_id=row.referral_id, channel=outcome.channel, language=outcome.language,
                fell_back_to_english=outcome.fell_back))

    def _retry(self, uow: UnitOfWork, row: Due, outcome: Retry, now: datetime) -> bool:
        if row.attempts + 1 >= self.settings.send_max_attempts:
            return self._give_up(uow, row, GiveUp(
                outcome.channel, f"gave up after {row.attempts + 1} tries: {outcome.reason}"), now)
        own = self.settings
        delay = outcome.retry_after or min(own.send_retry_base_seconds * 2 ** row.attempts,
                                           own.send_retry_max_seconds)
        move(row, Requeued())
        row.attempts += 1
        row.last_error = outcome.reason[:500]
        row.next_attempt_at = now + timedelta(seconds=delay * random.uniform(0.75, 1.25))
        return False

    def _give_up(self, uow: UnitOfWork, row: Due, outcome: GiveUp, now: datetime) -> bool:
        row.last_error = outcome.reason[:500]
        if outcome.channel is not None:
            row.attempts += 1
        remaining = [c for c in row.channels if c != (outcome.channel or "")]
        if outcome.channel is not None and remaining:  # the family's other consented channel
            row.channels = remaining
            move(row, Requeued())
            row.next_attempt_at = now
            return True
        move(row, GaveUp())
        row.channel = outcome.channel  # the channel that failed for good, as the event says
        self._emit(uow, row, NotificationFailed(
            notification_id=row.id, outreach_id=row.outreach_id, family_id=row.family_id,
            referral_id=row.referral_id, channel=outcome.channel, reason=outcome.reason[:200],
            permanent=True))
        return False

    async def _opt_out(self, uow: UnitOfWork, row: Due, channel: Channel,
                       now: datetime) -> None:
        address = self._address(row, channel)
        if address:
            await record_opt_out(uow, row.district_id, channel, address, [row], now)

    @staticmethod
    def _emit(uow: UnitOfWork, row: Due, event: NotificationSent | NotificationFailed
              ) -> None:
        with tracing.continued(f"record {type(event).__name__}", row.trace()):
            uow.emit(event, district=row.district_id, school=row.school_id,
                     correlation=row.correlation_id, causation=row.causation_id)
