"""Engagement's routes are module-level functions on module-level routers (api.py,
family_events_api.py, announcements_api.py, replies_api.py, erasure_api.py, roster_api.py); the
service serves exactly those, with what it was built with (``EngagementRoutes``) reaching them
through ``Depends(wired("engagement"))``. The last tests call routes over HTTP in-process, on an
in-memory database: no NATS, no server."""

import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import select
from support.uow import HandlerBench, decoded

from contracts.events import FamilyContacted, FamilyRegistered, FamilyUnreachable
from runtime.districts import load_districts
from runtime.errors import DomainError
from runtime.host import create_app
from runtime.settings import Settings
from services.engagement import (
    announcements_api,
    api,
    erasure_api,
    family_events_api,
    replies_api,
    roster_api,
)
from services.engagement.deps import NAME, EngagementRoutes
from services.engagement.service import build
from services.engagement.settings import EngagementSettings
from services.engagement.tables import Base, Outreach

MODULES = (api, family_events_api, announcements_api, replies_api, erasure_api, roster_api)
NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


def routes(module: ModuleType) -> set[tuple[str, str, str]]:
    """(method, path, function name) of each route declared on a module's router."""
    return {(method, route.path, route.endpoint.__name__)
            for route in module.router.routes if isinstance(route, APIRoute)
            for method in route.methods}


def served() -> set[tuple[str, str, str]]:
    """(method, path, operationId) of each operation the built service answers."""
    app = create_app([build(Settings())])
    return {(method.upper(), path, operation["operationId"])
            for path, item in app.openapi()["paths"].items() if path.startswith("/api/v1/")
            for method, operation in item.items()}


def test_a_route_is_a_module_level_function_on_its_modules_router() -> None:
    for module in MODULES:
        found = {r.endpoint for r in module.router.routes if isinstance(r, APIRoute)}
        assert found, module.__name__
        for endpoint in found:
            assert inspect.iscoroutinefunction(endpoint)
            assert endpoint.__module__ == module.__name__
            assert getattr(module, endpoint.__name__) is endpoint
    assert {api.register, api.log} <= {r.endpoint for r in api.router.routes}


def test_the_routers_list_every_engagement_path_the_service_serves() -> None:
    declared = set().union(*(routes(m) for m in MODULES))
    assert {path for _, path, _ in declared} == {
        "/families", "/families/{family_id}", "/families/{family_id}/students",
        "/families/{family_id}/outreach", "/families/{family_id}/contacts",
        "/family-events", "/family-events/{event_id}", "/family-events/{event_id}/invitations",
        "/family-events/{event_id}/attendance", "/rsvp/{invitation_id}",
        "/announcements", "/announcements/{announcement_id}",
        "/unassigned-replies", "/unassigned-replies/{reply_id}/assign", "/rosters/import"}
    answered = served()
    assert {(m, "/api/v1" + p) for m, p, _ in declared} == {(m, p) for m, p, _ in answered}
    for method, path, name in declared:  # FastAPI's operationId starts with the function name
        operation = next(o for m, p, o in answered if (m, p) == (method, "/api/v1" + path))
        assert operation.startswith(f"{name}_"), (operation, name)
    assert len(declared) == 24  # with erasure_api's DELETE and roster_api's import


def test_the_service_hands_its_runtime_settings_clock_and_fan_out_to_the_routes() -> None:
    service = build(Settings(), clock=lambda: NOW)
    deps = service.deps
    assert isinstance(deps, EngagementRoutes)
    assert deps.runtime is service.runtime
    assert isinstance(deps.settings, EngagementSettings)
    assert deps.clock() == NOW
    assert deps.wake_fan_out == service.fan_out.wake  # type: ignore[attr-defined]
    assert ("GET", "/rsvp/{invitation_id}") in service.policy.public  # the signed RSVP link


# --- routes over HTTP, in-process ------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, HandlerBench]]:
    """The four routers on an app whose ``state.deps`` is a runtime over an in-memory
    database (HandlerBench's units of work record what they emit)."""
    async with HandlerBench(Base.metadata) as bench:
        settings = EngagementSettings(outreach_max_attempts=3)
        runtime = SimpleNamespace(unit_of_work=bench.unit_of_work, settings=settings,
                                  districts=load_districts(settings.districts_file))
        app = FastAPI()
        for module in MODULES:
            app.include_router(module.router, prefix="/api/v1")
        app.state.deps = {NAME: EngagementRoutes(runtime, settings, lambda: NOW,  # type: ignore[arg-type]
                                                 lambda: None)}

        @app.exception_handler(DomainError)
        async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engagement") as client:
            yield client, bench


