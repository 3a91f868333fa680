"""A family registered with engagement and its referral opened at once, back to back: the
referral is not refused because FamilyRegistered is still on its way (README, "Opening a
referral"). Referrals waits briefly for the family, then answers 409 with Retry-After."""

import asyncio
import time
import uuid

import httpx
import nats
from conftest import System, running, token

from contracts.envelope import Envelope
from contracts.events import FamilyRegistered
from contracts.subjects import subject_for
from runtime.districts import load_districts
from runtime.settings import Settings
from services.referrals.service import build as build_referrals
from services.referrals.settings import ReferralsSettings


def referral_for(family_id: str) -> dict[str, str]:
    return {"district_id": "d001", "school_id": "lincoln-es", "family_id": family_id,
            "student_ref": f"stu-{uuid.uuid4().hex[:8]}", "need": "dental",
            "urgency": "routine", "consent": "given"}


async def test_register_then_open_back_to_back(system: System) -> None:
    for _ in range(5):
        family = await system.register_family()
        response = await system.http.post("/api/v1/referrals", json=referral_for(family["id"]))
        assert response.status_code == 201, response.text


async def publish_registration(url: str, family_id: str) -> None:
    event = FamilyRegistered(family_id=family_id, school_id="lincoln-es",
                             preferred_language="es")
    envelope = Envelope.wrap(event, source="/tests/engagement", district="d001",
                             school="lincoln-es", subject=family_id)
    nc = await nats.connect(url)
    try:
        await nc.jetstream().publish(subject_for(FamilyRegistered, "d001"),
                                     envelope.to_bytes())
    finally:
        await nc.close()


async def test_the_referral_waits_for_a_registration_still_on_its_way(
        settings: Settings) -> None:
    """Deterministic: the registration is published only after the POST has started."""
    service = build_referrals(settings, load_districts(settings.districts_file))
    admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
    family_id = str(uuid.uuid4())
    async with running(settings, [service]) as url, \
            httpx.AsyncClient(base_url=url, headers=admin, timeout=15) as http:
        started = time.monotonic()
        post = asyncio.create_task(http.post("/api/v1/referrals", json=referral_for(family_id)))
        await asyncio.sleep(0.6)
        assert not post.done(), (await post).text
        await publish_registration(settings.nats_url, family_id)
        response = await post
        assert response.status_code == 201, response.text
        assert response.json()["family_id"] == family_id
        assert time.monotonic() - started < 5


async def test_a_family_that_never_arrives_is_a_409_with_retry_after(settings: Settings) -> None:
    settings = ReferralsSettings.of(settings, family_wait_seconds=0.3)
    service = build_referrals(settings, load_districts(settings.districts_file))
    admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
    async with running(settings, [service]) as url, \
            httpx.AsyncClient(base_url=url, headers=admin, timeout=15) as http:
        started = time.monotonic()
        response = await http.post("/api/v1/referrals", json=referral_for("no-such-family"))
        assert response.status_code == 409
        assert time.monotonic() - started >= 0.3
        assert "not registered" in response.json()["detail"]
        assert "waited 0.3 s" in response.json()["detail"]
        assert response.headers["Retry-After"] == "5"
        listed = await http.get("/api/v1/referrals", params={"district_id": "d001"})
        assert listed.json() == []
