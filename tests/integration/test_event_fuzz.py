"""hypothesis over the event contracts and the consumers.

Events are generated from the pydantic models of contracts/events.py (every field, within its
declared bounds: what the contract lets a publisher send; strings it leaves unbounded up to what
their producers let through, see PRODUCED_MAX), wrapped in the CloudEvents envelope and sent
through bytes and `decode_envelope`, as a consumer receives them. Ids are drawn mostly from
records that exist (so handlers reach their real paths, not only "unknown id"), sometimes made
up; districts are d001 mostly, d002 sometimes (a known district that owns none of them).

- Unit level, every consumer of every service, on a real database (SQLite and PostgreSQL): a
  valid event is *handled*: the handler's transaction commits (applied, or deliberately left
  alone), or it raises one of the domain's expected answers: RetryLater (it depends on an event
  not seen yet) or NotFound (it names a record this service never had). The consumer turns both
  into redeliveries and, at the last, a dead letter with the reason. Anything else is a bug: a
  valid event that can never be applied (a crash, a database error on its values) or one that
  looks like an outage and would be retried forever.
- Integration level, on the real bus: generated valid events are consumed by every consumer of
  their subject (nothing left unacked, nothing dead-lettered); generated invalid ones (broken
  JSON, missing fields, wrong types, a broken envelope) are parked on the dead-letter stream by
  every consumer of the subject, with the reason `decode_envelope` gives.
"""

import asyncio
import contextlib
import json
import os
import types
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import httpx
import nats
import pytest
from conftest import System, token
from hypothesis import HealthCheck, Phase, given, reject
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from sqlalchemy import select
from support.ledger import consumer_states, dead_letters

from contracts.envelope import Envelope, EnvelopeError, decode_envelope
from contracts.events import (
    BulkOutreachRequested,
    BulkRecipient,
    Event,
    FamilyRegistered,
    ReferralOpened,
)
from contracts.subjects import subject_for
from contracts.taxonomy import Channel
from ensemble.system import build_services
from runtime.consumer import EventConsumer, is_outage
from runtime.errors import NotFound, RetryLater
from runtime.host import Service, create_app
from runtime.settings import Settings
from runtime.tenancy import set_scope
from services.engagement.tables import Outreach
from services.notifications.tables import Message

T = TypeVar("T")

# Examples per consumer (unit level) and events on the bus (integration); the same ones every
# run unless ENSEMBLE_FUZZ_EXAMPLES asks for a longer local hunt with new inputs.
EXAMPLES = int(os.environ.get("ENSEMBLE_FUZZ_EXAMPLES", "25"))
HUNT = "ENSEMBLE_FUZZ_EXAMPLES" in os.environ
EXPECTED = (RetryLater, NotFound)
DISTRICT = "d001"
SCHOOLS = ["lincoln-es", "roosevelt-ms"]

# Which records an id field names, by field name: drawn from the seeded records of that kind.
ID_KINDS = {"referral_id": "referral", "family_id": "family", "partner_id": "partner",
            "service_id": "service", "outreach_id": "outreach", "event_id": "event",
            "batch_id": "event", "school_id": "school", "notification_id": "notification"}


# --- generating events from the contract -------------------------------------------------------

# Text JSON can carry and a database can store (NUL is refused at decode: tested apart).
CHARACTERS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
TEXT = st.text(CHARACTERS, max_size=40)
# Strings the contract leaves unbounded are generated up to what their producers let through
# (the engagement API's language tag, message kinds, E.164, an email address, names; ids are
# tokens or uuids): the bound a consumer's column may rely on until a new event version says it.
PRODUCED_MAX = {"preferred_language": 16, "language": 16, "kind": 32, "phone": 20,
                "email": 254, "family_name": 200, "partner_name": 200, "status": 16,
                "response": 8, "via": 8}
ID_MAX = 64
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)),
                         timezone(timedelta(hours=5, minutes=30))])


