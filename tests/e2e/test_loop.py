"""The closed loop end to end: all four services, real NATS JetStream, real database, real SMTP."""

import asyncio
import json
import os
import sys
from typing import Any

from conftest import System
from support.replies import family_replies_by_email

from services.notifications.twilio import SIGNATURE_HEADER, compute_signature


async def family_replies_by_sms(system: System, phone: str, text: str) -> None:
    """The family texts back; the provider posts Twilio's signed inbound webhook."""
    await system.eventually(lambda: _async(system.sms_store.exists()), what="the text")
    url = str(system.http.base_url).rstrip("/") + "/api/v1/sms/inbound"
    form = {"MessageSid": "SM" + "1" * 32, "From": phone, "To": "+15005550006", "Body": text}
    signature = compute_signature(system.settings.sms_auth_token, url, form)
    reply = await system.http.post(url, data=form, headers={SIGNATURE_HEADER: signature})
    assert reply.status_code == 200, reply.text


async def _async(value: Any) -> Any:
    return value


async def test_referral_travels_the_whole_loop(system: System) -> None:
    partner = await system.register_partner(capacity=2)
    family = await system.register_family(preferred_language="es")
    referral = await system.open_referral(family)
    assert referral["status"] == "opened"

    await family_replies_by_email(system, family, "Sí, gracias")  # a sent email is an attempt
    contacted = await system.wait_status(referral["id"], "family_contacted")
    assert contacted["partner_id"] == partner["id"]

    [email] = system.inbox.to(family["email"])
    assert email["Subject"] == "Buenas noticias de Lincoln Elementary"
    text = email.get_payload(0).get_payload(decode=True).decode()
    assert "Smile Bright Dental" in text and "atención dental" in text

    partner_now = (await system.http.get(f"/api/v1/partners/{partner['id']}",
                                         params={"district_id": "d001"})).json()
    assert partner_now["services"][0]["reserved"] == 1

    closed = await system.http.post(f"/api/v1/referrals/{referral['id']}/close",
                                    json={"district_id": "d001", "outcome": "services_received"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"

    detail = await system.referral(referral["id"])
    assert [e["event"] for e in detail["timeline"]] == [
        "ReferralOpened", "PartnerMatched", "FamilyContacted", "ReferralClosed"]
    assert [e["status_after"] for e in detail["timeline"]] == [
        "opened", "matched", "family_contacted", "closed"]
    times = [e["at"] for e in detail["timeline"]]
    assert times == sorted(times)
    assert detail["timeline"][1]["data"]["reasons"]  # why this partner, for the coordinator

    async def released() -> bool:
        p = (await system.http.get(f"/api/v1/partners/{partner['id']}",
                                   params={"district_id": "d001"})).json()
        return p["services"][0]["reserved"] == 0

    await system.eventually(released, what="capacity released on close")


async def test_no_eligible_partner_is_flagged_not_lost(system: System) -> None:
    await system.register_partner(needs=["dental"])
    family = await system.register_family()
    referral = await system.open_referral(family, need="vision")

    detail = await system.wait_status(referral["id"], "no_partner")
    assert [e["event"] for e in detail["timeline"]] == ["ReferralOpened", "NoPartnerAvailable"]
    assert "vision" in detail["timeline"][1]["data"]["reason"]
    assert system.inbox.messages == []

    closed = await system.http.post(f"/api/v1/referrals/{referral['id']}/close",
                                    json={"district_id": "d001", "outcome": "unmet_no_partner"})
    assert closed.json()["outcome"] == "unmet_no_partner"


async def test_family_preferring_sms_gets_a_text_in_its_language(system: System) -> None:
    await system.register_partner(needs=["mental_health"], languages=["en", "vi"],
                                  schools=["roosevelt-ms"])
    family = await system.register_family(school_id="roosevelt-ms", preferred_language="vi",
                                          phone="(415) 555-0134", preferred_channel="sms",
                                          sms_consent=True)
    assert family["phone"] == "+14155550134"
    referral = await system.open_referral(family, need="mental_health", urgency="urgent")
    await family_replies_by_sms(system, family["phone"], "Yes, thank you")
    await system.wait_status(referral["id"], "family_contacted")

    [sms] = [json.loads(line) for line in system.sms_store.read_text().splitlines()]
    assert sms["to"] == "+14155550134"
    assert "Roosevelt Middle School" in sms["body"] and "STOP" in sms["body"]
    assert system.inbox.messages == []  # one message per outreach, on the preferred channel


async def test_matching_skips_a_full_partner(system: System) -> None:
    full = await system.register_partner(name="Full Clinic", capacity=0)
    open_ = await system.register_partner(name="Open Clinic", capacity=1, languages=["en"])
    family = await system.register_family()
    referral = await system.open_referral(family)
    await family_replies_by_email(system, family, "Yes")
    detail = await system.wait_status(referral["id"], "family_contacted")
    assert detail["partner_id"] == open_["id"] != full["id"]


async def test_a_family_reply_typed_by_hand_with_the_cli_reaches_the_loop(
        system: System) -> None:
    """`ensemble sms-reply`, what the README gives a newcomer to play the family: signed with
    the development provider's secret, it is taken as the family's answer."""
    await system.register_partner(needs=["mental_health"], languages=["en", "vi"],
                                  schools=["roosevelt-ms"])
    family = await system.register_family(school_id="roosevelt-ms", preferred_language="vi",
                                          phone="(415) 555-0134", preferred_channel="sms",
                                          sms_consent=True)
    referral = await system.open_referral(family, need="mental_health", urgency="urgent")
    await system.eventually(lambda: _async(system.sms_store.exists()), what="the text")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    assert system.settings.sms_auth_token == "dev-token"  # the README's development secret
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ensemble.cli", "sms-reply", "Vâng, cảm ơn", "--from",
        family["phone"], "--url", str(system.http.base_url).rstrip("/"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await done.communicate()
    assert done.returncode == 0, out.decode() + err.decode()
    await system.wait_status(referral["id"], "family_contacted")
