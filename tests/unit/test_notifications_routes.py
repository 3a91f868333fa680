"""Notifications' routes are module-level functions on the module-level router (api.py); the
service serves exactly those, with what it was built with (``NotificationsRoutes``) reaching
them through ``Depends(wired("notifications"))``. The last tests call routes over HTTP
in-process, on an in-memory database: no NATS, no server, no provider."""

import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from support.uow import HandlerBench, decoded

from contracts.events import FamilyOptedOut, NotificationDelivered, NotificationFailed
from runtime.districts import load_districts
from runtime.errors import DomainError
from runtime.host import create_app
from runtime.settings import Settings
from services.notifications import api
from services.notifications.deps import NAME, NotificationsRoutes
from services.notifications.dispatch import Dispatcher
from services.notifications.service import build
from services.notifications.settings import NotificationsSettings
from services.notifications.tables import Base, Message, OptOut
from services.notifications.twilio import SIGNATURE_HEADER, compute_signature

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
BASE = "http://notifications.example"
TOKEN = "route-test-token"


def test_a_route_is_a_module_level_function_on_the_module_level_router() -> None:
    found = {r.endpoint for r in api.router.routes if isinstance(r, APIRoute)}
    assert {api.list_, api.sms_status, api.unsubscribe} <= found
    for endpoint in found:
        assert inspect.iscoroutinefunction(endpoint)
        assert endpoint.__module__ == "services.notifications.api"
        assert getattr(api, endpoint.__name__) is endpoint


def test_the_router_lists_every_notifications_path_the_service_serves() -> None:
    declared = {(method, route.path, route.endpoint.__name__)
                for route in api.router.routes if isinstance(route, APIRoute)
                for method in route.methods}
    app = create_app([build(Settings())])
    answered = {(method.upper(), path, operation["operationId"])
                for path, item in app.openapi()["paths"].items() if path.startswith("/api/v1/")
                for method, operation in item.items()}
    assert {(m, "/api/v1" + p) for m, p, _ in declared} == {(m, p) for m, p, _ in answered}
    for method, path, name in declared:  # FastAPI's operationId starts with the function name
        operation = next(o for m, p, o in answered if (m, p) == (method, "/api/v1" + path))
        assert operation.startswith(f"{name}_"), (operation, name)
    assert {(m, p) for m, p, _ in declared} >= api.PUBLIC_ROUTES
    assert len(declared) == 8


def test_the_service_hands_its_runtime_settings_dispatcher_and_clock_to_the_routes() -> None:
    service = build(Settings(), clock=lambda: NOW)
    deps = service.deps
    assert isinstance(deps, NotificationsRoutes)
    assert deps.runtime is service.runtime
    assert isinstance(deps.settings, NotificationsSettings)
    assert deps.dispatcher is service.dispatcher  # type: ignore[attr-defined]
    assert isinstance(deps.dispatcher, Dispatcher) and deps.clock() == NOW
    assert service.policy.public >= api.PUBLIC_ROUTES


# --- routes over HTTP, in-process ------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, HandlerBench, list[bool]]]:
    async with HandlerBench(Base.metadata) as bench:
        settings = NotificationsSettings(sms_auth_token=TOKEN, public_base_url=BASE)
        runtime = SimpleNamespace(unit_of_work=bench.unit_of_work, settings=settings,
                                  districts=load_districts(settings.districts_file))
        woken: list[bool] = []
        dispatcher = SimpleNamespace(wake=lambda: woken.append(True), rt=runtime)
        app = FastAPI()
        app.include_router(api.router, prefix="/api/v1")
        app.state.deps = {NAME: NotificationsRoutes(runtime, settings, dispatcher,  # type: ignore[arg-type]
                                                    lambda: NOW)}

        @app.exception_handler(DomainError)
        async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client, bench, woken


async def sent_sms(bench: HandlerBench, **fields: Any) -> Message:
    row = {"id": "msg-1", "idempotency_key": "out-1", "district_id": "d001",
           "school_id": "lincoln-es", "family_id": "fam-1", "outreach_id": "out-1",
           "referral_id": "ref-1", "batch_id": None, "correlation_id": "corr-1",
           "causation_id": None, "kind": "partner_matched", "urgency": "routine",
           "language": "es", "channels": ["sms", "email"], "email": "garcia@example.org",
           "phone": "+14155550134", "family_name": "Maria Garcia", "variables": {},
           "token": "a" * 32, "status": "sent", "channel": "sms", "provider_id": "SM1",
           "attempts": 1, "next_attempt_at": NOW + timedelta(minutes=2), "created_at": NOW,
           "sent_at": NOW} | fields
    async with bench.unit_of_work() as uow:
        uow.session.add(Message(**row))
    return Message(**row)


