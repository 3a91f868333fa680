"""The weekly staff digest: when it is due, what it says (from the store), and that two copies
of insights claiming the same school's week request it once (real SQLite file, two runtimes,
no NATS: the request waits in the outbox). Notifications' handler sends it to the staff list
over real SMTP (aiosmtpd)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import Inbox
from sqlalchemy import func, select
from support.uow import HandlerBench

from contracts.envelope import Envelope
from contracts.events import StaffDigestRequested, event_class
from runtime.districts import Districts, load_districts
from runtime.errors import RetryLater, Unavailable
from runtime.settings import Settings
from services.insights.deps import InsightsDeps
from services.insights.digest import Digest, compose, due_week, send_due
from services.insights.service import runtime
from services.insights.settings import insights_settings
from services.insights.tables import (
    CapacityFact,
    DigestClaim,
    FamilyEventFact,
    ReferralFact,
    StepFact,
)
from services.notifications import handlers as notification_handlers
from services.notifications.deps import NotificationsDeps
from services.notifications.errors import TransientSendError
from services.notifications.providers import Outgoing, SmtpEmail
from services.notifications.tables import Base as NotificationsBase

LA = ZoneInfo("America/Los_Angeles")
MONDAY_8 = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # Monday 08:00 in Los Angeles
STAFF = ["counselor@lincoln.example.org", "principal@lincoln.example.org"]


def districts() -> Districts:
    raw = load_districts(Settings().districts_file).model_dump()
    raw["districts"][0]["schools"][0]["staff_emails"] = STAFF
    return Districts.model_validate(raw)


def test_the_digest_is_due_from_its_weekday_and_hour_in_the_schools_zone() -> None:
    assert due_week(MONDAY_8, LA, 0, 7) == "2026-W11"
    assert due_week(MONDAY_8 - timedelta(hours=2), LA, 0, 7) is None  # 06:00 Monday
    assert due_week(MONDAY_8 + timedelta(days=3), LA, 0, 7) == "2026-W11"  # still that week
    assert due_week(MONDAY_8, LA, 2, 7) is None  # Wednesdays
    # Sunday 23:00 local: the week before, whose digest has been due since its Monday.
    assert due_week(MONDAY_8 - timedelta(hours=9), LA, 0, 7) == "2026-W10"


def test_the_digest_says_the_week_against_the_four_before() -> None:
    digest = Digest("lincoln-es", "2026-W11", (), (("dental", 4),), 6, (3, 5, 4, 4),
                    (("dental", 2), ("food", 4)), ())
    subject, text, html = compose(digest, LA)
    assert "2026-W11" in subject
    assert "Referrals this week: 6 (the four weeks before: 3, 5, 4, 4; average 4.0)" in text
    assert "  food: 4" in text and "none scheduled" in text and "<pre" in html


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return insights_settings(Settings(data_dir=tmp_path))


async def copy(settings: Settings, clock: Any) -> InsightsDeps:
    rt = runtime(settings, districts())
    return InsightsDeps(rt, insights_settings(settings), clock)


async def test_two_copies_request_a_schools_digest_once_a_week(settings: Settings) -> None:
    now = [MONDAY_8]
    first, second = await copy(settings, lambda: now[0]), await copy(settings, lambda: now[0])
    await first.runtime.migrate()
    try:
        await _seed(first)
        sent = await asyncio.gather(send_due(first), send_due(second))
        assert sorted(sent) == [0, 1]
        assert await send_due(first) == 0 and await send_due(second) == 0
        [request] = await _requests(first)
        assert request.week == "2026-W11" and request.school_id == "lincoln-es"
        assert "Referrals this week: 2 (the four weeks before: 1, 0, 0, 0; average 0.2)" \
            in request.text
        assert "added: Smile Bright, service svc-1 (dental): 3 of 5 slots open" in request.text
        assert "Reading night" in request.text
        now[0] += timedelta(days=7)
        assert await send_due(second) == 1
        async with first.runtime.unit_of_work() as uow:
            assert await uow.session.scalar(select(func.count()).select_from(DigestClaim)) == 2
    finally:
        await first.runtime.db.dispose()
        await second.runtime.db.dispose()


async def _seed(deps: InsightsDeps) -> None:
    week_ago = MONDAY_8 - timedelta(days=3)
    async with deps.runtime.unit_of_work() as uow:
        for i, at in enumerate([week_ago, week_ago + timedelta(hours=1),
                                MONDAY_8 - timedelta(days=9)]):
            uow.session.add(ReferralFact(event_id=f"e{i}", district_id="d001",
                                         school_id="lincoln-es", referral_id=f"r{i}",
                                         need="dental", urgency="routine", opened_at=at))
        uow.session.add(StepFact(event_id="m1", district_id="d001", school_id="lincoln-es",
                                 referral_id="r0", step="matched", at=week_ago,
                                 partner_id="p1", partner_name="Smile Bright",
                                 service_id="svc-1", need="dental"))
        uow.session.add(CapacityFact(event_id="c1", district_id="d001", school_id="lincoln-es",
                                     partner_id="p1", service_id="svc-1", capacity=5,
                                     reserved=2, at=week_ago))
        uow.session.add(FamilyEventFact(event_id="f1", district_id="d001",
                                        school_id="lincoln-es", family_event_id="ev1",
                                        title="Reading night",
                                        starts_at=MONDAY_8 + timedelta(days=3), at=week_ago))


async def _requests(deps: InsightsDeps) -> list[StaffDigestRequested]:
    outbox = deps.runtime.tables.outbox
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.execute(select(outbox.c.payload))).all()
    found = []
    for (payload,) in rows:
        env = Envelope.model_validate_json(payload)
        cls = event_class(env.type)
        assert cls is StaffDigestRequested
        found.append(cls.model_validate(env.data))
    return found


@pytest.fixture
async def bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(NotificationsBase.metadata) as bench:
        yield bench


async def test_on_staff_digest_requested_emails_the_schools_staff_list(
        bench: HandlerBench, smtp: tuple[Inbox, str]) -> None:
    inbox, url = smtp
    email = SmtpEmail(url, "Ensemble <noreply@ensemble.local>")
    deps = NotificationsDeps(holds=None, wake=lambda: None, email=email,  # type: ignore[arg-type]
                             districts=districts())
    event = StaffDigestRequested(digest_id="d001:lincoln-es:2026-W11", school_id="lincoln-es",
                                 week="2026-W11", subject="Weekly digest", text="Referrals: 6",
                                 html="<p>Referrals: 6</p>")
    try:
        await bench.handle(notification_handlers.on_staff_digest_requested, event, deps)
        # A school with no staff list gets nothing.
        await bench.handle(notification_handlers.on_staff_digest_requested,
                           event.model_copy(update={"school_id": "roosevelt-ms"}), deps)
    finally:
        await email.aclose()
    assert sorted(m["To"] for m in inbox.messages) == STAFF
    assert all(m["Subject"] == "Weekly digest" for m in inbox.messages)
    assert len({m["Message-ID"] for m in inbox.messages}) == 2


class DownFrom:
    """A mail server that takes the first ``ok`` messages, then says "try later" (421)."""

    def __init__(self, ok: int) -> None:
        self.ok = ok
        self.sent: list[str] = []

    async def send(self, message: Outgoing) -> str:
        if len(self.sent) >= self.ok:
            raise TransientSendError("message refused by the mail server (421)", code=421)
        self.sent.append(message.to)
        return message.idempotency_key


@pytest.mark.parametrize("ok, waits_without_limit", [(0, True), (1, False)])
async def test_a_digest_waits_for_a_down_mail_server_only_while_nobody_has_it(
        bench: HandlerBench, ok: int, waits_without_limit: bool) -> None:
    # Down before the first address: retried until it is back (nobody gets it twice). Down
    # after the first: each retry would send the first address its digest again, so the
    # retries are bounded (RetryLater, parked after ENSEMBLE_MAX_DELIVER) as before.
    email = DownFrom(ok)
    deps = NotificationsDeps(holds=None, wake=lambda: None, email=email,  # type: ignore[arg-type]
                             districts=districts())
    event = StaffDigestRequested(digest_id="d001:lincoln-es:2026-W12", school_id="lincoln-es",
                                 week="2026-W12", subject="Weekly digest", text="Referrals: 6",
                                 html="<p>Referrals: 6</p>")
    with pytest.raises(RetryLater) as raised:
        await bench.handle(notification_handlers.on_staff_digest_requested, event, deps)
    assert isinstance(raised.value, Unavailable) is waits_without_limit
    assert email.sent == STAFF[:ok]
