"""Delivery guarantees against the real server: one effect per event, dead letters with reasons,
and a consumer that keeps going after a message it can never handle."""

import uuid
from datetime import UTC, datetime

import nats
from conftest import System
from nats.js import JetStreamContext

from contracts.envelope import Envelope
from contracts.events import PartnerMatched, ReferralOpened


def opened(family_id: str, referral_id: str | None = None) -> Envelope:
    event = ReferralOpened(referral_id=referral_id or str(uuid.uuid4()), school_id="lincoln-es",
                           student_ref="stu-x", family_id=family_id, need="dental",
                           urgency="routine", consent="given", opened_at=datetime.now(UTC))
    return Envelope.wrap(event, source="/tests", district="d001", school="lincoln-es",
                         subject=event.referral_id)


async def dead_letters(js: JetStreamContext, count: int,
                       service: str = "*") -> list[nats.aio.msg.Msg]:
    """The first ``count`` dead letters one service parked (every service consuming the
    subject parks its own copy)."""
    sub = await js.pull_subscribe(f"ensemble_dlq.{service}.>", stream="ENSEMBLE_DLQ")
    letters: list[nats.aio.msg.Msg] = []
    while len(letters) < count:  # fetch returns what is there; dead letters come one by one
        letters += await sub.fetch(count - len(letters), timeout=10)
    return letters


async def reserved(system: System, partner_id: str) -> int:
    partner = (await system.http.get(f"/api/v1/partners/{partner_id}",
                                     params={"district_id": "d001"})).json()
    return int(partner["services"][0]["reserved"])


async def test_an_event_delivered_twice_has_one_effect(system: System) -> None:
    partner = await system.register_partner(capacity=5)
    envelope = opened("family-without-record")
    nc = await nats.connect(system.settings.nats_url)
    js = nc.jetstream()
    try:
        # Two different Nats-Msg-Ids: the server stores both, so only the inbox can dedupe.
        for attempt in ("a", "b"):
            await js.publish("ensemble.d001.referrals.opened", envelope.to_bytes(),
                             headers={"Nats-Msg-Id": f"{envelope.id}-{attempt}"})

        async def consumed() -> bool:
            info = await js.consumer_info("ENSEMBLE_REFERRALS", "partners-referrals-opened")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await system.eventually(consumed, what="both copies consumed")
        await system.eventually(lambda: _stored(js, "ENSEMBLE_PARTNERS", 1), what="one match")
        assert await reserved(system, partner["id"]) == 1
        stream = await js.stream_info("ENSEMBLE_PARTNERS")
        assert stream.state.messages == 1  # one PartnerMatched, not two
    finally:
        await nc.close()


async def _stored(js: JetStreamContext, stream: str, count: int) -> bool:
    return (await js.stream_info(stream)).state.messages >= count


async def test_the_same_event_id_published_twice_is_stored_once(system: System) -> None:
    envelope = opened("f-1")
    nc = await nats.connect(system.settings.nats_url)
    js = nc.jetstream()
    try:
        first = await js.publish("ensemble.d001.referrals.opened", envelope.to_bytes(),
                                 headers={"Nats-Msg-Id": envelope.id})
        second = await js.publish("ensemble.d001.referrals.opened", envelope.to_bytes(),
                                  headers={"Nats-Msg-Id": envelope.id})
        assert not first.duplicate and second.duplicate
    finally:
        await nc.close()


async def test_poison_messages_are_parked_with_reasons_and_the_consumer_goes_on(
    system: System,
) -> None:
    partner = await system.register_partner(capacity=5)
    nc = await nats.connect(system.settings.nats_url)
    js = nc.jetstream()
    try:
        subject = "ensemble.d001.referrals.opened"
        await js.publish(subject, b"\xff not json")
        await js.publish(subject, b'{"specversion": "1.0", "id": "x"}')
        wrong_version = opened("f").model_copy(update={"type": "org.ensemble.referrals.opened.v9"})
        await js.publish(subject, wrong_version.to_bytes())
        stranger = opened("f").model_copy(update={"districtid": "d999"})
        await js.publish("ensemble.d999.referrals.opened", stranger.to_bytes())
        await js.publish(subject, opened("f-after-poison").to_bytes())

        await system.eventually(lambda: _reserved_is(system, partner["id"], 1),
                                what="the good message after the poison handled")
        letters = await dead_letters(js, 4, service="partners")
        reasons = sorted(m.headers["Ensemble-Reason"] for m in letters if m.headers)
        assert len(reasons) == 4
        assert any(r.startswith("not JSON") for r in reasons)
        assert any(r.startswith("invalid envelope") for r in reasons)
        assert any("unknown event type or version" in r for r in reasons)
        assert any("unknown district 'd999'" in r for r in reasons)
        for letter in letters:
            assert letter.headers["Ensemble-Consumer"] == "partners-referrals-opened"
            assert letter.subject.startswith("ensemble_dlq.partners.ensemble.")
    finally:
        await nc.close()


async def _reserved_is(system: System, partner_id: str, value: int) -> bool:
    return await reserved(system, partner_id) == value


async def test_a_message_that_always_fails_is_dead_lettered_after_retries(system: System) -> None:
    # A match for a referral referrals has never seen: its handler fails on every delivery.
    ghost = PartnerMatched(referral_id="no-such-referral", family_id="no-such-family",
                           partner_id="p", service_id="s", partner_name="P", need="dental",
                           urgency="routine", score=1.0, reasons=["test"], attempt=1)
    envelope = Envelope.wrap(ghost, source="/tests", district="d001", school="lincoln-es",
                             subject="no-such-referral")
    nc = await nats.connect(system.settings.nats_url)
    js = nc.jetstream()
    try:
        await js.publish("ensemble.d001.partners.matched", envelope.to_bytes())
        # referrals and engagement both give up on it
        letters = [*await dead_letters(js, 1, "referrals"),
                   *await dead_letters(js, 1, "engagement")]
        by_consumer = {m.headers["Ensemble-Consumer"]: m.headers for m in letters if m.headers}
        assert by_consumer["referrals-partners-matched"]["Ensemble-Delivered"] == "3"
        assert "failed 3 times" in by_consumer["referrals-partners-matched"]["Ensemble-Reason"]
        assert "NotFound" in by_consumer["referrals-partners-matched"]["Ensemble-Reason"]
        assert "engagement-partners-matched" in by_consumer

        # The consumers go on: a real referral still travels the loop.
        await system.register_partner()
        family = await system.register_family()
        referral = await system.open_referral(family)
        await system.wait_status(referral["id"], "matched")
        [email] = await system.eventually(lambda: _now(system.inbox.to(family["email"])),
                                          what="the message to the family")
        assert email["Subject"]
    finally:
        await nc.close()


async def _now(value: object) -> object:
    return value
