"""Families answering: replies make a family contacted, silence makes it unreachable after the
configured attempts, STOP/START and unsubscribe links hold at once, and only signed webhooks
count. All four services over real HTTP, NATS, database, SMTP and the dev SMS provider."""

from typing import Any

import pytest
from conftest import System
from support.outreach import eventually_get, signed_post, text_back, texts

PHONE = "+14155550134"


async def sms_family(system: System, **overrides: Any) -> dict[str, Any]:
    return await system.register_family(**({
        "school_id": "roosevelt-ms", "preferred_language": "en", "phone": PHONE,
        "preferred_channel": "sms", "sms_consent": True} | overrides))


async def matched_referral(system: System, family: dict[str, Any]) -> dict[str, Any]:
    await system.register_partner(needs=["mental_health"], languages=["en", "vi"],
                                  schools=["roosevelt-ms", "lincoln-es"])
    return await system.open_referral(family, need="mental_health", urgency="urgent")


async def test_forged_webhooks_are_refused(outreach: System) -> None:
    form = {"MessageSid": "SM" + "2" * 32, "From": PHONE, "Body": "STOP"}
    for path in ("/api/v1/sms/inbound", "/api/v1/sms/status"):
        unsigned = await outreach.http.post(path, data=form)
        forged = await outreach.http.post(path, data=form,
                                          headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
        tampered = await signed_post(outreach, path, form)
        assert tampered.status_code in (200, 204)  # the genuine one passes ...
        assert unsigned.status_code == forged.status_code == 403
    bad_reply = await outreach.http.post("/api/v1/email/inbound", json={
        "to": "reply+00000000-0000-0000-0000-000000000000.00000000000000000000000000000000"
              "@ensemble.local", "from": "x@example.org", "text": "hi"})
    assert bad_reply.status_code == 403


async def test_a_reply_by_text_is_the_contact_and_is_logged(outreach: System) -> None:
    family = await sms_family(outreach)
    referral = await matched_referral(outreach, family)
    await outreach.eventually(lambda: _true(texts(outreach)), what="the text")
    assert (await outreach.referral(referral["id"]))["status"] == "matched"  # sent != contacted

    async def recorded() -> dict | None:  # the provider has it; the send's record may follow
        rows = (await outreach.http.get("/api/v1/messages", params={
            "district_id": "d001", "family_id": family["id"]})).json()
        return rows[0] if len(rows) == 1 and rows[0]["segments"] is not None else None

    message = await outreach.eventually(recorded, what="the send recorded")
    assert message["segments"] >= 1 and message["fell_back"] is False

    await text_back(outreach, PHONE, "Yes please, call me after 3")
    await outreach.wait_status(referral["id"], "family_contacted")
    log = (await outreach.http.get(f"/api/v1/families/{family['id']}/contacts",
                                   params={"district_id": "d001"})).json()
    assert [(e["kind"], e["by"], e["outcome"]) for e in log] == [("sms", "family", "reached")]
    assert log[0]["note"] == "Yes please, call me after 3"  # kept in engagement only
    await eventually_get(outreach, f"/api/v1/messages/{message['id']}",
                         lambda m: m["status"] == "delivered", "the status callback")


async def test_stop_opts_out_at_once_confirms_once_and_start_opts_back_in(
        outreach: System) -> None:
    family = await sms_family(outreach)
    await matched_referral(outreach, family)
    await outreach.eventually(lambda: _true(texts(outreach)), what="the first text")

    await text_back(outreach, PHONE, "stop")
    await text_back(outreach, PHONE, "STOP")  # a second STOP changes nothing
    await eventually_get(outreach, f"/api/v1/families/{family['id']}",
                         lambda f: f["sms_opted_out"], "the family opted out")
    await outreach.eventually(lambda: _true(len(texts(outreach)) == 2), what="confirmation")
    assert "unsubscribed" in texts(outreach)[1]["body"]

    await text_back(outreach, PHONE, "Start")
    await eventually_get(outreach, f"/api/v1/families/{family['id']}",
                         lambda f: not f["sms_opted_out"], "the family opted back in")
    await outreach.eventually(lambda: _true(len(texts(outreach)) == 3), what="opt-in note")
    assert "subscribed to text updates again" in texts(outreach)[2]["body"]
    assert sum("unsubscribed" in t["body"] for t in texts(outreach)) == 1


async def test_the_email_unsubscribe_link_is_real_and_unguessable(outreach: System) -> None:
    family = await outreach.register_family(preferred_language="en")
    await matched_referral(outreach, family)
    [mail] = await outreach.eventually(lambda: _true(outreach.inbox.to(family["email"])),
                                       what="the email")
    link = mail["List-Unsubscribe"].strip("<> \r\n")
    path, _, query = link.removeprefix(outreach.settings.public_base_url).partition("?")
    assert path.endswith("/unsubscribe") and query.startswith("token=")
    assert (await outreach.http.get(path, params={"token": query[6:]})).status_code == 200
    guessed = await outreach.http.post(path, params={"token": "0" * 32})
    assert guessed.status_code == 404
    done = await outreach.http.post(path, params={"token": query[6:]})
    assert done.status_code == 200
    await eventually_get(outreach, f"/api/v1/families/{family['id']}",
                         lambda f: f["email_opted_out"], "the family unsubscribed")


async def test_a_coordinators_call_that_reaches_the_family_is_the_contact(
        outreach: System) -> None:
    family = await outreach.register_family(preferred_language="es")
    referral = await matched_referral(outreach, family)
    await outreach.eventually(lambda: _true(outreach.inbox.to(family["email"])), what="email")
    logged = await outreach.http.post(f"/api/v1/families/{family['id']}/contacts", json={
        "district_id": "d001", "kind": "phone_call", "referral_id": referral["id"],
        "note": "spoke with mother"})
    assert logged.status_code == 201, logged.text
    detail = await outreach.wait_status(referral["id"], "family_contacted")
    assert detail["timeline"][-1]["data"]["kind"] == "phone_call"
    [attempt] = (await outreach.http.get(f"/api/v1/families/{family['id']}/outreach",
                                         params={"district_id": "d001"})).json()
    assert attempt["status"] == "contacted"


@pytest.mark.parametrize("engagement_overrides", [
    {"engagement_timer_seconds": 0.2, "outreach_reply_wait_seconds": 0.5,
     "outreach_max_attempts": 2}])
async def test_silence_on_every_channel_makes_the_family_unreachable(outreach: System) -> None:
    family = await sms_family(outreach, email="quiet.family@example.org")
    referral = await matched_referral(outreach, family)
    [attempt] = await eventually_get(
        outreach, f"/api/v1/families/{family['id']}/outreach",
        lambda rows: rows and rows[0]["status"] == "unreachable", "unreachable", timeout=30)
    assert attempt["attempts"] == 2
    assert len(texts(outreach)) == 1 and len(outreach.inbox.to(family["email"])) == 1

    async def referrals_heard_it() -> bool:  # the event reaches referrals asynchronously
        detail = await outreach.referral(referral["id"])
        return "FamilyUnreachable" in [e["event"] for e in detail["timeline"]]

    assert await outreach.eventually(referrals_heard_it, what="FamilyUnreachable applied")


async def _true(value: Any) -> Any:
    return value
