"""Each insights handler keeps its public event as one row, through an in-memory unit of work:
no NATS, milliseconds. A redelivery is the inbox's to refuse, so a handler only adds."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from support.uow import HandlerBench

from contracts.events import (
    CapacityChanged,
    Event,
    FamilyAttended,
    FamilyContacted,
    FamilyEventScheduled,
    FamilyOptedIn,
    FamilyOptedOut,
    FamilyRegistered,
    FamilyRsvped,
    FamilyUnreachable,
    NoPartnerAvailable,
    NotificationDelivered,
    NotificationFailed,
    NotificationSent,
    PartnerMatched,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralDeclined,
    ReferralInService,
    ReferralOpened,
)
from contracts.taxonomy import Channel, Consent, ContactKind, Need, Outcome, Urgency
from services.insights import handlers
from services.insights.tables import (
    Base,
    CapacityFact,
    FamilyEventFact,
    FamilyFact,
    MessageFact,
    ReferralFact,
    ResponseFact,
    StepFact,
)

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


@pytest.fixture
async def bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(Base.metadata) as bench:
        yield bench


async def kept(bench: HandlerBench, event: Event, table: type[Any], *,
               school: str | None = "lincoln-es") -> list[Any]:
    handler = handlers.HANDLERS[type(event)]
    emitted = await bench.handle(handler, event, None, school=school, at=NOW)
    assert emitted == []  # insights publishes no event from a handler
    async with bench.db.transaction() as session:
        return list((await session.scalars(select(table))).all())


async def test_every_handled_event_is_public_and_each_has_a_test() -> None:
    assert all(not cls.internal for cls in handlers.HANDLERS)
    names = {f.__name__ for f in handlers.HANDLERS.values()}
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_on_")}
    assert names == tested


async def test_on_referral_opened(bench: HandlerBench) -> None:
    [row] = await kept(bench, ReferralOpened(
        referral_id="r1", school_id="lincoln-es", student_ref="stu-1", family_id="f1",
        need=Need.dental, urgency=Urgency.routine, consent=Consent.given, opened_at=NOW),
        ReferralFact)
    assert (row.referral_id, row.school_id, row.need, row.opened_at) == \
        ("r1", "lincoln-es", "dental", NOW)
    assert not hasattr(row, "student_ref")  # no student reference is kept


async def test_on_partner_matched(bench: HandlerBench) -> None:
    [row] = await kept(bench, PartnerMatched(
        referral_id="r1", family_id="f1", partner_id="p1", service_id="s1",
        partner_name="Smile Bright", need=Need.dental, urgency=Urgency.routine, score=1.0,
        reasons=[], attempt=1), StepFact)
    assert (row.step, row.partner_id, row.partner_name, row.service_id, row.need, row.at) == \
        ("matched", "p1", "Smile Bright", "s1", "dental", NOW)


async def test_on_no_partner(bench: HandlerBench) -> None:
    [row] = await kept(bench, NoPartnerAvailable(referral_id="r1", family_id="f1",
                                                 need=Need.housing, reason="none"), StepFact)
    assert (row.step, row.need) == ("no_partner", "housing")


async def test_on_referral_accepted(bench: HandlerBench) -> None:
    [row] = await kept(bench, ReferralAccepted(referral_id="r1", partner_id="p1"), StepFact)
    assert (row.step, row.partner_id, row.at) == ("accepted", "p1", NOW)


async def test_on_referral_declined(bench: HandlerBench) -> None:
    [row] = await kept(bench, ReferralDeclined(referral_id="r1", partner_id="p1",
                                               reason="full"), StepFact)
    assert (row.step, row.partner_id) == ("declined", "p1")


async def test_on_referral_in_service(bench: HandlerBench) -> None:
    [row] = await kept(bench, ReferralInService(referral_id="r1", partner_id="p1"), StepFact)
    assert row.step == "in_service"


async def test_on_referral_closed(bench: HandlerBench) -> None:
    closed_at = NOW - timedelta(hours=2)
    [row] = await kept(bench, ReferralClosed(referral_id="r1", outcome=Outcome.services_received,
                                             closed_at=closed_at), StepFact)
    assert (row.step, row.outcome, row.at) == ("closed", "services_received", closed_at)


async def test_on_referral_cancelled(bench: HandlerBench) -> None:
    [row] = await kept(bench, ReferralCancelled(referral_id="r1", reason="duplicate"), StepFact)
    assert row.step == "cancelled"


async def test_on_family_contacted(bench: HandlerBench) -> None:
    at = NOW - timedelta(days=1)
    [row] = await kept(bench, FamilyContacted(family_id="f1", referral_id="r1",
                                              kind=ContactKind.sms, contacted_at=at), StepFact)
    assert (row.step, row.at) == ("contacted", at)
    # A contact about no referral is not on a referral's timeline.
    rows = await kept(bench, FamilyContacted(family_id="f1", kind=ContactKind.sms,
                                             contacted_at=at), StepFact)
    assert len(rows) == 1


async def test_on_family_unreachable(bench: HandlerBench) -> None:
    [row] = await kept(bench, FamilyUnreachable(family_id="f1", referral_id="r1",
                                                outreach_id="o1", attempts=3), StepFact,
                       school=None)
    assert (row.step, row.school_id) == ("unreachable", None)


async def test_on_capacity_changed(bench: HandlerBench) -> None:
    [row] = await kept(bench, CapacityChanged(partner_id="p1", service_id="s1",
                                              school_id="lincoln-es", capacity=5, reserved=2),
                       CapacityFact)
    assert (row.service_id, row.school_id, row.capacity, row.reserved) == \
        ("s1", "lincoln-es", 5, 2)


async def test_on_family_registered(bench: HandlerBench) -> None:
    [row] = await kept(bench, FamilyRegistered(family_id="f1", school_id="lincoln-es",
                                               preferred_language="es",
                                               preferred_channel=Channel.sms), FamilyFact)
    assert (row.family_id, row.language, row.channel) == ("f1", "es", "sms")


async def test_on_family_event_scheduled(bench: HandlerBench) -> None:
    [row] = await kept(bench, FamilyEventScheduled(event_id="e1", school_id="lincoln-es",
                                                   title="Reading night", starts_at=NOW),
                       FamilyEventFact)
    assert (row.family_event_id, row.title, row.starts_at) == ("e1", "Reading night", NOW)


async def test_on_family_rsvped(bench: HandlerBench) -> None:
    [yes] = await kept(bench, FamilyRsvped(event_id="e1", family_id="f1", response="yes",
                                           via="sms"), ResponseFact)
    assert yes.kind == "rsvp_yes"
    rows = await kept(bench, FamilyRsvped(event_id="e1", family_id="f1", response="no",
                                          via="link"), ResponseFact)
    assert sorted(r.kind for r in rows) == ["rsvp_no", "rsvp_yes"]


async def test_on_family_attended(bench: HandlerBench) -> None:
    [row] = await kept(bench, FamilyAttended(event_id="e1", family_id="f1"), ResponseFact)
    assert (row.kind, row.family_event_id) == ("attended", "e1")


async def test_on_notification_sent(bench: HandlerBench) -> None:
    [row] = await kept(bench, NotificationSent(notification_id="n1", outreach_id="o1",
                                               family_id="f1", channel=Channel.email,
                                               language="vi"), MessageFact)
    assert (row.kind, row.channel, row.language) == ("sent", "email", "vi")


async def test_on_notification_failed(bench: HandlerBench) -> None:
    [row] = await kept(bench, NotificationFailed(notification_id="n1", outreach_id="o1",
                                                 family_id="f1", reason="550"), MessageFact)
    assert (row.kind, row.channel, row.permanent) == ("failed", None, True)


async def test_on_notification_delivered(bench: HandlerBench) -> None:
    at = NOW - timedelta(minutes=5)
    [row] = await kept(bench, NotificationDelivered(notification_id="n1", outreach_id="o1",
                                                    family_id="f1", channel=Channel.sms,
                                                    delivered_at=at), MessageFact)
    assert (row.kind, row.at) == ("delivered", at)


async def test_on_family_opted_out(bench: HandlerBench) -> None:
    [row] = await kept(bench, FamilyOptedOut(family_id="f1", channel=Channel.sms, at=NOW),
                       MessageFact)
    assert (row.kind, row.channel) == ("opted_out", "sms")


async def test_on_family_opted_in(bench: HandlerBench) -> None:
    [row] = await kept(bench, FamilyOptedIn(family_id="f1", channel=Channel.sms, at=NOW),
                       MessageFact)
    assert row.kind == "opted_in"
