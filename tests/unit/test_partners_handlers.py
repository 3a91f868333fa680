"""Every consumer handler of partners, through an in-memory unit of work: no NATS, no server,
milliseconds each."""

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from support.uow import HandlerBench

from contracts.events import (
    ConsentRecorded,
    FamilyRegistered,
    NoPartnerAvailable,
    PartnerLinkRequested,
    PartnerMatched,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralDeclined,
    ReferralOpened,
)
from contracts.taxonomy import Consent, Need, Outcome, Urgency
from runtime.errors import RetryLater
from runtime.settings import Settings
from services.partners import directory, handlers
from services.partners.deps import PartnersDeps
from services.partners.links import LinkIssuer, LinkRefused, open_link, use_link
from services.partners.service import build
from services.partners.tables import (
    Base,
    FamilyLanguage,
    Partner,
    PartnerLink,
    PartnerStats,
    ReferralRequest,
    ServiceCapacity,
)

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
SCHOOL = "lincoln-es"


@pytest.fixture
async def bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(Base.metadata) as bench:
        yield bench


@pytest.fixture
def deps(tmp_path: Path) -> PartnersDeps:
    """What the service is built with (its runtime is never started: handlers do not use it)."""
    deps = build(Settings(data_dir=tmp_path), clock=lambda: NOW).deps
    assert isinstance(deps, PartnersDeps)
    return deps


async def partner(bench: HandlerBench, name: str, capacity: int = 1) -> tuple[str, str]:
    """A partner offering dental at the school: its id and its service's."""
    async with bench.db.transaction() as session:
        org, [service] = await directory.register(session, "d001", name, ["dental"], [SCHOOL],
                                                  ["en"], [], capacity)
        return org.id, service.id


def opened(referral_id: str = "r1", consent: Consent = Consent.given) -> ReferralOpened:
    return ReferralOpened(referral_id=referral_id, school_id=SCHOOL, student_ref="stu-1",
                          family_id="fam-1", need=Need.dental, urgency=Urgency.routine,
                          consent=consent, grade=3, opened_at=NOW - timedelta(hours=1))


async def reserved(bench: HandlerBench, service_id: str) -> int:
    return int((await bench.get(ServiceCapacity, (service_id, SCHOOL))).reserved)


async def stats(bench: HandlerBench, partner_id: str) -> tuple[int, int, int, int, float]:
    s = await bench.get(PartnerStats, partner_id)
    return s.matched, s.accepted, s.declined, s.active, s.accept_seconds


async def matched_to(bench: HandlerBench, deps: PartnersDeps, referral_id: str = "r1"
                     ) -> PartnerMatched:
    [event] = await bench.handle(handlers.on_referral_opened, opened(referral_id), deps)
    assert isinstance(event, PartnerMatched)
    return event


