"""Follow-up timers on the real broker and database: they survive a restart of the service and
fire once while two copies of it run against the same database. The clock is injected, so hours
pass in milliseconds."""

from datetime import UTC, datetime
from typing import Any

import httpx
import nats
from conftest import running, token
from support.clock import FakeClock
from support.waiting import eventually

from ensemble.system import build_services
from runtime.districts import load_districts
from runtime.settings import Settings
from services.referrals.service import build as build_referrals

SUBJECT = "ensemble.d001.referrals.{}"


def admin(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}


def fast_referrals(settings: Settings, clock: FakeClock) -> Any:
    return build_referrals(settings, load_districts(settings.districts_file), clock=clock,
                           follow_up_scan_seconds=0.05, metrics_seconds=0.2)


async def register_family(engagement: httpx.AsyncClient) -> str:
    response = await engagement.post("/api/v1/families", json={
        "district_id": "d001", "school_id": "lincoln-es", "name": "Ana Lopez",
        "preferred_language": "es", "email": "ana@example.org", "preferred_channel": "email"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def open_crisis(http: httpx.AsyncClient, family_id: str, student: str) -> str:
    body = {"district_id": "d001", "school_id": "lincoln-es", "student_ref": student,
            "family_id": family_id, "need": "crisis", "urgency": "crisis", "consent": "given"}
    response = await http.post("/api/v1/referrals", json=body)  # waits for the family
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def events_of(http: httpx.AsyncClient, referral_id: str) -> list[str]:
    response = await http.get(f"/api/v1/referrals/{referral_id}", params={"district_id": "d001"})
    assert response.status_code == 200, response.text
    return [e["event"] for e in response.json()["timeline"]]


async def on_stream(url: str, name: str) -> int:
    nc = await nats.connect(url)
    try:
        subject = SUBJECT.format(name)
        info = await nc.jetstream().stream_info("ENSEMBLE_REFERRALS", subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))
    finally:
        await nc.close()


async def test_a_follow_up_timer_fires_after_a_restart(settings: Settings) -> None:
    clock = FakeClock(datetime.now(UTC))
    [engagement] = build_services(settings, ("engagement",))
    async with running(settings, [engagement]) as eng_url, \
            httpx.AsyncClient(base_url=eng_url, timeout=10, headers=admin(settings)) as eng:
        family_id = await register_family(eng)
        first = fast_referrals(settings, clock)
        async with running(settings, [first]) as url, \
                httpx.AsyncClient(base_url=url, timeout=10, headers=admin(settings)) as http:
            rid = await open_crisis(http, family_id, "stu-restart")
            clock.advance(minutes=50)
            await http.get("/health/live")
            assert await events_of(http, rid) == ["ReferralOpened"]
        # The service is down when the hour passes.
        clock.advance(minutes=20)
        second = fast_referrals(settings, clock)
        async with running(settings, [second]) as url, \
                httpx.AsyncClient(base_url=url, timeout=10, headers=admin(settings)) as http:
            async def due() -> bool:
                return "FollowUpDue" in await events_of(http, rid)

            await eventually(due, "FollowUpDue after the restart")
            work = (await http.get("/api/v1/referrals/follow-ups",
                                   params={"district_id": "d001"})).json()
            assert [r["id"] for r in work["schools"][0]["referrals"]] == [rid]
            assert work["schools"][0]["referrals"][0]["follow_up"] == "overdue"
            clock.advance(hours=1)

            async def escalated() -> bool:
                return "ReferralEscalated" in await events_of(http, rid)

            await eventually(escalated, "escalation after the second window")
            assert await events_of(http, rid) == [
                "ReferralOpened", "FollowUpDue", "ReferralEscalated"]

            async def published() -> bool:
                return await on_stream(settings.nats_url, "escalated") == 1

            await eventually(published, "escalation on the stream")
            assert await on_stream(settings.nats_url, "follow_up_due") == 1

            async def gauge() -> bool:
                text = (await http.get("/metrics")).text
                return 'ensemble_referrals_overdue{district="d001"} 1.0' in text and \
                    'ensemble_referrals_open{district="d001",status="opened",urgency="crisis"} ' \
                    '1.0' in text

            await eventually(gauge, "the overdue gauge refreshed from the database")


async def test_two_copies_fire_each_timer_once(settings: Settings) -> None:
    clock = FakeClock(datetime.now(UTC))
    [engagement] = build_services(settings, ("engagement",))
    copies = [fast_referrals(settings, clock) for _ in range(2)]
    async with running(settings, [engagement]) as eng_url, \
            httpx.AsyncClient(base_url=eng_url, timeout=10, headers=admin(settings)) as eng, \
            running(settings, [copies[0]]) as url_a, running(settings, [copies[1]]) as url_b, \
            httpx.AsyncClient(base_url=url_a, timeout=10, headers=admin(settings)) as a, \
            httpx.AsyncClient(base_url=url_b, timeout=10, headers=admin(settings)) as b:
        family_id = await register_family(eng)
        ids = [await open_crisis(a if i % 2 else b, family_id, f"stu-{i}") for i in range(6)]
        clock.advance(minutes=61)

        async def all_due() -> bool:
            return all(["FollowUpDue" in await events_of(a, rid) for rid in ids])

        await eventually(all_due, "every timer fired")

        async def all_published() -> bool:
            return await on_stream(settings.nats_url, "follow_up_due") >= len(ids)

        await eventually(all_published, "FollowUpDue published")
        clock.advance(minutes=30)  # more scans by both copies, inside the second window
        for _ in range(10):
            await a.get("/health/live")
        for rid in ids:
            assert (await events_of(b, rid)).count("FollowUpDue") == 1
        assert await on_stream(settings.nats_url, "follow_up_due") == len(ids)
        assert await on_stream(settings.nats_url, "escalated") == 0
