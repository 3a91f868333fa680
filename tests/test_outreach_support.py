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
from services.engagement.config import EngagementConfig
from services.engagement.service import build as build_engagement
from services.notifications.config import NotificationsConfig
from services.notifications.service import build as build_notifications
from services.notifications.twilio import SIGNATURE_HEADER, compute_signature
from services.partners.service import build as build_partners
from services.referrals.service import build as build_referrals

ALWAYS_OPEN = {"quiet_start": time(0, 0), "quiet_end": time(0, 0)}


@pytest.fixture
def engagement_config() -> EngagementConfig:
    return EngagementConfig(timer_seconds=0.2, bulk_chunk=200)


@pytest.fixture
async def outreach(settings: Settings, smtp: tuple[Inbox, str],
                   engagement_config: EngagementConfig) -> AsyncIterator[System]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings.model_copy(update={"public_base_url": url})
    districts = load_districts(settings.districts_file)
    services = [
        build_referrals(settings, districts),
        build_partners(settings, districts),
        build_engagement(settings, districts, config=engagement_config),
        build_notifications(settings, districts,
                            config=NotificationsConfig(**ALWAYS_OPEN, retry_base_seconds=0.2)),
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
