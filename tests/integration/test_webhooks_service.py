"""The webhooks service against a real HTTP receiver (uvicorn on a loopback port), real NATS
JetStream and the real database: retries then success, one accepted delivery per event and
endpoint, dead letters and replay, district isolation, signatures, and the whole loop."""

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import Inbox, System, running, token
from support.receiver import Receiver, Route, serve
from support.replies import reply_by_email
from support.waiting import eventually

from contracts.envelope import CONTENT_TYPE, Envelope
from contracts.events import Event, ReferralClosed, ReferralOpened
from contracts.subjects import subject_for
from contracts.taxonomy import Consent, Need, Outcome, Urgency
from ensemble.embedded import DevSmsServer
from ensemble.system import build_services
from runtime.db import utcnow
from runtime.host import Service
from runtime.settings import SERVICES, Settings
from services.webhooks.destinations import system_resolve
from services.webhooks.dispatch import Dispatcher
from services.webhooks.service import build as build_webhooks
from services.webhooks.settings import WebhooksSettings, webhooks_settings
from services.webhooks.tables import Endpoint

# --- the webhooks service, alone or with the other four -----------------------------------------


@dataclass
class Hooks:
    settings: WebhooksSettings
    http: httpx.AsyncClient  # d001's integrator
    receiver: Receiver
    receiver_url: str
    base_url: str
    service: Service

    @property
    def dispatcher(self) -> Dispatcher:
        dispatcher = self.service.deps.dispatcher
        assert isinstance(dispatcher, Dispatcher)
        assert self.service.runtime.background == [dispatcher.run]
        return dispatcher

    async def endpoint(self, name: str, *, district: str = "d001", event_types: tuple = (),
                       host: str | None = None, **route: Any) -> dict[str, Any]:
        """An endpoint at the receiver's /hooks/<name>, reached as ``host`` if given."""
        secret = f"whsec_{name}_{uuid.uuid4().hex}"
        self.receiver.routes[name] = Route(secret=secret, **route)
        base = self.receiver_url
        if host is not None:
            base = f"http://{host}:{urlsplit(base).port}"
        response = await self.http.post("/api/v1/webhooks/endpoints", json={
            "district_id": district, "url": f"{base}/hooks/{name}",
            "secret": secret, "event_types": list(event_types)},
            headers=bearer(self.settings, district=district))
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def publish(self, event: Event, district: str = "d001") -> Envelope:
        """Publish as the owning service would (the webhooks service is what is under test)."""
        envelope = Envelope.wrap(event, source="/ensemble/test", district=district, school=None,
                                 subject=None)
        js = self.service.runtime.jetstream
        await js.publish(subject_for(type(event), district), envelope.to_bytes(),
                         headers={"Nats-Msg-Id": envelope.id, "Content-Type": CONTENT_TYPE})
        return envelope


def fast(settings: Settings, **overrides: Any) -> WebhooksSettings:
    return webhooks_settings(settings, **{
        "webhooks_database_url": settings.referrals_database_url,  # same server, own schema
        "webhooks_max_attempts": 4,
        "webhooks_retry_base_seconds": 0.05,
        "webhooks_retry_max_seconds": 0.3,
        "webhooks_poll_seconds": 0.1,
        "webhooks_timeout_seconds": 1.0,
        # The receiver is on 127.0.0.1; the guard's own tests turn it on.
        "webhooks_allow_private": True,
    } | overrides)


