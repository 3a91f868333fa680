"""Issue 8: the SMTP server and the SMS provider down for a while mid-stream, then back. Every
family still gets exactly one message; nothing is dead-lettered; the dispatcher's retries carry
the outage."""

import asyncio
from pathlib import Path

import pytest
from support.ledger import make_cases, message_key
from support.processes import MailSink
from support.scenario import assert_clean, count, scenario, stream_with_fault

REFERRALS = count(150, 40)
RATE = 15.0
OUTAGE_SECONDS = 6


@pytest.mark.slow
async def test_smtp_and_sms_provider_down_then_back(tmp_path: Path) -> None:
    async with scenario(tmp_path) as (system, ledger):
        await ledger.register_partners(capacity=REFERRALS * 2)
        cases = make_cases(REFERRALS)

        async def outage() -> None:
            await asyncio.to_thread(system.mail.stop)  # connections refused
            system.sms.failing = "transient"  # HTTP 503 from the provider
            await asyncio.sleep(OUTAGE_SECONDS)
            system.sms.failing = None
            await asyncio.to_thread(system.mail.start)

        await stream_with_fault(ledger, cases, 0.3, outage, rate=RATE)
        report = await ledger.check(cases, timeout=240)
        assert_clean(report)
        retried = await system.process("notifications").metric(
            "ensemble_notifications_total", result="retried")
        print(f"outage of {OUTAGE_SECONDS} s: {retried:.0f} sends retried")


async def test_a_resent_email_keeps_its_message_id() -> None:
    """A resend after a crash carries the same Message-ID, so a relay or a reader can tell
    (fixed in ea6a4e3: it was make_msgid(idstring=key), random per send)."""
    from services.notifications.providers import Outgoing, SmtpEmail

    sink = MailSink()
    sink.start()
    try:
        provider = SmtpEmail(sink.url, "Ensemble <noreply@ensemble.local>")
        outgoing = Outgoing("family@example.org", "Hello", "text", None, "msg-key-1")
        for _ in range(2):  # the same message, sent again after a crash
            await provider.send(outgoing)
        first, second = (m["Message-ID"] for m in sink.snapshot())
        assert message_key(first) == message_key(second) == "msg-key-1"
        assert first == second
    finally:
        sink.stop()
