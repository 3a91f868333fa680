"""Shared by the outreach, family-event and announcement tests: all four services over real
HTTP whose public base URL is their own (so status callbacks and signed webhooks reach them),
the development SMS provider posting inbound texts to our webhook, quiet hours off."""

import json
from collections.abc import AsyncIterator
from datetime import time
from typing import Any

import httpx
import pytest
from conftest import Inbox, System, running, token

from ensemble.embedded import DevSmsServer, free_port
from runtime.districts import load_districts
from runtime.settings import Settings
from services.engagement.service import build as build_engagement
from services.engagement.settings import EngagementSettings
from services.notifications.service import build as build_notifications
from services.notifications.settings import NotificationsSettings
from services.notifications.twilio import SIGNATURE_HEADER, compute_signature
from services.partners.service import build as build_partners
from services.referrals.service import build as build_referrals

ALWAYS_OPEN = {"quiet_hours_start": time(0, 0), "quiet_hours_end": time(0, 0)}


@pytest.fixture
def engagement_overrides() -> dict[str, Any]:
    """Engagement's own settings for the test (a test parametrizes it for others)."""
    return {"engagement_timer_seconds": 0.2, "bulk_chunk": 200}


@pytest.fixture
async def outreach(settings: Settings, smtp: tuple[Inbox, str],
                   engagement_overrides: dict[str, Any]) -> AsyncIterator[System]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings.model_copy(update={"public_base_url": url})
    districts = load_districts(settings.districts_file)
    services = [
        build_referrals(settings, districts),
        build_partners(settings, districts),
        build_engagement(EngagementSettings.of(settings, **engagement_overrides), districts),
        build_notifications(NotificationsSettings.of(settings, **ALWAYS_OPEN,
                                                     send_retry_base_seconds=0.2), districts),
    ]
    sms_store = settings.data_dir / "sms" / "messages.jsonl"
    sms_port = int(str(settings.sms_api_url).rsplit(":", 1)[1])
    admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
    async with DevSmsServer(sms_store, sms_port, settings.sms_auth_token,
                            f"{url}/api/v1/sms/inbound") as sms, \
            running(settings, services, port=port), \
            httpx.AsyncClient(base_url=url, timeout=20, headers=admin) as http:
        system = System(settings, http, {s.name: s for s in services}, smtp[0], sms_store)
        system.notes["sms_app"] = sms.app
        system.notes["sms_url"] = str(settings.sms_api_url)
        yield system


def texts(system: System) -> list[dict[str, Any]]:
    if not system.sms_store.exists():
        return []
    return [json.loads(line) for line in system.sms_store.read_text().splitlines() if line]


async def text_back(system: System, phone: str, body: str) -> None:
    """The family texts us through the development provider (signed like Twilio)."""
    async with httpx.AsyncClient(timeout=20) as client:
        response = await client.post(f"{system.notes['sms_url']}/_dev/inbound",
                                     data={"From": phone, "Body": body})
    assert response.status_code == 200 and response.json()["webhook_status"] == 200, \
        response.text


async def signed_post(system: System, path: str, form: dict[str, str]) -> httpx.Response:
    url = f"{system.settings.public_base_url}{path}"
    signature = compute_signature(system.settings.sms_auth_token, url, form)
    return await system.http.post(path, data=form, headers={SIGNATURE_HEADER: signature})


async def eventually_get(system: System, path: str, check: Any, what: str,
                         timeout: float = 20) -> Any:
    async def probe() -> Any:
        response = await system.http.get(path, params={"district_id": system.district})
        assert response.status_code == 200, response.text
        body = response.json()
        return body if check(body) else None

    return await system.eventually(probe, timeout, what)


async def seed_families(system: System, count: int, school_id: str = "lincoln-es",
                        sms_every: int = 3, unreachable_every: int = 0,
                        grades: tuple[int, ...] = (1,)) -> list[str]:
    """Families written straight into engagement's tables (registering thousands over HTTP
    would test the HTTP layer, not outreach): every ``sms_every``-th prefers SMS, one in
    ``unreachable_every`` has no consent at all; each has a student in one of ``grades``."""
    from sqlalchemy import insert

    from runtime.db import utcnow
    from services.engagement.tables import Family, Student

    now = utcnow()
    prefix = f"{school_id}-{free_port()}"
    families, students = [], []
    for n in range(count):
        family_id = f"{prefix}-{n:06d}"
        sms = sms_every and n % sms_every == 0
        silent = unreachable_every and n % unreachable_every == unreachable_every - 1
        families.append({
            "id": family_id, "district_id": "d001", "school_id": school_id,
            "name": f"Family {n}", "preferred_language": ("es", "en", "vi", "zh", "ar")[n % 5],
            "phone": f"+1415{n % 10_000_000:07d}", "email": f"family{n}@{prefix}.example.org",
            "preferred_channel": "sms" if sms else "email", "sms_consent": not silent,
            "email_consent": not silent, "sms_opted_out": False, "email_opted_out": False,
            "created_at": now})
        students.append({"district_id": "d001", "student_ref": f"stu-{family_id}",
                         "family_id": family_id, "school_id": school_id,
                         "grade": grades[n % len(grades)]})
    runtime = system.services["engagement"].runtime
    async with runtime.unit_of_work() as uow:
        await uow.session.execute(insert(Family), families)
        await uow.session.execute(insert(Student), students)
    return [f["id"] for f in families]