async def drop_webhooks_schema(settings: WebhooksSettings) -> None:
    schema = settings.database_schema("webhooks")
    if schema is None or not settings.webhooks_database_url:
        return
    import asyncpg

    conn = await asyncpg.connect(settings.webhooks_database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def bearer(settings: Settings, role: str = "integrator", district: str = "d001") -> dict:
    return {"Authorization": f"Bearer {token(settings, role, district)}"}


@contextlib.asynccontextmanager
async def hooks_running(settings: Settings, services: list[Service]) -> AsyncIterator[Hooks]:
    receiver = Receiver()
    config = services[-1].runtime.settings
    assert isinstance(config, WebhooksSettings)
    try:
        async with serve(receiver.app) as receiver_url, running(settings, services) as url, \
                httpx.AsyncClient(base_url=url, timeout=10,
                                  headers=bearer(settings)) as http:
            yield Hooks(config, http, receiver, receiver_url, url, services[-1])
    finally:
        await drop_webhooks_schema(config)


@pytest.fixture
async def hooks(settings: Settings) -> AsyncIterator[Hooks]:
    async with hooks_running(settings, [build_webhooks(fast(settings))]) as h:
        yield h


def opened(referral_id: str | None = None) -> ReferralOpened:
    return ReferralOpened(referral_id=referral_id or str(uuid.uuid4()), school_id="lincoln-es",
                          student_ref="stu-1", family_id="fam-1", need=Need.dental,
                          urgency=Urgency.routine, consent=Consent.given,
                          opened_at=datetime.now(UTC))


def closed(referral_id: str) -> ReferralClosed:
    return ReferralClosed(referral_id=referral_id, outcome=Outcome.services_received,
                          closed_at=datetime.now(UTC))


# --- tests -------------------------------------------------------------------------------------


async def test_retries_then_one_accepted_delivery_per_event_and_endpoint(hooks: Hooks) -> None:
    flaky = await hooks.endpoint("flaky", fail_first=2)
    only_opened = await hooks.endpoint("opened", event_types=("org.ensemble.referrals.opened.v1",))
    d002 = await hooks.endpoint("d002", district="d002")
    a, b = opened(), opened()
    ours = [await hooks.publish(a), await hooks.publish(b),
            await hooks.publish(closed(a.referral_id))]
    theirs = [await hooks.publish(opened(), "d002"), await hooks.publish(opened(), "d002")]
    routes = hooks.receiver.routes

    await eventually(lambda: len(routes["flaky"].accepted) == 3, "flaky endpoint caught up")
    await eventually(lambda: len(routes["opened"].accepted) == 2, "filtered endpoint")
    await eventually(lambda: len(routes["d002"].accepted) == 2, "district B endpoint")

    flaky_route = routes["flaky"]
    assert sorted(e["id"] for e in flaky_route.events()) == sorted(e.id for e in ours)
    assert len(flaky_route.requests) == 5  # two refused, then retried with back-off
    assert flaky_route.duplicates == 0
    assert flaky_route.bad_signatures == 0
    by_delivery: dict[str, list[str]] = {}
    for request in flaky_route.requests:
        headers = request["headers"]
        by_delivery.setdefault(headers["ensemble-delivery-id"], []).append(
            headers["ensemble-attempt"])
        assert headers["content-type"] == CONTENT_TYPE
        assert headers["ensemble-event-id"] == json.loads(request["body"])["id"]
    assert len(by_delivery) == 3  # one delivery id per event, the same on every retry
    assert sorted(len(a) for a in by_delivery.values()) == [1, 2, 2]
    assert all(attempts == [str(i + 1) for i in range(len(attempts))]
               for attempts in by_delivery.values())

    assert {e["type"] for e in routes["opened"].events()} == {"org.ensemble.referrals.opened.v1"}
    # District isolation: each endpoint only ever saw its own district.
    assert {e["districtid"] for e in flaky_route.events() + routes["opened"].events()} == {"d001"}
    d002_route = routes["d002"]
    assert sorted(e["id"] for e in d002_route.events()) == sorted(e.id for e in theirs)
    assert all(json.loads(r["body"])["districtid"] == "d002" for r in d002_route.requests)

    # A real CloudEvents reader accepts what was delivered.
    event = next(iter(flaky_route.accepted.values()))["cloudevent"]
    assert event.get_type().startswith("org.ensemble.referrals.")
    assert event.get_extension("districtid") == "d001"

    async def counts() -> tuple[int, int, int]:
        detail = (await hooks.http.get(f"/api/v1/webhooks/endpoints/{flaky['id']}",
                                       params={"district_id": "d001"})).json()
        return detail["delivered"], detail["pending"], detail["dead"]

    async def all_recorded() -> bool:
        return await counts() == (3, 0, 0)

    # The receiver has answered; the dispatcher records the answers just after.
    await eventually(all_recorded, "deliveries recorded as delivered")
    assert only_opened["event_types"] == ["org.ensemble.referrals.opened.v1"]

    # Deliveries done long enough ago are forgotten (the events stay in the stream).
    await hooks.dispatcher.prune(keep=timedelta(0))
    detail = (await hooks.http.get(f"/api/v1/webhooks/endpoints/{flaky['id']}",
                                   params={"district_id": "d001"})).json()
    assert (detail["delivered"], detail["pending"], detail["dead"]) == (0, 0, 0)
    assert d002["district_id"] == "d002"


async def test_a_slow_receiver_gets_the_same_delivery_again_and_can_dedupe(hooks: Hooks) -> None:
    await hooks.endpoint("slow", slow_first=1, slow_seconds=1.5)  # the sender waits 1 s
    envelope = await hooks.publish(opened())
    route = hooks.receiver.routes["slow"]
    await eventually(lambda: route.duplicates == 1, "the retry of a timed-out delivery")
    assert [e["id"] for e in route.events()] == [envelope.id]  # accepted once
    ids = {r["headers"]["ensemble-delivery-id"] for r in route.requests}
    assert len(ids) == 1 and len(route.requests) == 2


async def test_permanent_failure_is_dead_lettered_then_replayed(hooks: Hooks) -> None:
    endpoint = await hooks.endpoint("down", down=True)
    envelope = await hooks.publish(opened())
    path = f"/api/v1/webhooks/endpoints/{endpoint['id']}/dead-letters"

    async def parked() -> list[dict[str, Any]]:
        return list((await hooks.http.get(path, params={"district_id": "d001"})).json())

    [letter] = await eventually(parked, "a dead letter")
    route = hooks.receiver.routes["down"]
    assert len(route.requests) == hooks.settings.webhooks_max_attempts == letter["attempts"]
    assert letter["event_id"] == envelope.id and letter["last_status"] == 503
    assert letter["event"]["data"]["referral_id"] == envelope.data["referral_id"]

    route.down = False
    replay = await hooks.http.post(f"{path}/{letter['id']}/replay", params={"district_id": "d001"})
    assert replay.status_code == 202, replay.text
    assert replay.json()["delivery_id"] == letter["delivery_id"]
    await eventually(lambda: len(route.accepted) == 1, "the replayed delivery")
    assert list(route.accepted) == [letter["delivery_id"]]
    assert await parked() == []
    again = await hooks.http.post(f"{path}/{letter['id']}/replay", params={"district_id": "d001"})
    assert again.status_code == 404


async def test_endpoint_api_validation_secret_and_tenancy(hooks: Hooks) -> None:
    base = {"district_id": "d001", "url": f"{hooks.receiver_url}/hooks/x"}
    api = "/api/v1/webhooks/endpoints"
    for bad in ({"url": "ftp://example.org/x"}, {"url": "http://user:pw@example.org/x"},
                {"event_types": ["org.ensemble.engagement.outreach_requested.v1"]},
                {"event_types": ["org.ensemble.nothing.v1"]}, {"secret": "short"}):
        response = await hooks.http.post(api, json=base | bad)
        assert response.status_code == 422, (bad, response.text)

    created = await hooks.http.post(api, json=base)
    assert created.status_code == 201
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and len(endpoint["secret"]) > 32
    listed = (await hooks.http.get(api, params={"district_id": "d001"})).json()
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]

    async with httpx.AsyncClient(base_url=hooks.base_url, timeout=10) as other:
        d002 = bearer(hooks.settings, district="d002")
        assert (await other.get(api, params={"district_id": "d002"}, headers=d002)).json() == []
        assert (await other.get(api, params={"district_id": "d001"},
                                headers=d002)).status_code == 403
        hidden = await other.get(f"{api}/{endpoint['id']}", params={"district_id": "d002"},
                                 headers=d002)
        assert hidden.status_code == 404
        coordinator = {"Authorization": "Bearer " + token(hooks.settings, "coordinator", "d001",
                                                          ("lincoln-es",))}
        assert (await other.get(api, params={"district_id": "d001"},
                                headers=coordinator)).status_code == 403
        assert (await other.get(api, params={"district_id": "d001"})).status_code == 401

    deleted = await hooks.http.delete(f"{api}/{endpoint['id']}", params={"district_id": "d001"})
    assert deleted.status_code == 204
    assert (await hooks.http.get(api, params={"district_id": "d001"})).json() == []


