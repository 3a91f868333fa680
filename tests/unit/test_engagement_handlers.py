"""Every consumer handler of engagement, through an in-memory unit of work: no NATS, no server,
milliseconds each."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from support.uow import HandlerBench

from contracts.events import (
    FamilyContacted,
    FamilyOptedIn,
    FamilyOptedOut,
    FamilyReplied,
    FamilyRsvped,
    FamilyUnreachable,
    NotificationFailed,
    NotificationSent,
    OutreachRequested,
    PartnerMatched,
)
from contracts.taxonomy import Channel, ContactKind, Need, Urgency
from runtime.districts import load_districts
from runtime.errors import RetryLater
from runtime.settings import Settings
from services.engagement import handlers
from services.engagement.deps import EngagementDeps
from services.engagement.settings import EngagementSettings
from services.engagement.tables import (
    Base,
    ContactLogEntry,
    Family,
    Invitation,
    Outreach,
    UnassignedReply,
)

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
PHONE = "+14155550134"


@pytest.fixture
async def bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(Base.metadata) as bench:
        yield bench


@pytest.fixture
def deps() -> EngagementDeps:
    return EngagementDeps(load_districts(Settings().districts_file),
                          EngagementSettings(outreach_reply_wait_seconds=3600), clock=lambda: NOW)


async def add(bench: HandlerBench, *rows: Any) -> None:
    async with bench.unit_of_work() as uow:
        uow.session.add_all(rows)


def family(family_id: str = "fam-1", district: str = "d001", **fields: Any) -> Family:
    return Family(**{
        "id": family_id, "district_id": district, "school_id": "lincoln-es",
        "name": "Maria Garcia", "preferred_language": "es", "phone": PHONE,
        "email": "garcia@example.org", "preferred_channel": "sms", "sms_consent": True,
        "email_consent": True, "sms_opted_out": False, "email_opted_out": False,
        "created_at": NOW} | fields)


def outreach(outreach_id: str = "out-1", status: str = "requested", **fields: Any) -> Outreach:
    return Outreach(**{
        "id": outreach_id, "district_id": "d001", "family_id": "fam-1", "referral_id": "ref-1",
        "kind": "partner_matched", "status": status, "attempts": 1, "urgency": "routine",
        "variables": {}, "created_at": NOW, "updated_at": NOW} | fields)


def matched(family_id: str = "fam-1") -> PartnerMatched:
    return PartnerMatched(referral_id="ref-1", family_id=family_id, partner_id="p1",
                          service_id="p1-dental", partner_name="Smile Bright",
                          need=Need.dental, urgency=Urgency.urgent, score=0.9,
                          reasons=["serves lincoln-es"], attempt=1)


def replied(text: str, channel: Channel = Channel.email, **fields: Any) -> FamilyReplied:
    return FamilyReplied(**{
        "family_id": "fam-1", "school_id": "lincoln-es", "notification_id": "n-1",
        "outreach_id": "out-1", "referral_id": "ref-1", "kind": "partner_matched",
        "channel": channel, "text": text, "received_at": LATER} | fields)


async def contact_log(bench: HandlerBench) -> list[tuple[str, str, str | None]]:
    async with bench.db.transaction() as session:
        rows = (await session.scalars(select(ContactLogEntry).order_by(ContactLogEntry.at))).all()
        return [(r.kind, r.outcome, r.note) for r in rows]


async def test_a_match_for_a_registered_family_asks_notifications_for_a_first_attempt(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family())
    [request] = await bench.handle(handlers.on_partner_matched, matched(), deps)
    assert isinstance(request, OutreachRequested)
    async with bench.db.transaction() as session:
        [row] = (await session.scalars(select(Outreach))).all()
    assert (row.family_id, row.referral_id, row.status, row.attempts, row.created_at) == (
        "fam-1", "ref-1", "requested", 1, NOW)
    assert (request.outreach_id, request.family_id, request.referral_id, request.attempt) == (
        row.id, "fam-1", "ref-1", 1)
    assert request.channels == [Channel.sms, Channel.email]  # the family's preference first
    assert (request.language, request.phone, request.urgency) == ("es", PHONE, Urgency.urgent)
    assert request.variables == {"partner_name": "Smile Bright", "need": "dental",
                                 "school_name": "Lincoln Elementary"}


async def test_a_match_before_the_family_is_registered_here_is_retried_later(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(district="d002"))  # another district's family with that id
    with pytest.raises(RetryLater):
        await bench.handle(handlers.on_partner_matched, matched(), deps)
    with pytest.raises(RetryLater):
        await bench.handle(handlers.on_partner_matched, matched("fam-unknown"), deps)
    async with bench.db.transaction() as session:
        assert (await session.scalars(select(Outreach))).all() == []
    assert bench.emitted == []


async def test_a_match_for_a_family_with_no_usable_channel_makes_it_unreachable_at_once(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(sms_opted_out=True, email=None))
    [unreachable] = await bench.handle(handlers.on_partner_matched, matched(), deps)
    assert isinstance(unreachable, FamilyUnreachable)
    assert (unreachable.family_id, unreachable.referral_id, unreachable.attempts) == (
        "fam-1", "ref-1", 0)
    async with bench.db.transaction() as session:
        [row] = (await session.scalars(select(Outreach))).all()
    assert (row.status, row.id) == ("unreachable", unreachable.outreach_id)


async def test_a_sent_message_waits_for_the_familys_answer(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(), outreach())
    sent = NotificationSent(notification_id="n-1", outreach_id="out-1", family_id="fam-1",
                            referral_id="ref-1", channel=Channel.sms, language="es")
    for _ in range(2):  # redelivered: the same wait, nothing emitted
        assert await bench.handle(handlers.on_notification_sent, sent, deps) == []
        row = await bench.get(Outreach, "out-1")
        assert (row.status, row.next_check_at, row.updated_at) == (
            "awaiting_reply", NOW + timedelta(hours=1), NOW)
    bulk = sent.model_copy(update={"outreach_id": "announcement-1"})  # not a referral's
    assert await bench.handle(handlers.on_notification_sent, bulk, deps) == []


async def test_a_sent_message_does_not_reopen_an_outreach_the_family_answered(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(), outreach(status="contacted"))
    sent = NotificationSent(notification_id="n-1", outreach_id="out-1", family_id="fam-1",
                            channel=Channel.email, language="es")
    await bench.handle(handlers.on_notification_sent, sent, deps)
    row = await bench.get(Outreach, "out-1")
    assert (row.status, row.next_check_at) == ("contacted", None)


async def test_a_permanent_failure_makes_the_family_unreachable_once(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(), outreach(attempts=2))
    failed = NotificationFailed(notification_id="n-1", outreach_id="out-1", family_id="fam-1",
                                referral_id="ref-1", channel=Channel.sms, reason="30003")
    [unreachable] = await bench.handle(handlers.on_notification_failed, failed, deps)
    assert isinstance(unreachable, FamilyUnreachable)
    assert (unreachable.outreach_id, unreachable.referral_id, unreachable.attempts) == (
        "out-1", "ref-1", 2)
    row = await bench.get(Outreach, "out-1")
    assert (row.status, row.updated_at) == ("unreachable", NOW)
    assert await bench.handle(handlers.on_notification_failed, failed, deps) == []  # again


async def test_a_transient_failure_or_one_after_an_answer_changes_nothing(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(), outreach(), outreach("out-2", status="contacted"))
    transient = NotificationFailed(notification_id="n-1", outreach_id="out-1",
                                   family_id="fam-1", reason="busy", permanent=False)
    assert await bench.handle(handlers.on_notification_failed, transient, deps) == []
    answered = transient.model_copy(update={"outreach_id": "out-2", "permanent": True})
    assert await bench.handle(handlers.on_notification_failed, answered, deps) == []
    assert (await bench.get(Outreach, "out-1")).status == "requested"
    assert (await bench.get(Outreach, "out-2")).status == "contacted"


async def test_an_answer_by_email_is_a_contact_announced_once(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(), outreach(status="awaiting_reply", next_check_at=LATER))
    [contacted] = await bench.handle(handlers.on_family_replied, replied("Gracias, sí"), deps)
    assert isinstance(contacted, FamilyContacted)
    assert (contacted.family_id, contacted.referral_id, contacted.outreach_id, contacted.kind,
            contacted.contacted_at) == ("fam-1", "ref-1", "out-1", ContactKind.email, LATER)
    row = await bench.get(Outreach, "out-1")
    assert (row.status, row.next_check_at) == ("contacted", None)
    # A second answer (or the same one redelivered) is logged, not announced again.
    assert await bench.handle(handlers.on_family_replied, replied("¿A qué hora?"), deps) == []
    assert await contact_log(bench) == [("email", "reached", "Gracias, sí"),
                                        ("email", "replied", "¿A qué hora?")]


async def test_a_text_answers_the_one_outreach_open_at_the_phone(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(), outreach(status="awaiting_reply"))
    text = replied("ok", Channel.sms, outreach_id=None, phone=PHONE)
    [contacted] = await bench.handle(handlers.on_family_replied, text, deps)
    assert isinstance(contacted, FamilyContacted)
    assert (contacted.outreach_id, contacted.kind) == ("out-1", ContactKind.sms)
    assert (await bench.get(Outreach, "out-1")).status == "contacted"


async def test_a_text_that_could_answer_two_outreach_is_held_for_a_person(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(), outreach(status="awaiting_reply", reply_code="1"),
              outreach("out-2", status="awaiting_reply", reply_code="2", referral_id="ref-2",
                       created_at=LATER))
    text = replied("ok", Channel.sms, outreach_id=None, phone=PHONE)
    assert await bench.handle(handlers.on_family_replied, text, deps) == []
    [held] = [r async for r in _all(bench, UnassignedReply)]
    assert (held.status, held.candidates, held.text) == ("held", ["out-2", "out-1"], "ok")
    assert {(await bench.get(Outreach, o)).status for o in ("out-1", "out-2")} == {
        "awaiting_reply"}


async def test_an_rsvp_by_text_is_recorded_and_announced_once(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    invitation = Invitation(id="inv-1", event_id="ev-1", district_id="d001",
                            school_id="lincoln-es", family_id="fam-1", token="t",
                            reachable=True, attended=False, invited_at=NOW)
    await add(bench, family(), invitation)
    rsvp = replied("Sí, vamos", Channel.sms, outreach_id=None, referral_id=None,
                   batch_id="ev-1", kind="family_event_invitation", phone=PHONE)
    [answer] = await bench.handle(handlers.on_family_replied, rsvp, deps)
    assert isinstance(answer, FamilyRsvped)
    assert (answer.event_id, answer.family_id, answer.response, answer.via) == (
        "ev-1", "fam-1", "yes", "sms")
    row = await bench.get(Invitation, "inv-1")
    assert (row.response, row.responded_via, row.responded_at) == ("yes", "sms", LATER)
    assert await bench.handle(handlers.on_family_replied, rsvp, deps) == []  # unchanged answer
    assert [o for _, o, _ in await contact_log(bench)] == ["replied", "replied"]


async def test_a_reply_about_another_districts_family_is_ignored(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(district="d002"), outreach(status="awaiting_reply"))
    assert await bench.handle(handlers.on_family_replied, replied("yes"), deps) == []
    assert (await bench.get(Outreach, "out-1")).status == "awaiting_reply"
    assert await contact_log(bench) == []


async def test_opting_out_and_in_reaches_the_family_record_per_channel(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    await add(bench, family(), family("fam-2", district="d002"))
    out = FamilyOptedOut(family_id="fam-1", channel=Channel.sms, at=NOW)
    for _ in range(2):  # redelivered: the same
        assert await bench.handle(handlers.on_opted_out, out, deps) == []
        row = await bench.get(Family, "fam-1")
        assert (row.sms_opted_out, row.email_opted_out) == (True, False)
    email_out = FamilyOptedOut(family_id="fam-1", channel=Channel.email, at=NOW)
    await bench.handle(handlers.on_opted_out, email_out, deps)
    back_in = FamilyOptedIn(family_id="fam-1", channel=Channel.sms, at=LATER)
    assert await bench.handle(handlers.on_opted_in, back_in, deps) == []
    row = await bench.get(Family, "fam-1")
    assert (row.sms_opted_out, row.email_opted_out) == (False, True)
    elsewhere = FamilyOptedOut(family_id="fam-2", channel=Channel.sms, at=NOW)
    await bench.handle(handlers.on_opted_out, elsewhere, deps)  # d001's event, d002's family
    assert (await bench.get(Family, "fam-2")).sms_opted_out is False


def test_every_consumed_event_has_its_handler_in_the_map() -> None:
    consumed = handlers.HANDLERS
    assert consumed == {
        PartnerMatched: handlers.on_partner_matched,
        NotificationSent: handlers.on_notification_sent,
        NotificationFailed: handlers.on_notification_failed,
        FamilyReplied: handlers.on_family_replied,
        FamilyOptedOut: handlers.on_opted_out,
        FamilyOptedIn: handlers.on_opted_in,
    }


async def _all(bench: HandlerBench, entity: type[Any]) -> AsyncIterator[Any]:
    async with bench.db.transaction() as session:
        rows = (await session.scalars(select(entity))).all()
    for row in rows:
        yield row


async def test_every_event_about_an_outreach_carries_its_referrals_chain_and_subject(
        bench: HandlerBench, deps: EngagementDeps) -> None:
    """Issue 21: the outreach keeps the match's correlation id; what later happens to it (a
    reply that came in another chain, e.g. a text to the last message at a shared phone)
    stays in the referral's chain, with the referral as the subject."""
    await add(bench, family())
    match = bench.envelope(matched())
    [request] = await bench.deliver(handlers.on_partner_matched, match, deps)
    assert isinstance(request, OutreachRequested)
    [requested] = bench.emitted
    assert (requested.correlationid, requested.causationid, requested.subject) == (
        match.correlationid, match.id, "ref-1")
    row = await bench.get(Outreach, request.outreach_id)
    assert row.correlation_id == match.correlationid

    other_chain = bench.envelope(replied("sí", outreach_id=request.outreach_id))
    assert other_chain.correlationid != match.correlationid
    [contacted] = await bench.deliver(handlers.on_family_replied, other_chain, deps)
    assert isinstance(contacted, FamilyContacted)
    announced = bench.emitted[-1]
    assert (announced.correlationid, announced.causationid, announced.subject) == (
        match.correlationid, other_chain.id, "ref-1")
