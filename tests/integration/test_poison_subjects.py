"""Poison on EVERY subject a service consumes: the consumers are read from the running services
(each ServiceRuntime's .consumers), so a consumer added later is covered without editing this
file. Each kind of poison is parked on the dead-letter stream by every consumer of the subject,
with its reason; the services keep going and a normal referral still completes."""

import asyncio
import time
import types
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin

import nats
from conftest import System
from pydantic import BaseModel
from support.ledger import SERVED_ENDS, consumer_states, dead_letters

from contracts.envelope import Envelope
from contracts.events import Event, FamilyRegistered, ReferralOpened
from runtime.consumer import EventConsumer
from runtime.positions import recorded, replay_from

STRANGER = "d999"  # a district no service knows

# Reason prefixes the consumer gives (runtime/consumer.py, contracts/envelope.py), by poison.
REASONS = {
    "not_json": "not JSON",
    "not_an_envelope": "invalid envelope",
    "unknown_version": "unknown event type or version",
    "wrong_schema": "invalid org.ensemble.",
    "wrong_event_for_subject": "does not belong on",
    "unknown_district": f"unknown district '{STRANGER}'",
}


def sample_value(annotation: Any) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return sample_value(next(a for a in args if a is not type(None)))
    if origin is Literal:
        return args[0]
    if origin is list:
        return [sample_value(args[0])]
    if origin is dict:
        return {}
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return next(iter(annotation)).value
        if issubclass(annotation, BaseModel):
            return sample_data(annotation)
        if issubclass(annotation, datetime):
            return datetime.now(UTC).isoformat()
        if issubclass(annotation, bool):
            return False
        if issubclass(annotation, int):
            return 1
        if issubclass(annotation, float):
            return 1.0
        if issubclass(annotation, str):
            return "x1"
    raise TypeError(f"no sample for {annotation!r}: teach sample_value")


def sample_data(cls: type[BaseModel]) -> dict[str, Any]:
    """The required fields of an event (or nested model) with plausible values."""
    return {name: sample_value(f.annotation) for name, f in cls.model_fields.items()
            if f.is_required()}


def envelope_of(cls: type[Event], district: str = "d001") -> Envelope:
    event = cls.model_validate(sample_data(cls))  # fails loudly if the sample is not valid
    return Envelope.wrap(event, source="/tests/poison", district=district, school=None,
                         subject="poison")


def poisons(cls: type[Event], filter_subject: str) -> list[tuple[str, str, bytes]]:
    """(kind, subject, payload) for each kind of poison on one consumed subject."""
    subject = filter_subject.replace("*", "d001").replace(">", "poison")
    stranger_subject = filter_subject.replace("*", STRANGER).replace(">", "poison")
    good = envelope_of(cls)
    other_cls = FamilyRegistered if cls is ReferralOpened else ReferralOpened
    return [
        ("not_json", subject, b"\xff not json at all"),
        ("not_an_envelope", subject, b'{"specversion": "1.0", "id": "x"}'),
        ("unknown_version", subject,
         good.model_copy(update={"type": good.type.rsplit(".v", 1)[0] + ".v99"}).to_bytes()),
        ("wrong_schema", subject, good.model_copy(update={"data": {"nonsense": True}}).to_bytes()),
        ("wrong_event_for_subject", subject, envelope_of(other_cls).to_bytes()),
        ("unknown_district", stranger_subject, envelope_of(cls, STRANGER).to_bytes()),
    ]


async def test_poison_on_every_consumed_subject_is_parked_and_the_loop_goes_on(
    system: System,
) -> None:
    consumers: list[EventConsumer] = [
        c for service in system.services.values() for c in service.runtime.consumers]
    assert len(consumers) >= 8, "the services consume fewer subjects than the loop needs"
    by_subject: dict[str, list[EventConsumer]] = defaultdict(list)
    for consumer in consumers:
        by_subject[consumer.filter_subject].append(consumer)

    url = system.settings.nats_url
    nc = await nats.connect(url)
    js = nc.jetstream()
    expected: dict[str, set[str]] = defaultdict(set)  # durable -> poison kinds
    try:
        for filter_subject, group in by_subject.items():
            for kind, subject, payload in poisons(group[0].event_cls, filter_subject):
                await js.publish(subject, payload,
                                 headers={"Nats-Msg-Id": f"poison-{uuid.uuid4()}"})
                for consumer in group:
                    expected[consumer.durable].add(kind)
        total = sum(len(kinds) for kinds in expected.values())

        deadline = time.monotonic() + 60
        while (await js.stream_info("ENSEMBLE_DLQ")).state.messages < total:
            assert time.monotonic() < deadline, "poison not all parked"
            await asyncio.sleep(0.2)
    finally:
        await nc.close()

    letters = await dead_letters(url)
    assert len(letters) == total  # parked once per consumer, never twice
    parked: dict[str, set[str]] = defaultdict(set)
    for letter in letters:
        durable = letter["Ensemble-Consumer"]
        reason = letter["Ensemble-Reason"]
        kinds = [k for k, prefix in REASONS.items() if prefix in reason]
        assert kinds, f"{durable}: unexpected reason {reason!r}"
        parked[durable].add(kinds[0])
        service = durable.split("-")[0]
        assert letter["subject"].startswith(f"ensemble_dlq.{service}.")
        assert letter["Ensemble-Original-Subject"] in letter["subject"]
    assert dict(parked) == dict(expected)

    # The services keep going: a normal referral travels the whole loop.
    await system.register_partner(capacity=2)
    family = await system.register_family()
    referral = await system.open_referral(family)

    async def done() -> bool:
        status = (await system.referral(referral["id"]))["status"]
        return status in SERVED_ENDS and bool(system.inbox.to(family["email"]))

    await system.eventually(done, timeout=30, what="a referral after the poison")
    assert len(system.inbox.to(family["email"])) == 1

    async def drained() -> bool:
        return all(not s.pending and not s.ack_pending for s in await consumer_states(url))

    await system.eventually(drained, timeout=30, what="every consumer drained")

    # Every consumer recorded where it stands, parked poison included: a restart (or a restore
    # of this moment's backup) replays nothing.
    for service in system.services.values():
        rt = service.runtime
        async with rt.unit_of_work() as uow:
            for consumer in rt.consumers:
                info = await rt.jetstream.consumer_info(consumer.stream, consumer.durable)
                position = await recorded(uow.session, rt.tables.positions, consumer.durable)
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                assert position is not None and floor > 0, consumer.durable
                assert replay_from(position, floor) is None, (consumer.durable, position, floor)