# --- private addresses (ENSEMBLE_WEBHOOKS_ALLOW_PRIVATE) -----------------------------------------


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[Hooks]:
    """The webhooks service as deployed: private addresses refused."""
    config = fast(settings, webhooks_allow_private=False)
    async with hooks_running(settings, [build_webhooks(config)]) as h:
        yield h


PRIVATE_URLS = [
    "http://127.0.0.1:8222/varz", "http://localhost:5432/", "http://LOCALHOST./x",
    "http://api.localhost/x", "http://10.0.0.7/x", "http://172.18.0.5:4222/",
    "http://192.168.1.20/x", "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/x",
    "http://0.0.0.0:8000/", "http://224.0.0.251/x", "http://240.0.0.1/x", "http://[::1]:8000/",
    "http://[fe80::1]/x", "http://[fd00::5]/x", "http://[::]/x", "http://[ff02::1]/x",
    "http://[::ffff:127.0.0.1]/x", "http://[::ffff:169.254.169.254]/x",
    "https://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of the metadata address
    # Spellings the system resolver turns into 127.0.0.1
    "http://2130706433/x", "http://0177.0.0.1/x", "http://127.1/x", "http://0x7f000001/x",
]


async def test_private_urls_are_refused_at_registration(guarded: Hooks) -> None:
    api = "/api/v1/webhooks/endpoints"
    for url in PRIVATE_URLS:
        response = await guarded.http.post(api, json={"district_id": "d001", "url": url})
        assert response.status_code == 422, (url, response.text)
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "url"], (url, error)
        assert "public addresses only" in error["msg"], (url, error)
    # Public addresses pass, and so do names: what a name resolves to is checked at delivery.
    accepted = ["https://hooks.example.org/ensemble", "http://93.184.216.34/x",
                "http://nats-1:8222/varz"]
    for url in accepted:
        response = await guarded.http.post(api, json={"district_id": "d001", "url": url})
        assert response.status_code == 201, (url, response.text)
    listed = (await guarded.http.get(api, params={"district_id": "d001"})).json()
    assert sorted(e["url"] for e in listed) == sorted(accepted)


