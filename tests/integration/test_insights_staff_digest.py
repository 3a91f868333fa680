"""The weekly staff digest end to end, on a real nats-server, each database and a real SMTP
server: two copies of insights and notifications running; each school with a staff list gets
one digest a week, not one per copy, and none again after a restart."""

from datetime import UTC, datetime, timedelta

import nats
from conftest import Inbox, running
from support.waiting import eventually

from benchmarks.district_year import district_year, publish
from runtime.districts import Districts, load_districts
from runtime.settings import Settings
from services.insights.digest import send_due
from services.insights.rebuild import caught_up
from services.insights.service import build as build_insights
from services.insights.settings import insights_settings
from services.notifications.service import build as build_notifications

MONDAY_8 = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # Monday 08:00 in Los Angeles
STAFF = ["counselor@lincoln.example.org", "principal@lincoln.example.org"]


def districts() -> Districts:
    raw = load_districts(Settings().districts_file).model_dump()
    raw["districts"][0]["schools"][0]["staff_emails"] = STAFF
    return Districts.model_validate(raw)


async def test_each_school_gets_one_digest_a_week_from_two_copies_and_after_a_restart(
        settings: Settings, smtp: tuple[Inbox, str]) -> None:
    inbox = smtp[0]
    config = insights_settings(settings, digest_poll_seconds=0.2)
    schools = districts()
    now = [MONDAY_8]
    one, two = (build_insights(config, schools, clock=lambda: now[0]) for _ in range(2))
    notifications = build_notifications(settings, schools)
    items = list(district_year(80, district="d001", schools=["lincoln-es", "roosevelt-ms"],
                               end=MONDAY_8, seed=5))
    async with running(settings, [one, notifications]), running(config, [two], migrate=False):
        nc = await nats.connect(settings.nats_url)
        try:
            await publish(nc.jetstream(), items)
        finally:
            await nc.close()
        await eventually(lambda: caught_up(one.runtime), "the store caught up", 120, 0.5)
        await eventually(lambda: len(inbox.messages) >= len(STAFF), "the digests", 60)
        assert sorted(m["To"] for m in inbox.messages) == STAFF
        assert all("lincoln-es" in m["Subject"] and "2026-W11" in m["Subject"]
                   for m in inbox.messages)
        body = inbox.messages[0].get_payload()[0].get_payload(decode=True).decode()
        assert "Referrals this week:" in body and "Open slots by need:" in body
        # Roosevelt has no staff list: no digest; the other copy finds the week claimed.
        assert await send_due(two.deps) == 0 and await send_due(one.deps) == 0
    restarted = build_insights(config, schools, clock=lambda: now[0])
    async with running(config, [restarted], migrate=False):
        assert await send_due(restarted.deps) == 0
        now[0] += timedelta(days=7)
        assert await send_due(restarted.deps) == 1
    # Next week's request waits in NATS for notifications to be back.
    async with running(settings, [build_notifications(settings, schools)], migrate=False):
        await eventually(lambda: len(inbox.messages) >= 2 * len(STAFF), "next week's", 60)
    assert sorted(m["Subject"].split("(")[-1] for m in inbox.messages) == \
        ["2026-W11)"] * 2 + ["2026-W12)"] * 2
