"""Partner links over the whole system (real HTTP, NATS, SQLite, SMTP): when a referral is
matched, the partner's contact is e-mailed, in the partner's language, a link to the referral
in the partner's view; the link answers once (here: accept) and then says it no longer works;
an expired link, a forged one and one whose match ended open nothing; every use and refusal is
in the district's audit trail."""

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from conftest import Inbox, System, _QuietServer, token
from prometheus_client import REGISTRY
from support.waiting import eventually

from contracts.events import PartnerLinkRequested
from ensemble.system import build_console, build_services, console_settings
from runtime.host import create_app
from runtime.settings import Settings
from services.console.settings import ConsoleSettings

CONTACT = "intake@sonrisa.example"


@pytest.fixture
async def site(settings: Settings, smtp: tuple[Inbox, str]) -> AsyncIterator[System]:
    """The services and the console in one app, as `ensemble up` serves them."""
    services = build_services(settings)
    for service in services:
        await service.runtime.migrate()
    port = int(settings.public_base_url.rsplit(":", 1)[1])
    app = create_app(services, web=build_console(console_settings(settings)))
    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                         access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    admin = {"Authorization": "Bearer " + token(settings, "district_admin", "d001")}
    try:
        async with httpx.AsyncClient(base_url=settings.public_base_url, timeout=15,
                                     headers=admin) as http:
            yield System(settings, http, {s.name: s for s in services}, smtp[0],
                         settings.data_dir / "sms.jsonl")
    finally:
        server.should_exit = True
        await task


def _text(mail: Message) -> str:
    part = mail.get_payload(0) if mail.is_multipart() else mail
    return str(part.get_payload(decode=True).decode())  # type: ignore[union-attr]


async def _matched_with_link(system: System) -> tuple[dict[str, Any], dict[str, Any], str]:
    partner = await system.register_partner(name="Sonrisa Dental", languages=["es", "en"],
                                            email=CONTACT)
    family = await system.register_family()
    referral = await system.open_referral(family)
    await system.wait_status(referral["id"], "matched")
    mail = await eventually(lambda: (system.inbox.to(CONTACT) or [None])[-1],
                            "the partner's e-mail", 20)
    subject = str(make_header(decode_header(str(mail["Subject"]))))
    assert subject.startswith("Nueva derivación para Sonrisa Dental")
    body = _text(mail)
    assert "Urgencia" in body and "Maria" not in body  # the partner's language; no family
    found = re.search(r"(http://\S+/p/\S+)", body)
    assert found is not None
    return partner, referral, found.group(1)


def _audit(settings: Settings) -> list[dict[str, str]]:
    path = ConsoleSettings(**settings.model_dump()).sign_in_audit_dir / "d001.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_partner_answers_once_from_the_link_in_its_email(site: System) -> None:
    partner, referral, link = await _matched_with_link(site)
    async with httpx.AsyncClient(timeout=15) as browser:
        page = await browser.get(link)
        assert page.status_code == 200, page.text
        assert "A referral for your organization" in page.text
        for action in ("accept", "decline"):
            assert f'value="{action}"' in page.text
        assert 'value="in-service"' not in page.text  # not before accepting
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        done = await browser.post(link, data={"csrf": csrf.group(1), "action": "accept"})
        assert done.status_code == 200 and "Thank you" in done.text
        detail = await site.wait_status(referral["id"], "accepted")
        assert detail["status"] == "accepted"
        # Replayed: the same answer again, or another one, opens nothing.
        again = await browser.post(link, data={"csrf": csrf.group(1), "action": "decline",
                                               "reason": "no_capacity"})
        assert again.status_code == 410 and "no longer works" in again.text
        assert "already been used" in again.text
        reread = await browser.get(link)
        assert reread.status_code == 410 and "already been used" in reread.text
    assert (await site.referral(referral["id"]))["status"] == "accepted"
    kinds = [(e["kind"], e.get("reason")) for e in _audit(site.settings)]
    assert ("link_used", "accept") in kinds and ("link_refused", "used") in kinds
    assert all(e["subject"] == partner["id"] for e in _audit(site.settings))