async def test_names_resolving_to_private_addresses_are_refused_at_delivery(
        guarded: Hooks) -> None:
    """DNS rebinding and internal names: a name that passed registration but resolves to a
    private address (any of its addresses) is never connected to; the delivery is parked at
    once with the reason. The receiver listens on 127.0.0.1 and gets nothing."""
    names = {"rebind.example.test": ["127.0.0.1"], "nats-1": ["172.18.0.3"],
             "mixed.example.test": ["93.184.216.34", "127.0.0.1"]}

    async def resolve(host: str, port: int) -> list[str]:
        return names[host] if host in names else await system_resolve(host, port)

    guarded.dispatcher.backend.resolve = resolve
    hosts = {name.split(".")[0]: name for name in names}
    for route, host in hosts.items():
        await guarded.endpoint(route, host=host)
    # Registered before the guard was on (or by an operator in the database): `localhost`,
    # resolved by the system resolver, is refused the same way.
    port = urlsplit(guarded.receiver_url).port
    guarded.receiver.routes["old"] = Route(secret="whsec_registered_before_the_guard")
    async with guarded.service.runtime.unit_of_work() as uow:
        uow.session.add(Endpoint(id=str(uuid.uuid4()), district_id="d001",
                                 url=f"http://localhost:{port}/hooks/old",
                                 secret="whsec_registered_before_the_guard", event_types=[],
                                 description=None, created_at=utcnow()))
    hosts["old"] = "localhost"
    envelope = await guarded.publish(opened())

    listed = (await guarded.http.get("/api/v1/webhooks/endpoints",
                                     params={"district_id": "d001"})).json()
    assert len(listed) == len(hosts)
    for endpoint in listed:
        host = urlsplit(endpoint["url"]).hostname
        path = f"/api/v1/webhooks/endpoints/{endpoint['id']}/dead-letters"

        async def parked(path: str = path) -> list[dict[str, Any]]:
            return list((await guarded.http.get(path, params={"district_id": "d001"})).json())

        [letter] = await eventually(parked, f"the delivery to {host} parked")
        assert letter["event_id"] == envelope.id
        assert letter["attempts"] == 1 and letter["last_status"] is None  # no retries
        assert letter["last_error"] == f"refused: {host} resolves to a non-public address"
    assert {name: len(guarded.receiver.routes[name].requests) for name in hosts} == {
        name: 0 for name in hosts}


