"""Internationalized email addresses, driven from outside: the API accepts josé@…, and where the
district's mail server has no SMTPUTF8 that family's email fails alone, with a clear reason, on
the email channel; the next family's email goes out on the same kept connection."""

from collections.abc import Iterator
from typing import Any

import nats
import pytest
from aiosmtpd.controller import Controller
from conftest import Inbox, System

from contracts.envelope import decode_envelope
from contracts.events import NotificationFailed
from ensemble.embedded import free_port


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, str]]:
    """The suite's SMTP server without SMTPUTF8 (aiosmtpd's Controller offers it by default)."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    controller.start()
    try:
        yield inbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


async def _message(system: System, family_id: str, status: str) -> dict[str, Any] | None:
    messages = (await system.http.get("/api/v1/messages", params={
        "district_id": "d001", "family_id": family_id})).json()
    return messages[0] if messages and messages[0]["status"] == status else None


async def test_a_non_ascii_address_fails_alone_and_says_why(system: System) -> None:
    await system.register_partner(capacity=5)
    jose = await system.register_family(name="José Pérez", email="josé@ejemplo.es")
    assert jose["email"] == "josé@ejemplo.es"  # accepted: a mail server with SMTPUTF8 takes it
    ana = await system.register_family(name="Ana Ruiz", email="ana@example.org")
    await system.open_referral(jose)
    failed = await system.eventually(lambda: _message(system, jose["id"], "failed"),
                                     what="josé's message failed")
    await system.open_referral(ana)  # after josé's: it comes on the connection josé's used

    sent = await system.eventually(lambda: _message(system, ana["id"], "sent"),
                                   what="ana's message sent")
    assert [m["To"] for m in system.inbox.messages] == ["ana@example.org"]
    assert sent["channel"] == "email"
    assert failed["channel"] == "email" and "SMTPUTF8" in failed["last_error"]

    nc = await nats.connect(system.settings.nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe("ensemble.d001.notifications.failed",
                                                  stream="ENSEMBLE_NOTIFICATIONS")
        [raw] = await sub.fetch(1, timeout=10)
        _, event = decode_envelope(raw.data)
        assert isinstance(event, NotificationFailed)
        assert event.family_id == jose["id"] and event.channel == "email" and event.permanent
        assert "SMTPUTF8" in event.reason and "josé" not in event.reason
    finally:
        await nc.close()