async def test_an_expired_or_forged_link_opens_nothing(site: System) -> None:
    _partner, referral, link = await _matched_with_link(site)
    token = link.rsplit("/p/", 1)[1]
    link_id = jwt.decode(token, options={"verify_signature": False})["jti"]
    past = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    expired = jwt.encode({"jti": link_id, "purpose": "partner_referral", "exp": past},
                         site.settings.partner_link_secret, algorithm="HS256")
    forged = jwt.encode({"jti": link_id, "purpose": "partner_referral", "exp": past + 10**6},
                        "not-the-partners-service-secret-0123456789", algorithm="HS256")
    other_purpose = jwt.encode({"jti": link_id, "purpose": "other", "exp": past + 10**6},
                               site.settings.partner_link_secret, algorithm="HS256")
    base = link.rsplit("/p/", 1)[0]
    async with httpx.AsyncClient(timeout=15) as browser:
        page = await browser.get(f"{base}/p/{expired}")
        assert page.status_code == 410 and "It has expired" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', (await browser.get(link)).text)
        assert csrf is not None
        refused = await browser.post(f"{base}/p/{expired}",
                                     data={"csrf": csrf.group(1), "action": "accept"})
        assert refused.status_code == 410
        for bad in (forged, other_purpose, "not-a-token-at-all-0123"):
            answer = await browser.get(f"{base}/p/{bad}")
            assert answer.status_code == 410 and "not a valid link" in answer.text
    assert (await site.referral(referral["id"]))["status"] == "matched"  # nothing was done
    assert ("link_refused", "expired") in [(e["kind"], e.get("reason"))
                                            for e in _audit(site.settings)]


async def test_the_link_stops_when_the_match_ends(site: System) -> None:
    _partner, referral, link = await _matched_with_link(site)
    cancelled = await site.http.post(f"/api/v1/referrals/{referral['id']}/cancel", json={
        "district_id": "d001", "reason": "family_moved", "cancelled_by": "test-admin"})
    assert cancelled.status_code == 200, cancelled.text

    async def ended() -> str | None:
        async with httpx.AsyncClient(timeout=15) as browser:
            page = await browser.get(link)
        return page.text if page.status_code == 410 else None

    assert "no longer matched to your organization" in await eventually(
        ended, "link ended", 20)


def _count(name: str, event: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, {"service": "notifications", "event": event,
                                             **labels})
    return found or 0.0


async def test_a_link_waits_out_a_mail_server_outage_and_is_never_dead_lettered(
        site: System) -> None:
    # The mail server answers "421 service not available" to every message for longer than
    # the consumer's deliveries allow (max_deliver is 3 here): the link must still reach the
    # partner once it is back, not be parked for a hand replay.
    event = PartnerLinkRequested.ce_type()
    parked_before = _count("ensemble_dead_letters_total", event)
    retried_before = _count("ensemble_messages_consumed_total", event, result="retried")
    site.inbox.refuse = 421
    await site.register_partner(name="Sonrisa Dental", languages=["es", "en"], email=CONTACT)
    referral = await site.open_referral(await site.register_family())
    await site.wait_status(referral["id"], "matched")
    retries = site.settings.max_deliver + 2  # past where any other failure is parked
    await eventually(
        lambda: _count("ensemble_messages_consumed_total", event, result="retried")
        >= retried_before + retries, f"the link retried {retries} times", 30)
    assert not site.inbox.to(CONTACT)
    assert _count("ensemble_dead_letters_total", event) == parked_before

    site.inbox.refuse = None
    mail = await eventually(lambda: (site.inbox.to(CONTACT) or [None])[-1],
                            "the partner's e-mail after the outage", 20)
    assert "/p/" in _text(mail)
    assert _count("ensemble_dead_letters_total", event) == parked_before