async def test_the_dispatcher_connects_to_the_address_it_checked(hooks: Hooks) -> None:
    """The client connects to the address the guard resolved (here through the resolver hook,
    for a name no DNS knows) and still sends the URL's host name."""
    async def resolve(host: str, port: int) -> list[str]:
        if host == "receiver.example.test":
            return ["127.0.0.1"]
        return await system_resolve(host, port)

    hooks.dispatcher.backend.resolve = resolve
    await hooks.endpoint("named", host="receiver.example.test")
    envelope = await hooks.publish(opened())
    route = hooks.receiver.routes["named"]
    await eventually(lambda: len(route.accepted) == 1, "the delivery to a resolved name")
    assert [e["id"] for e in route.events()] == [envelope.id]
    port = urlsplit(hooks.receiver_url).port
    assert route.requests[0]["headers"]["host"] == f"receiver.example.test:{port}"


# --- with the whole system ----------------------------------------------------------------------


@pytest.fixture
async def whole(settings: Settings, smtp: tuple[Inbox, str]) -> AsyncIterator[
        tuple[System, Hooks]]:
    others = tuple(name for name in SERVICES if name != "webhooks")  # once it is wired in
    services = [*build_services(settings, others), build_webhooks(fast(settings))]
    sms_store = settings.data_dir / "sms" / "messages.jsonl"
    sms_port = int(str(settings.sms_api_url).rsplit(":", 1)[1])
    admin = bearer(settings, "district_admin")
    async with DevSmsServer(sms_store, sms_port, settings.sms_auth_token, None), \
            hooks_running(settings, services) as h, \
            httpx.AsyncClient(base_url=h.base_url, timeout=10, headers=admin) as http:
        yield System(settings, http, {s.name: s for s in services}, smtp[0], sms_store), h


async def test_the_loop_reaches_a_webhook_without_personal_data(
        whole: tuple[System, Hooks]) -> None:
    system, hooks = whole
    await hooks.endpoint("loop")
    await system.register_partner()
    family = await system.register_family(name="Zebulon Quixley-Marchetti",
                                          email="zebulon.quixley@example.org")
    referral = await system.open_referral(family, note="Hidden note: asthma inhaler at home")
    await reply_by_email(system, family["email"], "Quixley family says yes to the dentist")
    await system.wait_status(referral["id"], "family_contacted")
    route = hooks.receiver.routes["loop"]

    def types() -> set[str]:
        return {e["type"] for e in route.events()}

    wanted = {"org.ensemble.engagement.family_registered.v1",
              "org.ensemble.referrals.opened.v1", "org.ensemble.partners.matched.v1",
              "org.ensemble.engagement.family_contacted.v1", "org.ensemble.notifications.sent.v1"}
    await eventually(lambda: wanted <= types(), f"the loop's events at the endpoint ({wanted})")
    assert route.bad_signatures == 0
    bodies = b"\n".join(r["body"] for r in route.requests).lower()
    for private in ("zebulon", "quixley", "asthma", "hidden note", family["email"].lower()):
        assert private.encode() not in bodies, private
    assert referral["id"].encode() in bodies

