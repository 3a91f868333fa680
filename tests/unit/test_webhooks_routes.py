"""The webhooks routes are module-level functions on the module-level router, so a reader finds
each one by importing it; the service serves exactly those routes, each behind the managers'
policy, with what it was built with (``WebhooksDeps``) reaching them through
``Depends(wired("webhooks"))``. No NATS, no server."""

import inspect
from datetime import UTC, datetime
from pathlib import Path

from fastapi.routing import APIRoute

from runtime.host import create_app
from runtime.settings import Settings
from services.webhooks import api
from services.webhooks.api import POLICY, ROUTES, create, replay, router
from services.webhooks.deps import WebhooksDeps
from services.webhooks.service import build


def routes() -> set[tuple[str, str, str]]:
    """(method, path, function name) of each route declared on the router."""
    return {(method, route.path, route.endpoint.__name__)
            for route in router.routes if isinstance(route, APIRoute)
            for method in route.methods}


def test_a_route_is_a_module_level_function_on_the_module_level_router() -> None:
    assert inspect.iscoroutinefunction(create)
    assert create.__module__ == replay.__module__ == "services.webhooks.api"
    found = {route.endpoint for route in router.routes if isinstance(route, APIRoute)}
    assert {create, replay} <= found
    assert all(getattr(api, endpoint.__name__) is endpoint for endpoint in found)


def test_the_router_lists_every_webhooks_path_each_behind_the_policy(tmp_path: Path) -> None:
    declared = routes()
    assert declared == {
        ("POST", "/webhooks/endpoints", "create"), ("GET", "/webhooks/endpoints", "list_"),
        ("GET", "/webhooks/endpoints/{endpoint_id}", "detail"),
        ("DELETE", "/webhooks/endpoints/{endpoint_id}", "remove"),
        ("GET", "/webhooks/endpoints/{endpoint_id}/dead-letters", "dead_letters"),
        ("POST", "/webhooks/endpoints/{endpoint_id}/dead-letters/{dead_letter_id}/replay",
         "replay")}
    # The policy names every route, and only those (a route it missed would be open to any
    # signed-in role).
    assert {(m, p) for m, p, _ in declared} == set(ROUTES) == set(POLICY.rules)
    # What the service answers is exactly what the router declares, each operation named
    # after its function (FastAPI's operationId starts with the function's name).
    spec = create_app([build(Settings(data_dir=tmp_path))]).openapi()
    answered = {(m.upper(), p): op["operationId"] for p, item in spec["paths"].items()
                if p.startswith("/api/v1/") for m, op in item.items()}
    assert {(m, "/api/v1" + p) for m, p, _ in declared} == set(answered)
    for method, path, name in declared:
        assert answered[method, "/api/v1" + path].startswith(f"{name}_")


def test_the_service_hands_its_runtime_settings_dispatcher_and_clock_to_the_routes(
        tmp_path: Path) -> None:
    def clock() -> datetime:
        return datetime(2026, 3, 10, 15, 0, tzinfo=UTC)

    service = build(Settings(data_dir=tmp_path), clock=clock)
    deps = service.deps
    assert isinstance(deps, WebhooksDeps)
    assert deps.runtime is service.runtime and deps.config is service.runtime.settings
    assert deps.dispatcher.rt is service.runtime and deps.dispatcher.clock is clock
    assert deps.clock is clock and service.router is router
