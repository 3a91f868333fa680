"""The dispatcher against a real database (SQLite and PostgreSQL), a real SMTP server and the
development SMS provider over HTTP, with an injectable clock."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Inbox
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import select

from contracts.taxonomy import Channel
from runtime.service import ServiceRuntime
from services.notifications.dev_sms import DevSmsServer, create_dev_sms_app, read_dev_sms
from services.notifications.dispatch import Dispatcher
from services.notifications.handlers import new_message
from services.notifications.service import providers
from services.notifications.settings import NotificationsSettings
from services.notifications.tables import Base, EarlyStatus, InboundSeen, Message, OptOut

TOKEN = "test-token"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Desk:
    rt: ServiceRuntime
    dispatcher: Dispatcher
    clock: Clock
    inbox: Inbox
    sms: FastAPI
    store: Path

    async def queue(self, **fields: Any) -> str:
        row = new_message(self.dispatcher, self.clock(), **({
            "idempotency_key": f"k-{len(self.inbox.messages)}-{datetime.now(UTC).timestamp()}",
            "district_id": "d001", "school_id": "lincoln-es", "family_id": "fam-1",
            "outreach_id": "out-1", "correlation_id": "corr-1", "kind": "partner_matched",
            "urgency": "routine", "language": "es", "channels": ["email"],
            "email": "garcia@example.org", "phone": "+14155550134", "family_name": "Maria Garcia",
            "variables": {"partner_name": "Smile Bright", "need": "dental",
                          "school_name": "Lincoln Elementary"},
        } | fields))
        async with self.rt.unit_of_work() as uow:
            uow.session.add(Message(**row))
        return str(row["id"])

    async def message(self, message_id: str) -> Message:
        async with self.rt.unit_of_work() as uow:
            row = await uow.session.get(Message, message_id)
        assert row is not None
        return row

    async def events(self) -> list[str]:
        async with self.rt.unit_of_work() as uow:
            rows = (await uow.session.execute(
                select(self.rt.tables.outbox.c.event_type).order_by(self.rt.tables.outbox.c.seq)
            )).all()
        return [r[0].split(".")[-2] for r in rows]

    def texts(self) -> list[dict[str, Any]]:
        return read_dev_sms(self.store)


# 21:30 in Los Angeles (Lincoln Elementary's zone) on a Tuesday.
EVENING = datetime(2026, 3, 4, 5, 30, tzinfo=UTC)
MORNING = datetime(2026, 3, 4, 16, 1, tzinfo=UTC)  # 08:01 PST


@pytest.fixture
async def desk(tmp_path: Path, backend: dict[str, str], smtp: tuple[Inbox, str]
               ) -> AsyncIterator[Desk]:
    store = tmp_path / "sms.jsonl"
    app = create_dev_sms_app(store, TOKEN)
    async with DevSmsServer(app) as server:
        # The district's quiet hours as shipped (the suite turns them off for other tests).
        settings = NotificationsSettings(
            data_dir=tmp_path, smtp_url=smtp[1], sms_api_url=server.base_url,
            sms_account_sid="ACtest", sms_auth_token=TOKEN, public_base_url="http://127.0.0.1:9",
            send_retry_base_seconds=60, daily_message_cap=2, quiet_hours_start=time(20, 0),
            quiet_hours_end=time(8, 0), **backend)
        clock = Clock(MORNING)
        rt = ServiceRuntime("notifications", settings, Base.metadata)
        await rt.db.create_schema()
        sending = providers(settings)
        try:
            yield Desk(rt, Dispatcher(rt, sending, settings, clock=clock), clock, smtp[0], app,
                       store)
        finally:
            for provider in sending.values():  # kept SMTP connections, the SMS client session
                await provider.aclose()
            await rt.db.dispose()


async def test_the_familys_language_or_english_recorded_as_a_fallback(desk: Desk) -> None:
    spanish = await desk.queue(language="es-MX")
    french = await desk.queue(language="fr", family_id="fam-2", email="martin@example.org")
    await desk.dispatcher.dispatch_due()
    es, fr = await desk.message(spanish), await desk.message(french)
    assert (es.status, es.used_language, es.fell_back) == ("sent", "es", False)
    assert (fr.status, fr.used_language, fr.fell_back) == ("sent", "en", True)
    [mail] = desk.inbox.to("martin@example.org")
    assert mail["Subject"] == "Good news from Lincoln Elementary"
    assert mail["Reply-To"].strip().startswith(f"reply+{french}.")
    assert f"/api/v1/messages/{french}/unsubscribe?token=" in mail["List-Unsubscribe"]
    assert await desk.events() == ["sent", "sent"]


async def test_sms_length_is_recorded_in_segments(desk: Desk) -> None:
    english = await desk.queue(channels=["sms"], language="en")
    vietnamese = await desk.queue(channels=["sms"], language="vi", family_id="fam-2",
                                  phone="+14155550135")
    await desk.dispatcher.dispatch_due()
    en, vi = await desk.message(english), await desk.message(vietnamese)
    assert (en.encoding, vi.encoding) == ("GSM-7", "UCS-2")
    assert en.segments and vi.segments and vi.segments > en.segments  # 67 units a part
    assert {t["to"]: t["num_segments"] for t in desk.texts()} == {
        "+14155550134": en.segments, "+14155550135": vi.segments}


async def test_routine_messages_wait_out_quiet_hours_crisis_goes_at_once(desk: Desk) -> None:
    desk.clock.now = EVENING
    routine = await desk.queue()
    crisis = await desk.queue(urgency="crisis", family_id="fam-2", email="b@example.org",
                              outreach_id="out-2")
    await desk.dispatcher.dispatch_due()
    held = await desk.message(routine)
    assert (held.status, held.held_reason) == ("queued", "quiet_hours")
    assert held.next_attempt_at == datetime(2026, 3, 4, 16, 0, tzinfo=UTC)  # 08:00 PST
    assert (await desk.message(crisis)).status == "sent"
    assert [m["To"] for m in desk.inbox.messages] == ["b@example.org"]

    desk.clock.now = MORNING
    await desk.dispatcher.dispatch_due()
    assert (await desk.message(routine)).status == "sent"


async def test_a_per_family_daily_cap_holds_the_rest(desk: Desk) -> None:
    ids = [await desk.queue(outreach_id=f"o{i}") for i in range(3)]  # cap is 2
    await desk.dispatcher.dispatch_due()
    states = [(await desk.message(i)).held_reason for i in ids]
    assert states.count("daily_cap") == 1 and len(desk.inbox.messages) == 2
    desk.clock.now = MORNING + timedelta(hours=24, minutes=1)
    await desk.dispatcher.dispatch_due()
    assert len(desk.inbox.messages) == 3


async def test_transient_failure_is_retried_with_backoff_and_sent_once(desk: Desk) -> None:
    text = await desk.queue(channels=["sms"])
    desk.sms.state.failing = "transient"
    await desk.dispatcher.dispatch_due()
    waiting = await desk.message(text)
    assert (waiting.status, waiting.attempts) == ("queued", 1)
    wait = (waiting.next_attempt_at - MORNING).total_seconds()
    assert 45 <= wait <= 75  # 60 s base, jittered
    assert await desk.dispatcher.dispatch_due() == 0  # not due yet

    desk.sms.state.failing = None
    desk.clock.now = waiting.next_attempt_at
    await desk.dispatcher.dispatch_due()
    sent = await desk.message(text)
    assert (sent.status, sent.attempts) == ("sent", 2)
    # The process dies after the send, before the commit: the lease runs out and it is sent
    # again with the same idempotency key; the provider keeps one.
    async with desk.rt.unit_of_work() as uow:
        row = await uow.session.get(Message, text)
        assert row is not None
        row.status, row.next_attempt_at = "sending", desk.clock()
    await desk.dispatcher.dispatch_due()
    assert len(desk.texts()) == 1
    assert (await desk.events()).count("sent") == 2  # at-least-once event, one text


async def test_permanent_failure_falls_back_to_the_other_channel(desk: Desk) -> None:
    message = await desk.queue(channels=["sms", "email"])
    desk.sms.state.failing = "permanent"
    await desk.dispatcher.dispatch_due()
    after = await desk.message(message)
    assert after.status == "queued" and after.channels == ["email"]
    assert "21211" in (after.last_error or "")
    await desk.dispatcher.dispatch_due()
    done = await desk.message(message)
    assert (done.status, done.channel) == ("sent", "email")
    assert desk.texts() == [] and len(desk.inbox.messages) == 1


async def test_permanent_failure_on_the_last_channel_is_reported(desk: Desk) -> None:
    desk.inbox.refuse = 550
    message = await desk.queue()
    await desk.dispatcher.dispatch_due()
    failed = await desk.message(message)
    assert failed.status == "failed" and "550" in (failed.last_error or "")
    assert await desk.events() == ["failed"]


async def test_a_template_missing_a_variable_is_a_permanent_failure(desk: Desk) -> None:
    message = await desk.queue(variables={"school_name": "Lincoln"})  # no partner_name
    await desk.dispatcher.dispatch_due()
    failed = await desk.message(message)
    assert failed.status == "failed" and "UndefinedError" in (failed.last_error or "")
    assert await desk.events() == ["failed"]


async def test_opted_out_channel_is_skipped_for_the_other(desk: Desk) -> None:
    async with desk.rt.unit_of_work() as uow:
        uow.session.add(OptOut(channel="sms", address="+14155550134", district_id="d001",
                               opted_out=True, changed_at=MORNING))
    message = await desk.queue(channels=["sms", "email"])
    only_sms = await desk.queue(channels=["sms"], family_id="fam-2", outreach_id="o2")
    await desk.dispatcher.dispatch_due()
    assert (await desk.message(message)).channel == "email"
    refused = await desk.message(only_sms)
    assert refused.status == "failed" and desk.texts() == []


async def test_twilio_21610_means_the_family_opted_out(desk: Desk, tmp_path: Path) -> None:
    unsubscribed = FastAPI()

    @unsubscribed.post("/2010-04-01/Accounts/{sid}/Messages.json")
    async def create(sid: str) -> JSONResponse:
        return JSONResponse({"code": 21610, "message": "unsubscribed", "status": 400}, 400)

    async with DevSmsServer(unsubscribed) as server:
        settings = desk.dispatcher.settings.model_copy(update={"sms_api_url": server.base_url})
        dispatcher = Dispatcher(desk.rt, providers(settings), settings, clock=desk.clock)
        message = await desk.queue(channels=["sms", "email"])
        await dispatcher.dispatch_due()
        await dispatcher.dispatch_due()
    done = await desk.message(message)
    assert (done.status, done.channel) == ("sent", "email")
    async with desk.rt.unit_of_work() as uow:
        opt_out = await uow.session.get(OptOut, (Channel.sms.value, "+14155550134"))
    assert opt_out is not None and opt_out.opted_out
    assert await desk.events() == ["family_opted_out", "sent"]
    assert json.dumps(await desk.events())  # events carry ids only (checked in contracts)


async def test_a_delivery_report_before_the_send_is_recorded_is_kept_for_it(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider may call back before the dispatcher commits what it sent."""
    from services.notifications import inbound

    sms = await desk.queue(channels=["sms"], language="en")
    record = desk.dispatcher._apply
    answers: list[str] = []

    async def report_first(claimed: list[Message], outcomes: dict[str, Any]) -> bool:
        [text] = desk.texts()  # sent, not yet recorded: Twilio's callback arrives now
        async with desk.rt.unit_of_work() as uow:
            answers.append(await inbound.status_callback(
                uow, desk.dispatcher, text["sid"], "delivered", None, desk.clock()))
        return await record(claimed, outcomes)

    monkeypatch.setattr(desk.dispatcher, "_apply", report_first)
    await desk.dispatcher.dispatch_due()
    assert answers == ["early"]
    message = await desk.message(sms)
    assert (message.status, message.delivered_at) == ("delivered", desk.clock())
    assert await desk.events() == ["sent", "delivered"]


