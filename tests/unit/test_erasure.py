"""Erasing a family and the daily retention, service by service, through in-memory units of
work (tests/support/uow.HandlerBench): no NATS, milliseconds each. The whole loop, on both
databases, is tests/integration/test_erasure_retention.py."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import MetaData, func, select, update
from support.uow import HandlerBench

from contracts.events import (
    BulkOutreachRequested,
    BulkRecipient,
    FamilyErased,
    FamilyReplied,
    FamilyUnreachable,
    OutreachRequested,
    PartnerMatched,
)
from contracts.taxonomy import Channel, Consent, Need, Urgency
from runtime.daily import claim, job_runs_table
from runtime.districts import Districts, Retention, load_districts
from runtime.settings import Settings
from services.engagement import handlers as engagement
from services.engagement import tables as et
from services.engagement.deps import EngagementDeps
from services.engagement.erasure import erase_family, expire_replies
from services.engagement.settings import EngagementSettings
from services.notifications import handlers as notifications
from services.notifications import tables as nt
from services.notifications.deps import NotificationsDeps
from services.notifications.erasure import expire_messages
from services.notifications.policy import Holds
from services.notifications.settings import NotificationsSettings
from services.referrals import handlers as referrals
from services.referrals import tables as rt
from services.referrals.audit import AuditEntry
from services.referrals.erasure import expire_referrals
from services.referrals.referrals import Desk, open_referral

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
PHONE, EMAIL, NAME = "+14155550134", "garcia@example.org", "Maria Garcia"


def districts(**periods: int) -> Districts:
    loaded = load_districts(Settings().districts_file)
    d001 = loaded.get("d001")
    assert d001 is not None
    d001.retention = Retention(**periods)
    return loaded


def erased(family_id: str = "fam-1", at: datetime = NOW) -> FamilyErased:
    return FamilyErased(family_id=family_id, erased_by="admin-1", erased_at=at)


async def rows(bench: HandlerBench, entity: Any) -> list[Any]:
    async with bench.db.transaction() as session:
        return list((await session.scalars(select(entity))).all())


# --- engagement ------------------------------------------------------------------------------


@pytest.fixture
async def engagement_bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(et.Base.metadata) as bench:
        yield bench


def family(family_id: str = "fam-1", **fields: Any) -> et.Family:
    return et.Family(**{
        "id": family_id, "district_id": "d001", "school_id": "lincoln-es", "name": NAME,
        "preferred_language": "es", "phone": PHONE, "email": EMAIL, "preferred_channel": "sms",
        "sms_consent": True, "email_consent": True, "sms_opted_out": False,
        "email_opted_out": False, "created_at": NOW} | fields)


def outreach(outreach_id: str, family_id: str = "fam-1", status: str = "awaiting_reply"
             ) -> et.Outreach:
    return et.Outreach(id=outreach_id, district_id="d001", family_id=family_id,
                       referral_id=f"ref-{outreach_id}", kind="partner_matched", status=status,
                       attempts=1, urgency="routine", reply_code="1",
                       variables={"partner_name": "Smile Bright"}, created_at=NOW,
                       updated_at=NOW)


def contact(entry_id: str, family_id: str, note: str, *, by: str = "family",
            at: datetime = NOW) -> et.ContactLogEntry:
    return et.ContactLogEntry(id=entry_id, district_id="d001", family_id=family_id,
                              referral_id=None, kind="sms", outcome="replied", at=at, by=by,
                              note=note)


def held(reply_id: str, candidates: list[str], text: str, at: datetime = NOW
         ) -> et.UnassignedReply:
    return et.UnassignedReply(id=reply_id, district_id="d001", school_id="lincoln-es",
                              channel="sms", text=text, received_at=at, candidates=candidates,
                              status="held")


async def test_erasing_a_family_blanks_what_engagement_holds_and_tells_the_others(
        engagement_bench: HandlerBench) -> None:
    async with engagement_bench.unit_of_work() as uow:
        uow.session.add_all([
            family(), family("fam-2", name="Ana Ruiz", phone="+14155550199",
                             email="ruiz@example.org"),
            outreach("o1"), outreach("o2", status="contacted"), outreach("o3", "fam-2"),
            contact("c1", "fam-1", "call me at 415 555 0134"), contact("c2", "fam-2", "Ana's"),
            held("h1", ["o3", "o1"], "which one?"), held("h2", ["o3"], "Ana asks"),
        ])
    async with engagement_bench.unit_of_work() as uow:
        mine = await uow.session.get(et.Family, "fam-1")
        await erase_family(uow, mine, "admin-1", NOW)
    assert [e.type for e in engagement_bench.emitted] == [FamilyUnreachable.ce_type(),
                                                          FamilyErased.ce_type()]
    [_, event] = engagement_bench.emitted
    assert event.data == {"family_id": "fam-1", "erased_by": "admin-1",
                          "erased_at": NOW.isoformat().replace("+00:00", "Z")}
    assert event.subject == "fam-1"

    got = {f.id: f for f in await rows(engagement_bench, et.Family)}
    assert (got["fam-1"].name, got["fam-1"].phone, got["fam-1"].email) == ("", None, None)
    assert (got["fam-1"].erased_at, got["fam-1"].erased_by) == (NOW, "admin-1")
    assert (got["fam-2"].name, got["fam-2"].phone) == ("Ana Ruiz", "+14155550199")
    notes = {c.id: c.note for c in await rows(engagement_bench, et.ContactLogEntry)}
    assert notes == {"c1": None, "c2": "Ana's"}
    status = {o.id: (o.status, o.variables, o.reply_code)
              for o in await rows(engagement_bench, et.Outreach)}
    assert status == {"o1": ("unreachable", {}, None), "o2": ("contacted", {}, None),
                      "o3": ("awaiting_reply", {"partner_name": "Smile Bright"}, "1")}
    texts = {r.id: r.text for r in await rows(engagement_bench, et.UnassignedReply)}
    assert texts == {"h1": "", "h2": "Ana asks"}  # h1 may have been the erased family's


async def test_erasing_a_family_scrubs_the_outreach_requests_its_outbox_already_sent(
        engagement_bench: HandlerBench) -> None:
    outbox = engagement_bench.metadata.tables["outbox"]
    async with engagement_bench.unit_of_work() as uow:
        uow.session.add(family())
        uow.emit(requested("o1"), district="d001")
        uow.emit(BulkOutreachRequested(batch_id="ann-1", kind="announcement", recipients=[
            BulkRecipient(family_id="fam-1", school_id="lincoln-es", language="es",
                          channels=[Channel.sms], phone=PHONE, family_name=NAME),
            BulkRecipient(family_id="fam-2", school_id="lincoln-es", language="en",
                          channels=[Channel.email], email="ruiz@example.org",
                          family_name="Ana Ruiz")]), district="d001")
    async with engagement_bench.unit_of_work() as uow:
        await uow.session.execute(update(outbox).values(sent_at=NOW))
        await erase_family(uow, await uow.session.get(et.Family, "fam-1"), "admin-1", NOW)
    async with engagement_bench.db.transaction() as session:
        payloads = b"".join((await session.scalars(select(outbox.c.payload))).all()).decode()
    assert NAME not in payloads and PHONE not in payloads and EMAIL not in payloads
    assert "Ana Ruiz" in payloads and "ruiz@example.org" in payloads  # another family's


async def test_erasing_again_keeps_the_first_erasure_and_tells_the_others_again(
        engagement_bench: HandlerBench) -> None:
    async with engagement_bench.unit_of_work() as uow:
        uow.session.add(family())
    for by, at in (("admin-1", NOW), ("admin-2", NOW + timedelta(hours=1))):
        async with engagement_bench.unit_of_work() as uow:
            await erase_family(uow, await uow.session.get(et.Family, "fam-1"), by, at)
    first, again = engagement_bench.emitted
    assert first.data == again.data and first.id != again.id
    [row] = await rows(engagement_bench, et.Family)
    assert (row.erased_by, row.erased_at) == ("admin-1", NOW)


async def test_an_erased_familys_late_reply_is_not_kept(
        engagement_bench: HandlerBench) -> None:
    async with engagement_bench.unit_of_work() as uow:
        uow.session.add_all([family(name="", phone=None, email=None, erased_at=NOW,
                                    erased_by="admin-1"), outreach("o1")])
    deps = EngagementDeps(load_districts(Settings().districts_file), EngagementSettings(),
                          clock=lambda: NOW)
    reply = FamilyReplied(family_id="fam-1", school_id="lincoln-es", notification_id="n-1",
                          outreach_id="o1", kind="partner_matched", channel=Channel.sms,
                          text="yes please", received_at=NOW, phone=PHONE)
    assert await engagement_bench.handle(engagement.on_family_replied, reply, deps) == []
    assert await rows(engagement_bench, et.ContactLogEntry) == []
    assert await rows(engagement_bench, et.UnassignedReply) == []


async def test_a_match_for_an_erased_family_sends_nothing_and_says_unreachable(
        engagement_bench: HandlerBench) -> None:
    async with engagement_bench.unit_of_work() as uow:
        uow.session.add(family())
    async with engagement_bench.unit_of_work() as uow:
        await erase_family(uow, await uow.session.get(et.Family, "fam-1"), "admin-1", NOW)
    deps = EngagementDeps(load_districts(Settings().districts_file), EngagementSettings(),
                          clock=lambda: NOW)
    matched = PartnerMatched(referral_id="ref-9", family_id="fam-1", partner_id="p1",
                             service_id="p1-dental", partner_name="Smile Bright",
                             need=Need.dental, urgency=Urgency.routine, score=0.9,
                             reasons=["serves lincoln-es"], attempt=1)
    emitted = await engagement_bench.handle(engagement.on_partner_matched, matched, deps)
    assert [type(e) for e in emitted] == [FamilyUnreachable]


async def test_reply_retention_deletes_held_replies_and_blanks_reply_notes_past_the_period(
        engagement_bench: HandlerBench) -> None:
    old, recent = NOW - timedelta(days=31), NOW - timedelta(days=29)
    async with engagement_bench.unit_of_work() as uow:
        uow.session.add_all([
            family(), held("h-old", ["o1"], "old", old), held("h-new", ["o1"], "new", recent),
            contact("c-old", "fam-1", "old reply", at=old),
            contact("c-new", "fam-1", "new reply", at=recent),
            contact("c-staff", "fam-1", "coordinator's note", by="coordinator:x", at=old)])
    async with engagement_bench.unit_of_work() as uow:
        assert await expire_replies(uow, districts(), NOW) == {"held_replies": 0,
                                                               "reply_notes": 0}
        counts = await expire_replies(uow, districts(replies_days=30), NOW)
    assert counts == {"held_replies": 1, "reply_notes": 1}
    assert [r.id for r in await rows(engagement_bench, et.UnassignedReply)] == ["h-new"]
    notes = {c.id: c.note for c in await rows(engagement_bench, et.ContactLogEntry)}
    assert notes == {"c-old": None, "c-new": "new reply", "c-staff": "coordinator's note"}


# --- notifications ---------------------------------------------------------------------------


@pytest.fixture
async def notifications_bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(nt.Base.metadata) as bench:
        yield bench


@pytest.fixture
def notifications_deps() -> NotificationsDeps:
    holds = Holds(NotificationsSettings(), load_districts(Settings().districts_file))
    return NotificationsDeps(holds, wake=lambda: None, clock=lambda: NOW)


def requested(outreach_id: str, family_id: str = "fam-1", phone: str = PHONE,
              email: str = EMAIL, name: str = NAME) -> OutreachRequested:
    return OutreachRequested(
        outreach_id=outreach_id, family_id=family_id, kind="partner_matched", language="es",
        channels=[Channel.sms, Channel.email], email=email, phone=phone, family_name=name,
        school_id="lincoln-es", urgency=Urgency.urgent, variables={"partner_name": "Smile"})


async def test_erasing_a_family_blanks_its_messages_and_drops_its_own_opt_outs(
        notifications_bench: HandlerBench, notifications_deps: NotificationsDeps) -> None:
    bench, deps = notifications_bench, notifications_deps
    await bench.handle(notifications.on_outreach_requested, requested("o1"), deps)
    await bench.handle(notifications.on_outreach_requested, requested("o2"), deps)
    # A sibling family shares the phone, not the email.
    await bench.handle(notifications.on_outreach_requested,
                       requested("o3", "fam-2", email="ruiz@example.org", name="Ana Ruiz"), deps)
    async with bench.unit_of_work() as uow:
        (await uow.session.scalar(select(nt.Message).where(
            nt.Message.outreach_id == "o1"))).status = "sent"
        for channel, address in (("sms", PHONE), ("email", EMAIL), ("email", "x@example.org")):
            uow.session.add(nt.OptOut(channel=channel, address=address, district_id="d001",
                                      opted_out=True, changed_at=NOW))
    envelope = bench.envelope(erased())
    assert await bench.deliver(notifications.on_family_erased, envelope, deps) == []
    assert await bench.deliver(notifications.on_family_erased, envelope, deps) == []  # again

    messages = {m.outreach_id: m for m in await rows(bench, nt.Message)}
    for key in ("o1", "o2"):
        m = messages[key]
        assert (m.phone, m.email, m.family_name, m.variables) == (None, None, "", {})
    assert (messages["o1"].status, messages["o2"].status) == ("sent", "failed")
    assert messages["o2"].last_error == "family erased"
    assert (messages["o3"].phone, messages["o3"].family_name) == (PHONE, "Ana Ruiz")
    kept = {(o.channel, o.address) for o in await rows(bench, nt.OptOut)}
    assert kept == {("sms", PHONE), ("email", "x@example.org")}  # the phone is Ana's too
    assert [(e.district_id, e.family_id) for e in await rows(bench, nt.ErasedFamily)] == [
        ("d001", "fam-1")]


async def test_an_outreach_request_that_arrives_after_the_erasure_is_dropped(
        notifications_bench: HandlerBench, notifications_deps: NotificationsDeps) -> None:
    bench, deps = notifications_bench, notifications_deps
    await bench.handle(notifications.on_family_erased, erased(), deps)
    await bench.handle(notifications.on_outreach_requested, requested("o1"), deps)
    bulk = BulkOutreachRequested(batch_id="ann-1", kind="announcement", recipients=[
        BulkRecipient(family_id=f, school_id="lincoln-es", language="en",
                      channels=[Channel.email], email=f"{f}@example.org", family_name=f)
        for f in ("fam-1", "fam-2")])
    await bench.handle(notifications.on_bulk, bulk, deps)
    assert [m.family_id for m in await rows(bench, nt.Message)] == ["fam-2"]


async def test_message_retention_deletes_finished_messages_past_the_period(
        notifications_bench: HandlerBench, notifications_deps: NotificationsDeps) -> None:
    bench, deps = notifications_bench, notifications_deps
    for key in ("old-sent", "old-queued", "new-sent"):
        await bench.handle(notifications.on_outreach_requested, requested(key), deps)
    async with bench.unit_of_work() as uow:
        for m in (await uow.session.scalars(select(nt.Message))).all():
            m.status = "queued" if m.outreach_id == "old-queued" else "sent"
            m.created_at = NOW - timedelta(days=91 if m.outreach_id.startswith("old") else 89)
    async with bench.unit_of_work() as uow:
        assert await expire_messages(uow, districts(), NOW) == {"messages": 0}
        assert await expire_messages(uow, districts(messages_days=90), NOW) == {"messages": 1}
    assert sorted(m.outreach_id for m in await rows(bench, nt.Message)) == [
        "new-sent", "old-queued"]


# --- referrals -------------------------------------------------------------------------------


@pytest.fixture
async def referrals_bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(rt.Base.metadata) as bench:
        yield bench


@pytest.fixture
def desk() -> Desk:
    return Desk(load_districts(Settings().districts_file), clock=lambda: NOW)


async def referral_of(bench: HandlerBench, desk: Desk, family_id: str, note: str) -> str:
    async with bench.unit_of_work() as uow:
        referral = await open_referral(
            uow, desk, district_id="d001", school_id="lincoln-es", student_ref=f"s-{note}",
            family_id=family_id, need=Need.dental, urgency=Urgency.routine,
            consent=Consent.given, grade=3, note=note, idempotency_key=None,
            actor="coordinator:test")
        uow.session.add(rt.ReferralNote(referral_id=referral.id, at=NOW, author="c",
                                        text=f"more about {note}"))
    return referral.id


async def test_erasing_a_family_removes_its_referrals_notes_and_audits_it_once(
        referrals_bench: HandlerBench, desk: Desk) -> None:
    bench = referrals_bench
    mine = await referral_of(bench, desk, "fam-1", "Maria's teeth")
    theirs = await referral_of(bench, desk, "fam-2", "Ana's teeth")
    envelope = bench.envelope(erased())
    await bench.deliver(referrals.on_family_erased, envelope, desk)
    await bench.deliver(referrals.on_family_erased, bench.envelope(erased()), desk)  # asked again
    got = {r.id: r for r in await rows(bench, rt.Referral)}
    assert (got[mine].note, got[mine].status, got[mine].family_id) == (None, "opened", "fam-1")
    assert got[theirs].note == "Ana's teeth"
    assert [n.referral_id for n in await rows(bench, rt.ReferralNote)] == [theirs]
    audit = [(a.referral_id, a.actor, a.role, a.action, a.at)
             for a in await rows(bench, AuditEntry)]
    assert audit == [(mine, "admin-1", "district_admin", "family_erased", NOW)]


async def test_referral_retention_deletes_closed_referrals_and_audit_past_their_periods(
        referrals_bench: HandlerBench, desk: Desk) -> None:
    bench = referrals_bench
    ids = {name: await referral_of(bench, desk, "fam-1", name)
           for name in ("closed-old", "cancelled-old", "closed-new", "open-old")}
    async with bench.unit_of_work() as uow:
        for name, referral_id in ids.items():
            referral = await uow.session.get(rt.Referral, referral_id)
            age = timedelta(days=400 if name.endswith("old") else 300)
            referral.opened_at = NOW - age - timedelta(days=30)
            if not name.startswith("open"):
                referral.status = name.split("-")[0]
                referral.closed_at = NOW - age
            uow.session.add(AuditEntry(district_id="d001", referral_id=referral_id,
                                       actor="c", role="coordinator", action="read",
                                       at=NOW - age))
    async with bench.unit_of_work() as uow:
        assert await expire_referrals(uow, districts(), NOW) == {"closed_referrals": 0,
                                                                 "audit_entries": 0}
        counts = await expire_referrals(
            uow, districts(closed_referrals_days=365, audit_days=365), NOW)
    assert counts == {"closed_referrals": 2, "audit_entries": 3}
    left = {r.id for r in await rows(bench, rt.Referral)}
    assert left == {ids["closed-new"], ids["open-old"]}
    for entity in (rt.TimelineEntry, rt.ReferralNote):
        assert {row.referral_id for row in await rows(bench, entity)} == left
    assert [a.referral_id for a in await rows(bench, AuditEntry)] == [ids["closed-new"]]


# --- the daily claim -------------------------------------------------------------------------


async def test_a_daily_job_is_claimed_once_per_period() -> None:
    metadata = MetaData()
    table = job_runs_table(metadata)
    async with HandlerBench(metadata) as bench:
        taken = []
        for at in (NOW, NOW + timedelta(hours=23), NOW + timedelta(hours=24),
                   NOW + timedelta(hours=25)):
            async with bench.unit_of_work() as uow:
                taken.append(await claim(uow, table, "job", at, timedelta(days=1), "copy-a"))
        assert taken == [True, False, True, False]
        async with bench.db.transaction() as session:
            assert await session.scalar(select(func.count()).select_from(table)) == 1