async def test_an_opened_referral_with_consent_is_matched_and_reserves_a_slot_once(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    partner_id, service_id = await partner(bench, "Smile Bright")
    envelope = bench.envelope(opened())
    [event] = await bench.deliver(handlers.on_referral_opened, envelope, deps)
    assert isinstance(event, PartnerMatched)
    assert (event.referral_id, event.family_id, event.partner_id, event.service_id,
            event.partner_name, event.need, event.urgency, event.attempt) == (
        "r1", "fam-1", partner_id, service_id, "Smile Bright", Need.dental, Urgency.routine, 1)
    assert event.score > 0 and event.reasons
    request = await bench.get(ReferralRequest, "r1")
    assert (request.state, request.partner_id, request.service_id, request.tried_partners) == (
        "matched", partner_id, service_id, [partner_id])
    assert (request.matched_at, request.updated_at, request.attempts) == (NOW, NOW, 1)
    assert await reserved(bench, service_id) == 1
    assert await stats(bench, partner_id) == (1, 0, 0, 1, 0.0)

    assert await bench.deliver(handlers.on_referral_opened, envelope, deps) == []  # again
    assert await reserved(bench, service_id) == 1
    assert await stats(bench, partner_id) == (1, 0, 0, 1, 0.0)


async def test_an_opened_referral_without_consent_waits_or_stops(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    _, service_id = await partner(bench, "Smile Bright")
    assert await bench.handle(handlers.on_referral_opened, opened("r1", Consent.pending),
                              deps) == []
    assert await bench.handle(handlers.on_referral_opened, opened("r2", Consent.declined),
                              deps) == []
    assert (await bench.get(ReferralRequest, "r1")).state == "awaiting_consent"
    assert (await bench.get(ReferralRequest, "r2")).state == "consent_declined"
    assert (await bench.get(ReferralRequest, "r1")).updated_at == NOW
    assert await reserved(bench, service_id) == 0


async def test_no_partner_for_the_need_says_why(bench: HandlerBench,
                                                deps: PartnersDeps) -> None:
    [event] = await bench.handle(handlers.on_referral_opened, opened(), deps)
    assert isinstance(event, NoPartnerAvailable)
    assert (event.referral_id, event.family_id, event.need, event.candidates_considered) == (
        "r1", "fam-1", Need.dental, 0)
    assert event.reason == "no active partner offers dental in this district"
    request = await bench.get(ReferralRequest, "r1")
    assert (request.state, request.last_result, request.partner_id) == (
        "no_partner", "no_partner", None)


async def test_consent_given_later_matches_and_withdrawn_releases_the_slot(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    partner_id, service_id = await partner(bench, "Smile Bright")
    given = ConsentRecorded(referral_id="r1", consent=Consent.given, recorded_by="staff-1",
                            recorded_at=NOW)
    with pytest.raises(RetryLater):  # overtook the ReferralOpened it follows
        await bench.handle(handlers.on_consent, given, deps)
    await bench.handle(handlers.on_referral_opened, opened(consent=Consent.pending), deps)
    [event] = await bench.handle(handlers.on_consent, given, deps)
    assert isinstance(event, PartnerMatched) and event.partner_id == partner_id
    assert await reserved(bench, service_id) == 1

    withdrawn_at = NOW + timedelta(days=1)
    withdrawn = ConsentRecorded(referral_id="r1", consent=Consent.declined,
                                recorded_by="staff-1", recorded_at=withdrawn_at)
    assert await bench.handle(handlers.on_consent, withdrawn, deps) == []
    request = await bench.get(ReferralRequest, "r1")
    assert (request.state, request.consent, request.partner_id, request.updated_at) == (
        "consent_declined", "declined", None, withdrawn_at)
    assert await reserved(bench, service_id) == 0
    assert await stats(bench, partner_id) == (1, 0, 0, 0, 0.0)
    assert await bench.handle(handlers.on_consent, withdrawn, deps) == []  # redelivered
    assert await reserved(bench, service_id) == 0
    assert await stats(bench, partner_id) == (1, 0, 0, 0, 0.0)


async def test_consent_after_the_referral_ended_changes_nothing(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    await partner(bench, "Smile Bright")
    await bench.handle(handlers.on_referral_opened, opened(consent=Consent.pending), deps)
    await bench.handle(handlers.on_referral_cancelled, ReferralCancelled(
        referral_id="r1", reason="withdrawn"), deps)
    given = ConsentRecorded(referral_id="r1", consent=Consent.given, recorded_by="staff-1",
                            recorded_at=NOW)
    assert await bench.handle(handlers.on_consent, given, deps) == []
    request = await bench.get(ReferralRequest, "r1")
    assert (request.state, request.consent) == ("ended", "pending")


async def test_a_decline_matches_the_next_partner_and_a_late_one_is_ignored(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    await partner(bench, "Smile Bright")
    await partner(bench, "Tooth Fairy")
    first = await matched_to(bench, deps)
    decline = ReferralDeclined(referral_id="r1", partner_id=first.partner_id,
                               service_id=first.service_id, reason="no_capacity")
    [second] = await bench.handle(handlers.on_declined, decline, deps)
    assert isinstance(second, PartnerMatched)
    assert second.attempt == 2 and second.partner_id != first.partner_id
    request = await bench.get(ReferralRequest, "r1")
    assert (request.declines, request.partner_id, request.tried_partners) == (
        1, second.partner_id, [first.partner_id, second.partner_id])
    assert await reserved(bench, first.service_id) == 0
    assert await reserved(bench, second.service_id) == 1
    assert await stats(bench, first.partner_id) == (1, 0, 1, 0, 0.0)
    assert await stats(bench, second.partner_id) == (1, 0, 0, 1, 0.0)

    assert await bench.handle(handlers.on_declined, decline, deps) == []  # the old partner's
    assert (await bench.get(ReferralRequest, "r1")).declines == 1
    assert await stats(bench, first.partner_id) == (1, 0, 1, 0, 0.0)


async def test_the_last_partner_declining_leaves_no_partner(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    partner_id, service_id = await partner(bench, "Smile Bright")
    await matched_to(bench, deps)
    decline = ReferralDeclined(referral_id="r1", partner_id=partner_id, reason="no_capacity")
    [event] = await bench.handle(handlers.on_declined, decline, deps)
    assert isinstance(event, NoPartnerAvailable) and event.candidates_considered == 1
    assert (await bench.get(ReferralRequest, "r1")).state == "no_partner"
    assert await reserved(bench, service_id) == 0


async def test_a_decline_for_an_unknown_referral_is_retried_later(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    with pytest.raises(RetryLater):
        await bench.handle(handlers.on_declined, ReferralDeclined(
            referral_id="r1", partner_id="p1", reason="no_capacity"), deps)


async def test_an_acceptance_is_counted_once_with_how_long_it_took(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    partner_id, _ = await partner(bench, "Smile Bright")
    await matched_to(bench, deps)
    accepted = bench.envelope(ReferralAccepted(referral_id="r1", partner_id=partner_id),
                              at=NOW + timedelta(hours=2))
    assert await bench.deliver(handlers.on_accepted, accepted, deps) == []
    assert (await bench.get(ReferralRequest, "r1")).accepted
    assert await stats(bench, partner_id) == (1, 1, 0, 1, 7200.0)
    assert await bench.deliver(handlers.on_accepted, accepted, deps) == []  # redelivered
    assert await stats(bench, partner_id) == (1, 1, 0, 1, 7200.0)


async def test_an_acceptance_by_another_partner_or_of_an_unknown_referral(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    partner_id, _ = await partner(bench, "Smile Bright")
    with pytest.raises(RetryLater):
        await bench.handle(handlers.on_accepted, ReferralAccepted(
            referral_id="r1", partner_id=partner_id), deps)
    await matched_to(bench, deps)
    await bench.handle(handlers.on_accepted, ReferralAccepted(
        referral_id="r1", partner_id="someone-else"), deps)
    assert not (await bench.get(ReferralRequest, "r1")).accepted
    assert await stats(bench, partner_id) == (1, 0, 0, 1, 0.0)


async def test_a_closed_referral_ends_and_frees_its_slot_once(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    partner_id, service_id = await partner(bench, "Smile Bright")
    await matched_to(bench, deps)
    closed_at = NOW + timedelta(days=20)
    closed = ReferralClosed(referral_id="r1", outcome=Outcome.services_received,
                            partner_id=partner_id, service_id=service_id, closed_at=closed_at)
    assert await bench.handle(handlers.on_referral_closed, closed, deps) == []
    request = await bench.get(ReferralRequest, "r1")
    assert (request.state, request.outcome, request.closed_at, request.updated_at) == (
        "ended", "services_received", closed_at, closed_at)
    assert await reserved(bench, service_id) == 0
    assert await stats(bench, partner_id) == (1, 0, 0, 0, 0.0)
    assert await bench.handle(handlers.on_referral_closed, closed, deps) == []  # redelivered
    assert await reserved(bench, service_id) == 0
    assert await stats(bench, partner_id) == (1, 0, 0, 0, 0.0)


async def test_a_close_for_an_unknown_referral_or_another_district_is_retried_later(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    closed = ReferralClosed(referral_id="r1", outcome=Outcome.no_longer_needed, closed_at=NOW)
    with pytest.raises(RetryLater):
        await bench.handle(handlers.on_referral_closed, closed, deps)
    await bench.handle(handlers.on_referral_opened, opened(consent=Consent.pending), deps)
    with pytest.raises(RetryLater):
        await bench.handle(handlers.on_referral_closed, closed, deps, district="d002")
    assert (await bench.get(ReferralRequest, "r1")).state == "awaiting_consent"


async def test_a_cancelled_referral_ends_and_frees_its_slot_at_the_clocks_time(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    partner_id, service_id = await partner(bench, "Smile Bright")
    await matched_to(bench, deps)
    cancelled_at = NOW + timedelta(hours=3)
    cancelled = bench.envelope(ReferralCancelled(referral_id="r1", reason="withdrawn"),
                               at=cancelled_at)
    assert await bench.deliver(handlers.on_referral_cancelled, cancelled, deps) == []
    request = await bench.get(ReferralRequest, "r1")
    assert (request.state, request.closed_at, request.updated_at, request.partner_id) == (
        "ended", cancelled_at, NOW, None)
    assert await reserved(bench, service_id) == 0
    assert await bench.deliver(handlers.on_referral_cancelled, cancelled, deps) == []
    assert await reserved(bench, service_id) == 0
    assert await stats(bench, partner_id) == (1, 0, 0, 0, 0.0)
    with pytest.raises(RetryLater):
        await bench.handle(handlers.on_referral_cancelled, ReferralCancelled(
            referral_id="r2", reason="withdrawn"), deps)


async def test_a_family_language_is_kept_and_follows_changes(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    event = FamilyRegistered(family_id="fam-1", school_id=SCHOOL, preferred_language="es")
    assert await bench.handle(handlers.on_family_registered, event, deps) == []
    assert await bench.handle(handlers.on_family_registered, event, deps) == []
    assert (await bench.get(FamilyLanguage, ("d001", "fam-1"))).language == "es"
    changed = FamilyRegistered(family_id="fam-1", school_id=SCHOOL, preferred_language="vi")
    await bench.handle(handlers.on_family_registered, changed, deps)
    assert (await bench.get(FamilyLanguage, ("d001", "fam-1"))).language == "vi"
    assert await bench.get(FamilyLanguage, ("d002", "fam-1")) is None


def matches(result: str, district: str = "d001") -> float:
    return REGISTRY.get_sample_value("ensemble_partner_matches_total",
                                     {"district": district, "result": result}) or 0.0


async def test_each_match_is_counted_by_result_once_it_is_committed(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    before = matches("matched"), matches("no_partner")
    await bench.handle(handlers.on_referral_opened, opened("r1"), deps)  # nobody offers it
    await partner(bench, "Smile Bright")
    await bench.handle(handlers.on_referral_opened, opened("r2"), deps)
    assert (matches("matched"), matches("no_partner")) == (before[0] + 1, before[1] + 1)
    with pytest.raises(RuntimeError):  # a batch that fails is not counted
        async with bench.unit_of_work() as uow:
            await handlers.on_referral_opened(uow, bench.envelope(opened("r3")),
                                              opened("r3"), deps)
            raise RuntimeError("the batch fails after the match")
    assert (matches("matched"), matches("no_partner")) == (before[0] + 1, before[1] + 1)


def test_every_consumed_event_has_its_handler_in_the_map(tmp_path: Path) -> None:
    assert set(handlers.HANDLERS) == {ReferralOpened, ConsentRecorded, ReferralDeclined,
                                      ReferralAccepted, ReferralClosed, ReferralCancelled,
                                      FamilyRegistered}
    service = build(Settings(data_dir=tmp_path))
    assert [c.event_cls for c in service.runtime.consumers] == list(handlers.HANDLERS)
    assert [c.durable for c in service.runtime.consumers] == [
        "partners-referrals-opened", "partners-referrals-consent-recorded",
        "partners-referrals-declined", "partners-referrals-accepted",
        "partners-referrals-closed", "partners-referrals-cancelled",
        "partners-engagement-family-registered"]


async def test_a_match_emails_the_partners_contact_a_link_that_answers_once(
        bench: HandlerBench, deps: PartnersDeps) -> None:
    """The partner has a contact e-mail: the match also asks notifications to e-mail it a
    signed link, which opens the referral until it is used, and not after the match ends."""
    partner_id, _service = await partner(bench, "Sonrisa")
    async with bench.db.transaction() as session:
        found = await session.get(Partner, partner_id)
        found.email, found.languages = "intake@sonrisa.example", ["es", "en"]
    issuer = LinkIssuer("a-partner-link-secret-for-tests-0123456789", "https://e.example", 72)
    deps = replace(deps, links=issuer)
    matched, asked = await bench.handle(handlers.on_referral_opened, opened(), deps)
    assert isinstance(matched, PartnerMatched)
    assert isinstance(asked, PartnerLinkRequested)
    assert (asked.email, asked.language, asked.partner_id) == (
        "intake@sonrisa.example", "es", partner_id)
    assert asked.url.startswith("https://e.example/p/") and asked.expires_at == NOW + \
        timedelta(hours=72)
    token = asked.url.rsplit("/", 1)[1]
    link = await bench.get(PartnerLink, asked.link_id)
    assert (link.referral_id, link.attempt, link.used_at) == ("r1", 1, None)
    async with bench.unit_of_work() as uow:
        assert (await open_link(uow, issuer, token, NOW)).id == asked.link_id
        await use_link(uow, issuer, token, "accept", NOW)
    async with bench.unit_of_work() as uow:
        with pytest.raises(LinkRefused, match="used"):
            await use_link(uow, issuer, token, "decline", NOW)
        with pytest.raises(LinkRefused, match="expired"):
            await open_link(uow, issuer, token, NOW + timedelta(hours=73))
    # Declined by the partner (elsewhere): a link for the next match would be new; this one
    # is spent and, once the match ended, refused for that reason too.
    async with bench.db.transaction() as session:
        (await session.get(PartnerLink, asked.link_id)).used_at = None
    await bench.handle(handlers.on_declined, ReferralDeclined(
        referral_id="r1", partner_id=partner_id, reason="no_capacity",
        declined_at=NOW), deps)
    async with bench.unit_of_work() as uow:
        with pytest.raises(LinkRefused, match="match_ended"):
            await open_link(uow, issuer, token, NOW)


async def test_no_link_without_a_contact_email(bench: HandlerBench,
                                              deps: PartnersDeps) -> None:
    await partner(bench, "No Email Dental")
    issuer = LinkIssuer("a-partner-link-secret-for-tests-0123456789", "https://e.example", 72)
    emitted = await bench.handle(handlers.on_referral_opened, opened(),
                                 replace(deps, links=issuer))
    assert [type(e) for e in emitted] == [PartnerMatched]
