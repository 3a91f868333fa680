"""Every consumer handler of notifications, through an in-memory unit of work: no NATS, no
server, no provider, milliseconds each."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from typing import Any

import pytest
from sqlalchemy import select
from support.uow import HandlerBench

from contracts.events import (
    BulkOutreachRequested,
    BulkRecipient,
    FamilyErased,
    OutreachRequested,
    PartnerLinkRequested,
    StaffDigestRequested,
)
from contracts.taxonomy import Channel, Urgency
from runtime.districts import load_districts
from runtime.errors import Unavailable
from runtime.settings import Settings
from services.notifications import handlers
from services.notifications.deps import NotificationsDeps
from services.notifications.errors import PermanentSendError, TransientSendError
from services.notifications.policy import Holds
from services.notifications.providers import Outgoing
from services.notifications.settings import NotificationsSettings
from services.notifications.tables import Base, ErasedFamily, Message

MORNING = datetime(2026, 3, 4, 16, 1, tzinfo=UTC)  # 08:01 in Los Angeles (Lincoln Elementary)
EVENING = datetime(2026, 3, 4, 5, 30, tzinfo=UTC)  # 21:30 the evening before
QUIET_ENDS = datetime(2026, 3, 4, 16, 0, tzinfo=UTC)  # 08:00 local


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(Base.metadata) as bench:
        yield bench


@pytest.fixture
def woken() -> list[bool]:
    return []


@pytest.fixture
def deps(woken: list[bool]) -> NotificationsDeps:
    # The district's quiet hours as shipped (the suite's environment turns them off).
    own = NotificationsSettings(quiet_hours_start=time(20, 0), quiet_hours_end=time(8, 0))
    holds = Holds(own, load_districts(Settings().districts_file))
    return NotificationsDeps(holds, wake=lambda: woken.append(True), clock=Clock(MORNING))


def requested(attempt: int = 1, **fields: Any) -> OutreachRequested:
    return OutreachRequested(**{
        "outreach_id": "out-1", "family_id": "fam-1", "referral_id": "ref-1",
        "kind": "partner_matched", "language": "es", "channels": [Channel.sms, Channel.email],
        "email": "garcia@example.org", "phone": "+14155550134", "family_name": "Maria Garcia",
        "school_id": "lincoln-es", "urgency": Urgency.routine,
        "variables": {"partner_name": "Smile Bright"}, "attempt": attempt} | fields)


def bulk(*family_ids: str, **fields: Any) -> BulkOutreachRequested:
    return BulkOutreachRequested(**{
        "batch_id": "ann-1", "kind": "announcement", "urgency": Urgency.routine,
        "variables": {"title": "Snow day", "body": "Schools are closed"},
        "recipients": [BulkRecipient(family_id=f, school_id="lincoln-es", language="vi",
                                     channels=[Channel.email], email=f"{f}@example.org",
                                     family_name=f"Family {f}",
                                     variables={"school_name": "Lincoln Elementary"})
                       for f in family_ids]} | fields)


async def messages(bench: HandlerBench) -> list[Message]:
    async with bench.db.transaction() as session:
        return list((await session.scalars(
            select(Message).order_by(Message.idempotency_key))).all())


async def test_an_outreach_request_queues_one_message_and_wakes_the_dispatcher(
        bench: HandlerBench, deps: NotificationsDeps, woken: list[bool]) -> None:
    assert await bench.handle(handlers.on_outreach_requested, requested(), deps) == []
    [message] = await messages(bench)
    assert (message.idempotency_key, message.outreach_id, message.referral_id,
            message.family_id, message.district_id, message.school_id) == (
        "out-1", "out-1", "ref-1", "fam-1", "d001", "lincoln-es")
    assert (message.status, message.channels, message.phone, message.language) == (
        "queued", ["sms", "email"], "+14155550134", "es")
    assert (message.next_attempt_at, message.created_at, message.held_reason) == (
        MORNING, MORNING, None)
    assert message.variables == {"partner_name": "Smile Bright"}
    assert message.causation_id and message.correlation_id  # the request's envelope
    assert woken == [True]


async def test_a_redelivered_request_is_the_same_message_and_a_next_attempt_a_new_one(
        bench: HandlerBench, deps: NotificationsDeps, woken: list[bool]) -> None:
    await bench.handle(handlers.on_outreach_requested, requested(), deps)
    await bench.handle(handlers.on_outreach_requested, requested(), deps)
    assert [m.idempotency_key for m in await messages(bench)] == ["out-1"]
    assert woken == [True]  # nothing new, nothing to send
    await bench.handle(handlers.on_outreach_requested, requested(attempt=2), deps)
    assert [m.idempotency_key for m in await messages(bench)] == ["out-1", "out-1:2"]


async def test_a_batch_of_requests_looks_up_its_keys_and_erasures_once(
        bench: HandlerBench, deps: NotificationsDeps, woken: list[bool]) -> None:
    """As a consumer batch runs them (``PREFETCH`` first): a request already queued, one twice
    in the batch and one for an erased family each leave one message or none."""
    await bench.handle(handlers.on_outreach_requested, requested(), deps)
    async with bench.db.transaction() as session:
        session.add(ErasedFamily(district_id="d001", family_id="fam-9", erased_at=MORNING))
    batch = [bench.envelope(e) for e in (
        requested(), requested(attempt=2), requested(attempt=2),
        requested(outreach_id="out-9", family_id="fam-9"), requested(outreach_id="out-3"))]
    await bench.deliver_batch(handlers.on_outreach_requested, batch, deps,
                              prefetch=handlers.PREFETCH[OutreachRequested])
    assert [m.idempotency_key for m in await messages(bench)] == ["out-1", "out-1:2", "out-3"]


async def test_a_routine_request_in_quiet_hours_waits_and_a_crisis_does_not(
        bench: HandlerBench, deps: NotificationsDeps) -> None:
    deps.clock = Clock(EVENING)
    await bench.handle(handlers.on_outreach_requested, requested(), deps)
    await bench.handle(handlers.on_outreach_requested,
                       requested(outreach_id="out-2", urgency=Urgency.crisis), deps)
    routine, crisis = await messages(bench)
    assert (routine.status, routine.next_attempt_at, routine.held_reason) == (
        "queued", QUIET_ENDS, "quiet_hours")
    assert (crisis.status, crisis.next_attempt_at, crisis.held_reason) == (
        "queued", EVENING, None)


async def test_a_request_with_no_channel_is_failed_at_once(
        bench: HandlerBench, deps: NotificationsDeps) -> None:
    await bench.handle(handlers.on_outreach_requested, requested(channels=[]), deps)
    [message] = await messages(bench)
    assert message.status == "failed"


async def test_a_bulk_request_queues_one_message_per_family_once(
        bench: HandlerBench, deps: NotificationsDeps, woken: list[bool]) -> None:
    chunk = bulk("fam-1", "fam-2", "fam-1")  # a family listed twice gets one message
    assert await bench.handle(handlers.on_bulk, chunk, deps) == []
    first, second = await messages(bench)
    assert [m.idempotency_key for m in (first, second)] == ["ann-1:fam-1", "ann-1:fam-2"]
    assert (first.batch_id, first.outreach_id, first.kind, first.language, first.channels,
            first.email, first.family_name) == (
        "ann-1", "ann-1", "announcement", "vi", ["email"], "fam-1@example.org", "Family fam-1")
    assert first.variables == {"title": "Snow day", "body": "Schools are closed",
                               "school_name": "Lincoln Elementary"}
    assert (first.status, first.next_attempt_at) == ("queued", MORNING)
    assert woken == [True]
    await bench.handle(handlers.on_bulk, chunk, deps)  # redelivered: nothing new
    await bench.handle(handlers.on_bulk, bulk("fam-2", "fam-3"), deps)  # overlapping
    assert [m.idempotency_key for m in await messages(bench)] == [
        "ann-1:fam-1", "ann-1:fam-2", "ann-1:fam-3"]
    assert woken == [True, True]


async def test_a_routine_bulk_request_in_quiet_hours_waits_for_the_morning(
        bench: HandlerBench, deps: NotificationsDeps) -> None:
    deps.clock = Clock(EVENING)
    await bench.handle(handlers.on_bulk, bulk("fam-1"), deps)
    [message] = await messages(bench)
    assert (message.next_attempt_at, message.held_reason) == (QUIET_ENDS, "quiet_hours")


def test_every_consumed_event_has_its_handler_in_the_map() -> None:
    consumed = handlers.HANDLERS
    assert consumed == {OutreachRequested: handlers.on_outreach_requested,
                        BulkOutreachRequested: handlers.on_bulk,
                        FamilyErased: handlers.on_family_erased,
                        PartnerLinkRequested: handlers.on_partner_link_requested,
                        # tested in tests/unit/test_insights_digest.py (a real SMTP server)
                        StaffDigestRequested: handlers.on_staff_digest_requested}


async def test_what_becomes_of_a_message_stays_in_its_referrals_chain(
        bench: HandlerBench, deps: NotificationsDeps) -> None:
    """Issue 21: the message row keeps the request's correlation id; the provider's reports and
    the family's opt-out, which come in over HTTP with no chain of their own, carry it (with
    the request as their cause) and name the referral as their subject."""
    from services.notifications.delivery import apply_status
    from services.notifications.opt_outs import record_opt_out

    request = bench.envelope(requested())
    await bench.deliver(handlers.on_outreach_requested, request, deps)
    [message] = await messages(bench)
    assert (message.correlation_id, message.causation_id) == (request.correlationid, request.id)
    message.status, message.provider_id = "sent", "SM1"
    async with bench.unit_of_work() as uow:  # no cause: a provider's webhook
        row = await uow.session.merge(message)
        await apply_status(uow, lambda: None, row, "delivered", None, MORNING)
        await record_opt_out(uow, "d001", Channel.sms, "+14155550134", [row], MORNING)
    delivered, opted_out = bench.emitted
    assert delivered.type == "org.ensemble.notifications.delivered.v1"
    assert opted_out.type == "org.ensemble.notifications.family_opted_out.v1"
    for envelope in (delivered, opted_out):
        assert (envelope.correlationid, envelope.causationid) == (
            request.correlationid, request.id)
    assert (delivered.subject, opted_out.subject) == ("ref-1", "fam-1")


class Recording:
    """An e-mail provider that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, message: Outgoing) -> str:
        self.sent.append(message)
        return f"id-{len(self.sent)}"


