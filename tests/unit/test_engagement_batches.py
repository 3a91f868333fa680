"""Engagement's handlers given a whole consumer batch (handlers.PREFETCH first, as the consumer
runs it): the same outcome as one event at a time, and the rows loaded once per batch."""

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from support.sql import statements_run
from support.uow import HandlerBench

from contracts.events import (
    FamilyOptedOut,
    FamilyReplied,
    NotificationFailed,
    NotificationSent,
    OutreachRequested,
    PartnerMatched,
)
from contracts.taxonomy import Channel, Need, Urgency
from runtime.districts import load_districts
from runtime.errors import RetryLater
from runtime.settings import Settings
from services.engagement import handlers
from services.engagement.deps import EngagementDeps
from services.engagement.settings import EngagementSettings
from services.engagement.tables import Base, ContactLogEntry, Family, Outreach

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
PHONE = "+14155550134"


def deps() -> EngagementDeps:
    return EngagementDeps(load_districts(Settings().districts_file),
                          EngagementSettings(outreach_reply_wait_seconds=3600), clock=lambda: NOW)


def family(family_id: str, **fields: Any) -> Family:
    return Family(**{
        "id": family_id, "district_id": "d001", "school_id": "lincoln-es",
        "name": "Maria Garcia", "preferred_language": "es", "phone": PHONE,
        "email": "garcia@example.org", "preferred_channel": "sms", "sms_consent": True,
        "email_consent": True, "sms_opted_out": False, "email_opted_out": False,
        "created_at": NOW} | fields)


def outreach(outreach_id: str, status: str = "requested", **fields: Any) -> Outreach:
    return Outreach(**{
        "id": outreach_id, "district_id": "d001", "family_id": "fam-1", "referral_id": "ref-1",
        "kind": "partner_matched", "status": status, "attempts": 1, "urgency": "routine",
        "variables": {}, "created_at": NOW, "updated_at": NOW} | fields)


def matched(family_id: str, referral_id: str) -> PartnerMatched:
    return PartnerMatched(referral_id=referral_id, family_id=family_id, partner_id="p1",
                          service_id="p1-dental", partner_name="Smile Bright",
                          need=Need.dental, urgency=Urgency.urgent, score=0.9,
                          reasons=["serves lincoln-es"], attempt=1)


def sent(outreach_id: str) -> NotificationSent:
    return NotificationSent(notification_id=f"n-{outreach_id}", outreach_id=outreach_id,
                            family_id="fam-1", channel=Channel.sms, language="es")


def statements(bench: HandlerBench) -> AbstractContextManager[list[str]]:
    return statements_run(bench.db.engine)


def reads_by_key(sql: list[str], table: str) -> list[str]:
    """SELECTs of one row of ``table`` by its id (what a Session.get per event runs)."""
    return [s for s in sql if s.startswith("SELECT") and f"FROM {table} WHERE {table}.id = ?" in s]


async def snapshot(bench: HandlerBench, emitted: list[Any]) -> dict[str, Any]:
    """What the handlers left; outreach by family and referral (new ones get random ids)."""
    async with bench.db.transaction() as session:
        rows = (await session.scalars(select(Outreach).order_by(Outreach.created_at,
                                                                Outreach.referral_id))).all()
        ids = {o.id: (o.family_id, o.referral_id) for o in rows}
        outreach = {ids[o.id]: (o.status, o.attempts, o.reply_code, o.next_check_at)
                    for o in rows}
        families = {f.id: (f.sms_opted_out, f.email_opted_out)
                    for f in (await session.scalars(select(Family))).all()}
        log = sorted((c.family_id, c.kind, c.outcome, c.note)
                     for c in (await session.scalars(select(ContactLogEntry))).all())

    def described(e: Any) -> tuple[Any, ...]:
        if isinstance(e, OutreachRequested):
            return (type(e).__name__, e.family_id, e.referral_id, e.channels, e.variables)
        return (type(e).__name__, ids.get(getattr(e, "outreach_id", None)))

    return {"outreach": outreach, "families": families, "log": log,
            "events": [described(e) for e in emitted]}


async def run(handler: Any, events: list[Any], rows: Callable[[], list[Any]], *,
              batch: bool) -> tuple[dict[str, Any], list[str]]:
    """``rows`` stored, then ``events`` given to ``handler`` one by one or as one batch: the
    outcome and the SQL their delivery ran."""
    async with HandlerBench(Base.metadata) as bench:
        async with bench.unit_of_work() as uow:
            uow.session.add_all(rows())
        envelopes = [bench.envelope(e) for e in events]
        emitted: list[Any] = []
        with statements(bench) as sql:
            if batch:
                emitted = await bench.deliver_batch(handler, envelopes, deps(),
                                                    handlers.PREFETCH[type(events[0])])
            else:
                for envelope in envelopes:
                    emitted += await bench.deliver(handler, envelope, deps())
        return await snapshot(bench, emitted), sql


