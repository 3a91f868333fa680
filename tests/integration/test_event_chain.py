"""The event chain as an integrator reads it (issue 21): one scenario through the real loop (all
four services over HTTP, NATS JetStream, the database, SMTP and the development SMS provider),
then every event on every stream read back and grouped by referral. Each referral's events
carry exactly one correlation id, the one its ReferralOpened started, whatever started the
work (a match, a sent message, a provider's report, a family's reply or STOP, a coordinator's
call); every event's `subject` follows the rule docs/contract.md states."""

import json
from collections import defaultdict
from typing import Any

import nats
from conftest import System
from support.outreach import text_back

STREAMS = ("ENSEMBLE_REFERRALS", "ENSEMBLE_PARTNERS", "ENSEMBLE_ENGAGEMENT",
           "ENSEMBLE_NOTIFICATIONS", "ENSEMBLE_INTERNAL")

# docs/contract.md: the referral when the event belongs to one; else, by event name:
NOT_A_REFERRALS = {
    "capacity_changed": "service_id", "family_registered": "family_id",
    "outreach_requested": "outreach_id", "bulk_outreach_requested": "batch_id",
    "family_event_scheduled": "event_id", "family_rsvped": "event_id",
    "family_attended": "event_id", "family_contacted": "family_id",
    "family_unreachable": "outreach_id", "sent": "outreach_id", "failed": "outreach_id",
    "delivered": "outreach_id", "family_replied": "family_id", "family_opted_out": "family_id",
    "family_opted_in": "family_id",
}

SMS_PHONE = "+14155550123"


async def every_event(nats_url: str) -> list[dict[str, Any]]:
    """Every envelope on the event streams, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        found = []
        for stream in STREAMS:
            state = (await js.stream_info(stream)).state
            if not state.messages:
                continue
            for seq in range(max(1, state.first_seq), state.last_seq + 1):
                found.append(json.loads((await js.get_msg(stream, seq)).data or b"{}"))
        return found
    finally:
        await nc.close()


def name_of(envelope: dict[str, Any]) -> str:
    return str(envelope["type"]).split(".")[3]


async def events_until(system: System, done: Any, what: str) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        found = await every_event(system.settings.nats_url)
        return found if done(found) else None

    return await system.eventually(probe, 60, what)


def seen(events: list[dict[str, Any]], name: str, referral_id: str) -> bool:
    return any(name_of(e) == name and e["data"].get("referral_id") == referral_id
               for e in events)


async def test_each_referrals_events_carry_one_correlation_id_and_a_ruled_subject(
        outreach: System) -> None:
    system = outreach
    await system.register_partner(needs=["dental", "tutoring", "food"], capacity=10,
                                  schools=["lincoln-es"], languages=["en", "es"])

    # A message that fails for good on the family's only channel: NotificationFailed, then
    # FamilyUnreachable, started by the provider's answer, not by an event.
    failing = await system.register_family(preferred_language="en")
    system.inbox.refuse = 550
    failed = await system.open_referral(failing, need="food")
    await events_until(system, lambda ev: seen(ev, "failed", failed["id"]),
                       "NotificationFailed")
    system.inbox.refuse = None

    # Email: the family answers the email (FamilyReplied, then FamilyContacted).
    emailed = await system.register_family(preferred_language="es")
    by_email = await system.open_referral(emailed, need="dental")
    [email] = await system.eventually(
        lambda: _value(system.inbox.to(emailed["email"]) or None), what="the email")
    reply = await system.http.post("/api/v1/email/inbound", json={
        "to": email["Reply-To"], "from": emailed["email"], "text": "Sí, gracias"})
    assert reply.status_code == 200, reply.text
    await system.wait_status(by_email["id"], "family_contacted", timeout=30)

    # SMS: the provider reports delivery, the family texts back, then STOP and START.
    texted = await system.register_family(preferred_language="en", phone=SMS_PHONE,
                                          preferred_channel="sms", sms_consent=True)
    by_sms = await system.open_referral(texted, need="tutoring")
    await events_until(system, lambda ev: seen(ev, "delivered", by_sms["id"]),
                       "NotificationDelivered")
    await text_back(system, SMS_PHONE, "yes, mornings please")
    await system.wait_status(by_sms["id"], "family_contacted", timeout=30)
    await text_back(system, SMS_PHONE, "STOP")
    await text_back(system, SMS_PHONE, "START")

    # A coordinator's call: while the outreach is open, and after it is answered.
    called = await system.register_family(preferred_language="en")
    by_call = await system.open_referral(called, need="dental")
    await events_until(system, lambda ev: seen(ev, "sent", by_call["id"]), "NotificationSent")
    for _ in range(2):
        logged = await system.http.post(f"/api/v1/families/{called['id']}/contacts", json={
            "district_id": "d001", "kind": "phone_call", "referral_id": by_call["id"]})
        assert logged.status_code == 201, logged.text

    referrals = {r["id"] for r in (failed, by_email, by_sms, by_call)}

    def complete(events: list[dict[str, Any]]) -> bool:
        names = [name_of(e) for e in events]
        return (names.count("family_contacted") >= 4 and "family_opted_in" in names
                and seen(events, "family_unreachable", failed["id"]))

    events = await events_until(system, complete, "every event of the scenario")

    by_referral: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for envelope in events:
        name, data = name_of(envelope), envelope["data"]
        expected = data.get("referral_id") or data[NOT_A_REFERRALS[name]]
        assert envelope.get("subject") == expected, (name, envelope.get("subject"), data)
        if data.get("referral_id"):
            by_referral[data["referral_id"]].append(envelope)
    assert set(by_referral) == referrals

    chains = {}
    for referral_id, envelopes in by_referral.items():
        ids = {e["correlationid"] for e in envelopes}
        assert len(ids) == 1, (referral_id, sorted((name_of(e), e["correlationid"])
                                                    for e in envelopes))
        [opened] = [e for e in envelopes if name_of(e) == "opened"]
        assert ids == {opened["id"]}  # the chain starts at the ReferralOpened
        chains[referral_id] = opened["id"]

    names = {rid: sorted({name_of(e) for e in envs}) for rid, envs in by_referral.items()}
    assert {"sent", "delivered", "family_replied", "family_contacted"} <= set(names[by_sms["id"]])
    assert {"family_replied", "family_contacted"} <= set(names[by_email["id"]])
    assert {"failed", "family_unreachable"} <= set(names[failed["id"]])
    assert [name_of(e) for e in by_referral[by_call["id"]]].count("family_contacted") == 2

    # Opt-out and opt-in are the family's, not a referral's: they stay in the chain of the
    # message the family answered (the SMS referral's).
    for name in ("family_opted_out", "family_opted_in"):
        [optin] = [e for e in events if name_of(e) == name]
        assert optin["data"]["family_id"] == texted["id"]
        assert optin["correlationid"] == chains[by_sms["id"]]


async def _value(value: Any) -> Any:
    return value