async def test_old_early_reports_and_webhook_ids_are_forgotten(desk: Desk) -> None:
    now = desk.clock()
    async with desk.rt.unit_of_work() as uow:
        uow.session.add_all([
            EarlyStatus(sid="SMold", status="delivered", received_at=now - timedelta(days=2)),
            EarlyStatus(sid="SMnew", status="delivered", received_at=now - timedelta(minutes=5)),
            InboundSeen(id="old", at=now - timedelta(days=8)),
            InboundSeen(id="new", at=now - timedelta(days=1))])
    await desk.dispatcher.prune()
    async with desk.rt.unit_of_work() as uow:
        assert (await uow.session.scalars(select(EarlyStatus.sid))).all() == ["SMnew"]
        assert (await uow.session.scalars(select(InboundSeen.id))).all() == ["new"]


class Counting:
    """A provider that counts what it is handed, per message, before the real one sends it."""

    def __init__(self, real: Any, handed: list[str]) -> None:
        self.real, self.handed = real, handed

    async def send_many(self, messages: list[Any]) -> list[Any]:
        self.handed.extend(m.idempotency_key for m in messages)
        await asyncio.sleep(0.01)  # the other copy claims while this one sends
        return list(await self.real.send_many(messages))

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_two_dispatcher_copies_hand_each_message_over_once(desk: Desk) -> None:
    """A second notifications process (its own engine, small rounds) claims only what the
    first has not: every message is handed to the provider exactly once, and recorded sent."""
    ids = {await desk.queue(family_id=f"fam-{n}", urgency="crisis", channels=["sms", "email"],
                            phone=f"+1415555{n:04d}", email=f"family{n}@example.org")
           for n in range(60)}
    handed: list[list[str]] = [[], []]
    copies = []
    for own in handed:
        settings = desk.dispatcher.settings.model_copy(update={"dispatch_batch": 7})
        rt = ServiceRuntime("notifications", settings, Base.metadata)
        sending = {channel: Counting(provider, own)
                   for channel, provider in providers(settings).items()}
        copies.append((rt, Dispatcher(rt, sending, settings, clock=desk.clock)))

    async def drain(dispatcher: Dispatcher) -> None:
        while await dispatcher.dispatch_due():
            pass

    try:
        await asyncio.gather(*(drain(d) for _, d in copies))
    finally:
        for rt, dispatcher in copies:
            for provider in dispatcher.providers.values():
                await provider.aclose()
            await rt.db.dispose()
    assert all(handed)  # both copies sent some
    assert sorted(handed[0] + handed[1]) == sorted(ids)  # each once, none left out
    async with desk.rt.unit_of_work() as uow:
        statuses = (await uow.session.scalars(select(Message.status))).all()
    assert statuses == ["sent"] * 60
    assert len({t["idempotency_token"] for t in desk.texts()}) == len(desk.texts()) == 60