def _bounds(info: FieldInfo | None) -> dict[str, Any]:
    """The field's declared bounds (Field(ge=..., le=..., max_length=...))."""
    found: dict[str, Any] = {}
    for item in info.metadata if info else ():
        for name in ("ge", "le", "min_length", "max_length"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def values(annotation: Any, name: str, info: FieldInfo | None,
           ids: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """Any value the contract accepts for one field."""
    origin, args = get_origin(annotation), get_args(annotation)
    bounds = _bounds(info)
    if origin in (Union, types.UnionType):
        return st.one_of(*(values(a, name, info, ids) for a in args))
    if annotation is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(values(args[0], name, None, ids), max_size=bounds.get("max_length", 4))
    if origin is dict:
        return st.dictionaries(TEXT, TEXT, max_size=3)
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return st.sampled_from(list(annotation))
        if issubclass(annotation, BaseModel):
            return models(annotation, ids)
        if issubclass(annotation, datetime):
            return st.datetimes(timezones=ZONES | st.none())  # the model says which are valid
        if issubclass(annotation, bool):
            return st.booleans()
        if issubclass(annotation, int):
            return st.integers(min_value=bounds.get("ge"), max_value=bounds.get("le"))
        if issubclass(annotation, float):
            return st.floats(allow_nan=False, allow_infinity=False)
        if issubclass(annotation, str):
            made_up = st.text(CHARACTERS, min_size=bounds.get("min_length", 0),
                              max_size=bounds.get("max_length", PRODUCED_MAX.get(name, ID_MAX)))
            kind = ID_KINDS.get(name)
            if kind and ids.get(kind):
                known = st.sampled_from(ids[kind])
                return known if ids.get("only_known") else known | made_up
            return made_up
    raise TypeError(f"no strategy for {name}: {annotation!r}; teach values()")


def models(cls: type[BaseModel], ids: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """Instances of a contract model: required fields always, optional ones sometimes."""
    required = {n: values(f.annotation, n, f, ids) for n, f in cls.model_fields.items()
                if f.is_required()}
    optional = {n: values(f.annotation, n, f, ids) for n, f in cls.model_fields.items()
                if not f.is_required()}
    return st.fixed_dictionaries(required, optional=optional).map(_valid(cls)).filter(_made)


def _made(instance: object) -> bool:
    # A named function, not a lambda: hypothesis describes a filter that rejects often by
    # parsing a lambda's source, which raced between worker threads (a FlakyFailure in CI).
    return instance is not None


def _valid(cls: type[T]) -> Callable[[dict[str, Any]], T | None]:
    def validate(data: dict[str, Any]) -> T | None:
        try:
            return cls.model_validate(data)  # type: ignore[attr-defined, no-any-return]
        except ValidationError:
            return None  # not something the contract lets through

    return validate


@st.composite
def envelopes(draw: st.DrawFn, cls: type[Event], ids: dict[str, list[str]],
              districts: list[str]) -> tuple[bytes, Envelope, Event]:
    """A valid event as it arrives on the wire, and what the consumer decodes from it."""
    event = draw(models(cls, ids))
    district = draw(st.sampled_from(districts))
    envelope = Envelope.wrap(event, source="/tests/fuzz", district=district,
                             school=draw(st.none() | st.sampled_from(SCHOOLS)),
                             subject=draw(st.none() | TEXT))
    envelope = envelope.model_copy(update={"time": draw(st.datetimes(timezones=ZONES | st.none()))})
    raw = envelope.to_bytes()
    try:
        decoded, decoded_event = decode_envelope(raw)  # what the consumer gets
    except EnvelopeError:
        reject()  # a time the envelope refuses
    return raw, decoded, decoded_event


# --- unit level: every consumer's handler in a real transaction --------------------------------


@dataclass
class World:
    services: dict[str, Service]
    ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def consumers(self) -> list[EventConsumer]:
        return [c for s in self.services.values() for c in s.runtime.consumers]

    async def apply(self, consumer: EventConsumer, envelope: Envelope, event: Event
                    ) -> list[Envelope]:
        """What the consumer does with one new event, minus NATS: the handler in a unit of work
        with the envelope as the cause, outside any request's tenancy scope (as a consumer
        runs). Returns the events it emitted."""
        set_scope(None)
        async with consumer.runtime.unit_of_work() as uow:
            uow.cause = envelope
            await consumer.handler(uow, envelope, event)
            emitted = list(uow.emitted)
        return emitted

    async def deliver(self, envelope: Envelope, hops: int = 6) -> None:
        """An in-process bus for seeding: the event to every consumer of its type, and what
        they emit onwards, a few hops deep."""
        queue = [(envelope, 0)]
        while queue:
            env, hop = queue.pop(0)
            _, event = decode_envelope(env.to_bytes())
            for consumer in self.consumers():
                if isinstance(event, consumer.event_cls) and hop < hops:
                    with contextlib.suppress(*EXPECTED):
                        queue += [(e, hop + 1) for e in await self.apply(consumer, env, event)]


def wrapped(event: Event, district: str = DISTRICT) -> Envelope:
    return Envelope.wrap(event, source="/tests/fuzz", district=district, school=None,
                         subject=None)


async def seed(world: World, http: httpx.AsyncClient) -> None:
    """Records every kind of id can name: partners with services, families (email and SMS),
    referrals matched through partners (outreach, messages, webhook deliveries follow), a
    family event with invitations, a webhook endpoint."""
    ids = world.ids
    ids["school"] += SCHOOLS
    response = await http.post("/api/v1/partners", json={
        "district_id": DISTRICT, "name": "Smile Bright Dental", "needs": ["dental", "vision"],
        "schools": SCHOOLS, "languages": ["en", "es"], "capacity": 3})
    assert response.status_code == 201, response.text
    ids["partner"].append(response.json()["id"])
    ids["service"] += [s["id"] for s in response.json()["services"]]
    response = await http.post("/api/v1/webhooks/endpoints", json={
        "district_id": DISTRICT, "url": "https://hooks.invalid/ensemble"})
    assert response.status_code == 201, response.text
    families = [
        {"email": "maria@example.org", "preferred_channel": "email"},
        {"phone": "+14155550123", "sms_consent": True, "preferred_channel": "sms"}]
    for i, contact in enumerate(families):
        response = await http.post("/api/v1/families", json={
            "district_id": DISTRICT, "school_id": SCHOOLS[i], "name": f"Family {i}",
            "preferred_language": "es"} | contact)
        assert response.status_code == 201, response.text
        family = response.json()
        ids["family"].append(family["id"])
        await world.deliver(wrapped(FamilyRegistered(
            family_id=family["id"], school_id=family["school_id"], preferred_language="es")))
        response = await http.post("/api/v1/referrals", json={
            "district_id": DISTRICT, "school_id": family["school_id"], "family_id": family["id"],
            "student_ref": f"stu-{i}", "need": "dental", "consent": "given"})
        assert response.status_code == 201, response.text
        referral = response.json()
        ids["referral"].append(referral["id"])
        await world.deliver(wrapped(ReferralOpened(
            referral_id=referral["id"], school_id=referral["school_id"],
            student_ref=f"stu-{i}", family_id=family["id"], need=referral["need"],
            urgency=referral["urgency"], consent=referral["consent"],
            opened_at=datetime.now(UTC))))
    response = await http.post("/api/v1/family-events", json={
        "district_id": DISTRICT, "school_id": SCHOOLS[0], "title": "Math night",
        "starts_at": "2030-01-15T18:00:00-08:00", "place": "Library"})
    assert response.status_code == 201, response.text
    ids["event"].append(response.json()["id"])
    response = await http.post(f"/api/v1/family-events/{ids['event'][0]}/invitations",
                               json={"district_id": DISTRICT})
    assert response.status_code == 200, response.text
    async with world.services["engagement"].runtime.unit_of_work() as uow:
        ids["outreach"] += (await uow.session.scalars(select(Outreach.id))).all()
    async with world.services["notifications"].runtime.unit_of_work() as uow:
        ids["notification"] += (await uow.session.scalars(select(Message.id))).all()
    assert ids["outreach"] and ids["notification"], "seeding did not reach outreach"


@pytest.fixture
async def world(tmp_path: Path, backend: dict[str, str]) -> AsyncIterator[World]:
    """Every service built on a real database, none started: no NATS at this level; HTTP
    in-process for seeding."""
    settings = Settings(data_dir=tmp_path / "data", **backend)
    services = build_services(settings)
    for service in services:
        await service.runtime.db.create_schema()
    world = World({s.name: s for s in services})
    admin = {"Authorization": f"Bearer {token(settings, 'district_admin', DISTRICT)}"}
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ensemble",
                                     headers=admin) as http:
            await seed(world, http)
        yield world
    finally:
        for service in services:
            await service.runtime.db.dispose()


def in_loop(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine on the test's loop from hypothesis's worker thread."""
    return lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)


def fuzz_consumer(world: World, consumer: EventConsumer, run: Callable[..., Any],
                  examples: int, outcomes: dict[str, int]) -> str | None:
    @hypothesis_settings(max_examples=examples, deadline=None, database=None,
                         derandomize=not HUNT, phases=[Phase.generate, Phase.shrink],
                         suppress_health_check=list(HealthCheck))
    @given(message=envelopes(consumer.event_cls, world.ids, [DISTRICT, DISTRICT, "d002"]))
    def handled(message: tuple[bytes, Envelope, Event]) -> None:
        raw, envelope, event = message
        try:
            run(world.apply(consumer, envelope, event))
            outcomes["handled"] += 1
        except EXPECTED as exc:
            outcomes[type(exc).__name__] += 1
            return
        except Exception as exc:
            forever = " (taken for an outage: retried forever)" if is_outage(exc) else ""
            raise AssertionError(f"{consumer.durable} could not handle a valid event{forever}: "
                                 f"{type(exc).__name__}: {exc}\n{raw.decode()}") from exc

    try:
        handled()
    except AssertionError as exc:
        return str(exc)[:3000]
    except BaseExceptionGroup as group:  # hypothesis found several distinct failures
        return "\n".join(str(e)[:3000] for e in group.exceptions)
    return None


@pytest.mark.parametrize("service", ["referrals", "partners", "engagement", "notifications",
                                     "webhooks", "insights"])
async def test_every_valid_event_is_handled(world: World, service: str,
                                            backend: dict[str, str]) -> None:
    consumers = world.services[service].runtime.consumers
    assert consumers, f"{service} consumes nothing"
    # Webhooks has one handler for every public event: fewer examples each.
    examples = EXAMPLES if service != "webhooks" else max(3, EXAMPLES // 5)
    if backend:
        examples = max(3, examples // 2)
    run = in_loop(asyncio.get_running_loop())
    failures = []
    for consumer in consumers:
        outcomes: dict[str, int] = defaultdict(int)
        failure = await asyncio.to_thread(fuzz_consumer, world, consumer, run, examples,
                                          outcomes)
        if failure:
            failures.append(failure)
        elif not outcomes["handled"]:  # the ids must reach the handlers' real paths
            failures.append(f"{consumer.durable} never got past its checks: {dict(outcomes)}")
    assert not failures, "\n\n".join(failures)


# --- integration level: the real bus -----------------------------------------------------------


def broken(draw: st.DrawFn, raw: bytes, cls: type[Event]) -> tuple[str, bytes]:
    """A mutation of a valid message that must not validate: (what was done, the bytes)."""
    payload = json.loads(raw)
    required = [n for n, f in cls.model_fields.items() if f.is_required()]
    how = draw(st.sampled_from(["truncated", "missing_field", "wrong_type", "no_envelope_id",
                                "bad_time", "data_not_object", "nul_in_text"]))
    texts = sorted(k for k, v in payload["data"].items() if isinstance(v, str))
    if how == "nul_in_text" and texts:
        name = draw(st.sampled_from(texts))
        payload["data"][name] += "\x00"
    elif how == "truncated" or how == "nul_in_text":
        return how, raw[: draw(st.integers(1, len(raw) - 1))]
    elif how == "missing_field":
        del payload["data"][draw(st.sampled_from(required))]
    elif how == "wrong_type":
        payload["data"][draw(st.sampled_from(sorted(payload["data"])))] = {"deep": [1, None]}
    elif how == "no_envelope_id":
        del payload["id"]
    elif how == "bad_time":
        payload["time"] = draw(st.sampled_from(["yesterday", "2026-13-01T00:00:00Z", 17]))
    else:
        payload["data"] = draw(st.sampled_from([[], "data", None]))
    return how, json.dumps(payload).encode()


@dataclass
class Sent:
    subject: str
    seq: int  # in the subject's stream
    cls: type[Event]
    kind: str  # "valid" or the mutation
    reason: str | None  # decode_envelope's reason for an invalid one
    raw: bytes


async def test_valid_events_are_consumed_and_invalid_ones_parked(
    system: System, backend: dict[str, str]
) -> None:
    consumers = [c for s in system.services.values() for c in s.runtime.consumers]
    by_class: dict[type[Event], list[EventConsumer]] = defaultdict(list)
    for consumer in consumers:
        by_class[consumer.event_cls].append(consumer)
    classes = sorted(by_class, key=lambda c: c.ce_type())

    # Records the valid events can name (so their handlers apply them, not wait for them).
    partner = await system.register_partner(capacity=20)
    family = await system.register_family()
    referral = await system.open_referral(family)
    await system.wait_status(referral["id"], "matched")
    outreach = (await system.http.get(f"/api/v1/families/{family['id']}/outreach",
                                      params={"district_id": DISTRICT})).json()
    ids = {"school": [family["school_id"]], "family": [family["id"]],
           "referral": [referral["id"]], "partner": [partner["id"]],
           "service": [s["id"] for s in partner["services"]],
           "outreach": [o["id"] for o in outreach]}
    # Only names of records that exist: an event about an unknown referral is retried, then
    # parked by design (tested at unit level); here every valid event must simply be consumed.
    strict_ids = {k: v for k, v in ids.items() if v} | {"only_known": ["yes"]}

    loop = asyncio.get_running_loop()
    run = in_loop(loop)
    nc = await nats.connect(system.settings.nats_url)
    js = nc.jetstream()
    sent: list[Sent] = []

    async def publish(cls: type[Event], kind: str, reason: str | None, raw: bytes) -> None:
        subject = subject_for(cls, DISTRICT)
        ack = await js.publish(subject, raw, headers={"Nats-Msg-Id": f"fuzz-{uuid.uuid4()}"})
        sent.append(Sent(subject, ack.seq, cls, kind, reason, raw))

    @hypothesis_settings(max_examples=EXAMPLES * 2 if not backend else EXAMPLES,
                         deadline=None, database=None,
                         derandomize=not HUNT, phases=[Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def publish_some(data: st.DataObject) -> None:
        cls = data.draw(st.sampled_from(classes))
        raw, _, _ = data.draw(envelopes(cls, strict_ids, [DISTRICT]))
        if data.draw(st.booleans()):
            run(publish(cls, "valid", None, raw))
            return
        how, bad = broken(data.draw, raw, cls)
        try:
            decode_envelope(bad)
        except EnvelopeError as exc:
            run(publish(cls, how, str(exc), bad))
            return
        run(publish(cls, f"valid after {how}", None, bad))  # the mutation was harmless

    try:
        await asyncio.to_thread(publish_some)
    finally:
        await nc.close()
    invalid = [s for s in sent if s.reason]
    valid = [s for s in sent if not s.reason]
    assert invalid and valid, "the examples should hold both kinds"

    async def drained() -> bool:
        states = await consumer_states(system.settings.nats_url)
        return all(not s.pending and not s.ack_pending for s in states)

    await system.eventually(drained, timeout=90, what="every consumer drained")
    letters = await dead_letters(system.settings.nats_url)
    parked_by: dict[tuple[str, int], list[dict[str, str]]] = defaultdict(list)
    for letter in letters:
        key = (letter["Ensemble-Original-Subject"], int(letter["Ensemble-Original-Sequence"]))
        parked_by[key].append(letter)

    problems = []
    for message in sent:
        parked = parked_by.pop((message.subject, message.seq), [])
        expected = {c.durable for c in by_class[message.cls]}
        if message.reason is None:
            if parked:
                problems.append(f"valid {message.cls.__name__} ({message.kind}) parked: "
                                f"{[p['Ensemble-Reason'] for p in parked]}\n{message.raw!r}")
            continue
        got = {p["Ensemble-Consumer"] for p in parked}
        if got != expected:
            problems.append(f"invalid {message.cls.__name__} ({message.kind}) parked by {got}, "
                            f"expected {expected}")
        for p in parked:
            if message.reason not in p["Ensemble-Reason"]:
                problems.append(f"{p['Ensemble-Consumer']}: reason {p['Ensemble-Reason']!r}, "
                                f"expected {message.reason!r}")
    problems += [f"parked, never sent by this test: {v}" for v in parked_by.values()]
    assert not problems, "\n".join(problems[:20])


# --- what the fuzzing found, kept as plain regressions -----------------------------------------


def opened(**data: Any) -> dict[str, Any]:
    envelope = wrapped(ReferralOpened(
        referral_id="r1", school_id="lincoln-es", student_ref="s1", family_id="f1",
        need="dental", urgency="routine", consent="given", opened_at=datetime.now(UTC)))
    payload = json.loads(envelope.to_bytes())
    payload["data"] |= data
    return payload


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # Naive times validated, then no database column took them: retried, then parked.
        ({"time": "2026-01-05T10:00:00"}, "time: Value error, an instant needs its offset"),
        ({"data": {"opened_at": "2026-01-05T10:00:00"}}, "opened_at: Value error, an instant"),
        # Valid RFC 3339, but before year 1 in UTC: an OverflowError in the handler.
        ({"time": "0001-01-01T00:00:00+14:00"}, "outside the years 1 to 9999"),
        # PostgreSQL stores no text holding U+0000.
        ({"data": {"student_ref": "s\x001"}}, "NUL"),
    ],
)
def test_what_no_consumer_can_store_is_refused_at_decode(change: dict[str, Any],
                                                         reason: str) -> None:
    payload = opened(**change.get("data", {})) | {k: v for k, v in change.items() if k != "data"}
    with pytest.raises(EnvelopeError, match=reason):
        decode_envelope(json.dumps(payload).encode())


async def test_a_bulk_request_naming_a_family_twice_queues_one_message(world: World) -> None:
    # Was an IntegrityError on the idempotency key: the batch was retried, then parked.
    [consumer] = [c for c in world.services["notifications"].runtime.consumers
                  if c.event_cls is BulkOutreachRequested]
    family = world.ids["family"][0]
    twice = [BulkRecipient(family_id=family, school_id="lincoln-es", language="es",
                           channels=[Channel.email], email=f"{n}@example.org")
             for n in ("first", "second")]
    event = BulkOutreachRequested(batch_id="b1", kind="announcement", recipients=twice)
    envelope, decoded = decode_envelope(wrapped(event).to_bytes())
    await world.apply(consumer, envelope, decoded)
    async with consumer.runtime.unit_of_work() as uow:
        keys = (await uow.session.scalars(
            select(Message.idempotency_key).where(Message.batch_id == "b1"))).all()
    assert keys == [f"b1:{family}"]