async def test_matches_at_one_phone_in_a_batch_get_the_reply_codes_of_one_by_one() -> None:
    """Two families at one phone: the second outreach there shows a code, which depends on
    the outreach the same batch opened before it."""
    def families() -> list[Family]:
        return [family("fam-1"), family("fam-2"), family("fam-3", phone=None)]

    events = [matched("fam-1", "ref-1"), matched("fam-2", "ref-2"), matched("fam-3", "ref-3"),
              matched("fam-1", "ref-4")]
    alone, _ = await run(handlers.on_partner_matched, events, families, batch=False)
    batched, sql = await run(handlers.on_partner_matched, events, families, batch=True)
    assert batched == alone
    assert [(e[1], e[4].get("reply_code")) for e in batched["events"]] == [
        ("fam-1", None), ("fam-2", "2"), ("fam-3", None), ("fam-1", "3")]
    assert reads_by_key(sql, "families") == []  # one read for the batch instead


async def test_a_match_for_an_unknown_family_fails_the_batch_to_be_retried() -> None:
    async with HandlerBench(Base.metadata) as bench:
        async with bench.unit_of_work() as uow:
            uow.session.add(family("fam-1"))
        envelopes = [bench.envelope(matched("fam-1", "ref-1")),
                     bench.envelope(matched("fam-9", "ref-9"))]
        with pytest.raises(RetryLater):
            await bench.deliver_batch(handlers.on_partner_matched, envelopes, deps(),
                                      handlers.PREFETCH[PartnerMatched])
        async with bench.db.transaction() as session:
            assert (await session.scalars(select(Outreach))).all() == []


async def test_sent_and_failed_messages_in_batches_move_their_outreach_as_one_by_one() -> None:
    def rows() -> list[Any]:
        return [family("fam-1"), outreach("out-1"), outreach("out-2", referral_id="ref-2"),
                outreach("out-3", status="contacted", referral_id="ref-3")]

    # out-1 twice (two attempts' messages), one already answered, one not an outreach's.
    events = [sent("out-1"), sent("out-2"), sent("out-1"), sent("out-3"), sent("bulk-1")]
    alone, _ = await run(handlers.on_notification_sent, events, rows, batch=False)
    batched, sql = await run(handlers.on_notification_sent, events, rows, batch=True)
    assert batched == alone
    waiting = NOW + timedelta(hours=1)
    assert batched["outreach"] == {("fam-1", "ref-1"): ("awaiting_reply", 1, None, waiting),
                                   ("fam-1", "ref-2"): ("awaiting_reply", 1, None, waiting),
                                   ("fam-1", "ref-3"): ("contacted", 1, None, None)}
    assert reads_by_key(sql, "outreach") == []

    failed = [NotificationFailed(notification_id=f"n-{o}", outreach_id=o, family_id="fam-1",
                                 reason="bounced", permanent=permanent)
              for o, permanent in (("out-1", True), ("out-2", False), ("out-1", True))]
    alone, _ = await run(handlers.on_notification_failed, failed, rows, batch=False)
    batched, _ = await run(handlers.on_notification_failed, failed, rows, batch=True)
    assert batched == alone
    assert batched["events"] == [("FamilyUnreachable", ("fam-1", "ref-1"))]  # once


async def test_answers_and_opt_outs_in_batches_as_one_by_one() -> None:
    def rows() -> list[Any]:
        return [family("fam-1"), family("fam-2", phone="+14155550199"),
                outreach("out-1", status="awaiting_reply")]

    answers = [FamilyReplied(family_id=f, school_id="lincoln-es", notification_id="n-1",
                             outreach_id=o, referral_id="ref-1", kind="partner_matched",
                             channel=Channel.email, text=text, received_at=NOW)
               for f, o, text in (("fam-1", "out-1", "yes"), ("fam-1", "out-1", "again"),
                                  ("fam-2", None, "hello"), ("fam-9", None, "who?"))]
    alone, _ = await run(handlers.on_family_replied, answers, rows, batch=False)
    batched, sql = await run(handlers.on_family_replied, answers, rows, batch=True)
    assert batched == alone
    assert batched["outreach"][("fam-1", "ref-1")][0] == "contacted"
    assert [e[0] for e in batched["events"]] == ["FamilyContacted"]  # the first answer only
    assert reads_by_key(sql, "families") == reads_by_key(sql, "outreach") == []

    opt_outs = [FamilyOptedOut(family_id=f, channel=c, at=NOW)
                for f, c in (("fam-1", Channel.sms), ("fam-1", Channel.email),
                             ("fam-2", Channel.sms))]
    alone, _ = await run(handlers.on_opted_out, opt_outs, rows, batch=False)
    batched, _ = await run(handlers.on_opted_out, opt_outs, rows, batch=True)
    assert batched == alone
    assert batched["families"] == {"fam-1": (True, True), "fam-2": (True, False)}


def test_each_consumer_has_its_prefetch() -> None:
    assert set(handlers.PREFETCH) == set(handlers.HANDLERS)