async def test_a_partner_link_is_emailed_to_the_partner_in_its_language(
        bench: HandlerBench, deps: NotificationsDeps) -> None:
    provider = Recording()
    deps.email = provider  # type: ignore[assignment]
    event = PartnerLinkRequested(
        link_id="l-1", referral_id="ref-1", partner_id="p-1", partner_name="Sonrisa Dental",
        email="intake@sonrisa.example", language="es", need="dental", urgency=Urgency.urgent,
        url="https://ensemble.example/p/token-123", expires_at=MORNING)
    await bench.handle(handlers.on_partner_link_requested, event, deps)
    [mail] = provider.sent
    assert mail.to == "intake@sonrisa.example"
    assert mail.subject.startswith("Nueva derivación para Sonrisa Dental")
    assert "https://ensemble.example/p/token-123" in mail.text and "urgente" in mail.text
    assert mail.html and 'href="https://ensemble.example/p/token-123"' in mail.html
    assert mail.idempotency_key == "partner-link-l-1"
    assert await bench.get(Message, "l-1") is None  # no family message is queued for it


class Refusing:
    """A mail server that refuses every message, for a while or for good."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def send(self, message: Outgoing) -> str:
        raise self.error


@pytest.mark.parametrize("error, retried", [
    (TransientSendError("mail server unreachable"), True),
    (PermanentSendError("not a valid email address"), False)])
async def test_a_partner_link_the_mail_server_refuses_is_retried_or_let_go(
        bench: HandlerBench, deps: NotificationsDeps, error: Exception, retried: bool) -> None:
    deps.email = Refusing(error)  # type: ignore[assignment]
    event = PartnerLinkRequested(
        link_id="l-2", referral_id="ref-1", partner_id="p-1", partner_name="Sonrisa Dental",
        email="intake@sonrisa.example", language="en", need="dental", urgency=Urgency.routine,
        url="https://ensemble.example/p/token-456", expires_at=MORNING)
    if retried:  # delivered again until the mail server is back, with the same message key
        with pytest.raises(Unavailable):
            await bench.handle(handlers.on_partner_link_requested, event, deps)
    else:  # nothing later would change the answer: logged, and the event is done
        await bench.handle(handlers.on_partner_link_requested, event, deps)