async def report(client: httpx.AsyncClient, status: str, error: str | None = None,
                 forged: bool = False) -> httpx.Response:
    form = {"MessageSid": "SM1", "MessageStatus": status, **({"ErrorCode": error} if error
                                                              else {})}
    signature = compute_signature("not-the-token" if forged else TOKEN,
                                  f"{BASE}/api/v1/sms/status", form)
    return await client.post("/api/v1/sms/status", data=form,
                             headers={SIGNATURE_HEADER: signature})


def emitted(bench: HandlerBench, kind: type[Any]) -> list[Any]:
    return [e for e in map(decoded, bench.emitted) if isinstance(e, kind)]


async def test_a_delivery_report_moves_a_sent_message_to_delivered_once(
        http: tuple[httpx.AsyncClient, HandlerBench, list[bool]]) -> None:
    client, bench, _ = http
    await sent_sms(bench)
    assert (await report(client, "delivered", forged=True)).status_code == 403
    assert (await bench.get(Message, "msg-1")).status == "sent"
    assert (await report(client, "delivered")).status_code == 204
    delivered = await bench.get(Message, "msg-1")
    assert (delivered.status, delivered.delivered_at) == ("delivered", NOW)
    assert len(emitted(bench, NotificationDelivered)) == 1
    view = (await client.get("/api/v1/messages/msg-1", params={"district_id": "d001"})).json()
    assert (view["status"], view["next_attempt_at"]) == ("delivered", None)  # not pending


async def test_a_failure_report_tries_the_other_channel_and_a_second_one_changes_nothing(
        http: tuple[httpx.AsyncClient, HandlerBench, list[bool]]) -> None:
    client, bench, woken = http
    await sent_sms(bench)
    assert (await report(client, "undelivered", "30003")).status_code == 204
    message = await bench.get(Message, "msg-1")
    assert (message.status, message.channels, message.next_attempt_at) == (
        "queued", ["email"], NOW)
    assert woken == [True]
    # Twilio reports failed after undelivered: the message has moved on to email.
    assert (await report(client, "failed", "30003")).status_code == 204
    again = await bench.get(Message, "msg-1")
    assert (again.status, again.channels) == ("queued", ["email"]) and woken == [True]
    assert emitted(bench, NotificationFailed) == []


async def test_a_failure_report_without_another_channel_fails_the_message(
        http: tuple[httpx.AsyncClient, HandlerBench, list[bool]]) -> None:
    client, bench, _ = http
    await sent_sms(bench, channels=["sms"])
    assert (await report(client, "failed", "30006")).status_code == 204
    assert (await bench.get(Message, "msg-1")).status == "failed"
    [failed] = emitted(bench, NotificationFailed)
    assert (failed.notification_id, failed.permanent) == ("msg-1", True)


async def test_the_unsubscribe_link_opts_the_address_out(
        http: tuple[httpx.AsyncClient, HandlerBench, list[bool]]) -> None:
    client, bench, _ = http
    await sent_sms(bench, channel="email", provider_id=None)
    page = await client.get("/api/v1/messages/msg-1/unsubscribe", params={"token": "a" * 32})
    assert page.status_code == 200 and "<form method=\"post\"" in page.text
    assert await bench.get(OptOut, ("email", "garcia@example.org")) is None  # a GET changes nothing
    wrong = await client.post("/api/v1/messages/msg-1/unsubscribe", params={"token": "b" * 32})
    assert wrong.status_code == 404
    done = await client.post("/api/v1/messages/msg-1/unsubscribe", params={"token": "a" * 32})
    assert done.status_code == 200
    assert (await bench.get(OptOut, ("email", "garcia@example.org"))).opted_out is True
    assert [e.family_id for e in emitted(bench, FamilyOptedOut)] == ["fam-1"]


async def test_batch_progress_counts_pending_and_done(
        http: tuple[httpx.AsyncClient, HandlerBench, list[bool]]) -> None:
    client, bench, _ = http
    for n, status in enumerate(("queued", "sending", "sent", "delivered", "failed")):
        await sent_sms(bench, id=f"m{n}", idempotency_key=f"ann-1:f{n}", family_id=f"f{n}",
                       batch_id="ann-1", status=status,
                       channel=None if status in ("queued", "sending") else "email")
    progress = (await client.get("/api/v1/message-batches/ann-1",
                                 params={"district_id": "d001"})).json()
    assert progress == {"batch_id": "ann-1", "total": 5, "done": False, "by_channel": {"email": 2},
                        "by_status": {"queued": 1, "sending": 1, "sent": 1, "delivered": 1,
                                      "failed": 1}}