def emitted(bench: HandlerBench, kind: type[Any]) -> list[Any]:
    return [e for e in map(decoded, bench.emitted) if isinstance(e, kind)]


async def family_with_outreach(http: httpx.AsyncClient, bench: HandlerBench,
                               attempts: int) -> tuple[dict[str, Any], str]:
    registered = await http.post("/api/v1/families", json={
        "district_id": "d001", "school_id": "lincoln-es", "name": "Maria Garcia",
        "email": "maria@example.org"})
    assert registered.status_code == 201, registered.text
    family = registered.json()
    assert family["created_at"].startswith("2026-03-10T15:00")  # the injected clock
    async with bench.unit_of_work() as uow:
        uow.session.add(Outreach(
            id="out-1", district_id="d001", family_id=family["id"], referral_id="ref-1",
            kind="partner_matched", status="awaiting_reply", attempts=attempts, urgency="routine",
            variables={}, next_check_at=NOW + timedelta(hours=1), created_at=NOW,
            updated_at=NOW))
    return family, "out-1"


async def call(http: httpx.AsyncClient, family: dict[str, Any], outcome: str,
               at: str | None = None) -> httpx.Response:
    return await http.post(f"/api/v1/families/{family['id']}/contacts", json={
        "district_id": "d001", "kind": "phone_call", "outcome": outcome,
        "referral_id": "ref-1", **({"at": at} if at else {})})


async def test_a_call_that_reaches_the_family_marks_its_outreach_contacted(
        http: tuple[httpx.AsyncClient, HandlerBench]) -> None:
    client, bench = http
    family, outreach_id = await family_with_outreach(client, bench, attempts=1)
    logged = await call(client, family, "reached", at="2026-03-10T14:55:00+00:00")
    assert logged.status_code == 201, logged.text
    outreach = await bench.get(Outreach, outreach_id)
    assert (outreach.status, outreach.next_check_at) == ("contacted", None)
    [contacted] = emitted(bench, FamilyContacted)
    assert (contacted.outreach_id, contacted.referral_id) == (outreach_id, "ref-1")
    again = await call(client, family, "reached", at="2026-03-10T14:55:00+00:00")
    assert again.status_code == 200 and again.headers["Already-Applied"] == "true"
    assert again.json()["id"] == logged.json()["id"]
    assert len(emitted(bench, FamilyContacted)) == 1 and len(emitted(bench, FamilyRegistered)) == 1


async def test_the_last_unanswered_call_makes_the_family_unreachable(
        http: tuple[httpx.AsyncClient, HandlerBench]) -> None:
    client, bench = http
    family, outreach_id = await family_with_outreach(client, bench, attempts=1)
    assert (await call(client, family, "no_answer")).status_code == 201
    outreach = await bench.get(Outreach, outreach_id)
    assert (outreach.status, outreach.attempts) == ("awaiting_reply", 2)
    assert (await call(client, family, "left_message")).status_code == 201  # the third try
    outreach = await bench.get(Outreach, outreach_id)
    assert (outreach.status, outreach.attempts, outreach.next_check_at) == ("unreachable", 3,
                                                                            None)
    assert emitted(bench, FamilyUnreachable) == [FamilyUnreachable(
        family_id=family["id"], referral_id="ref-1", outreach_id=outreach_id, attempts=3)]
    # Ended: a later call is logged, and touches the outreach no more.
    assert (await call(client, family, "no_answer")).status_code == 201
    assert (await bench.get(Outreach, outreach_id)).attempts == 3
    async with bench.unit_of_work() as uow:
        statuses = (await uow.session.scalars(select(Outreach.status))).all()
    assert statuses == ["unreachable"]


async def test_a_route_answers_a_domain_refusal_and_a_field_error(
        http: tuple[httpx.AsyncClient, HandlerBench]) -> None:
    client, _ = http
    missing = await client.get("/api/v1/families/nobody", params={"district_id": "d001"})
    assert missing.status_code == 404
    family = (await client.post("/api/v1/families", json={
        "district_id": "d001", "school_id": "lincoln-es", "name": "Ana",
        "email": "ana@example.org"})).json()
    refused = await client.patch(f"/api/v1/families/{family['id']}", json={
        "district_id": "d001", "preferred_channel": "sms"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "preferred_channel"]
