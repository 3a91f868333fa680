"""The partners routes are module-level functions on the module-level router, so a reader finds
each one by importing it; the service serves exactly those routes, with what it was built with
(``PartnersDeps``) reaching them through ``Depends(wired("partners"))``. No NATS, no server."""

import inspect
from datetime import UTC, date, datetime

from fastapi.routing import APIRoute

from runtime.host import create_app
from runtime.settings import Settings
from services.partners import api
from services.partners.api import period, put_capacity, register, router
from services.partners.deps import PartnersDeps
from services.partners.service import build


def routes() -> set[tuple[str, str, str]]:
    """(method, path, function name) of each route declared on the router (the partner-link
    routes come from services.partners.links_api, included in it)."""
    return {(method, route.path, route.endpoint.__name__)
            for route in router.routes if isinstance(route, APIRoute)
            for method in route.methods}


def served() -> dict[tuple[str, str], str]:
    """The operationId of each (method, path) the built service answers, from its OpenAPI."""
    app = create_app([build(Settings())])
    return {(method.upper(), path): operation["operationId"]
            for path, item in app.openapi()["paths"].items() if path.startswith("/api/v1/")
            for method, operation in item.items()}


def test_a_route_is_a_module_level_function_on_the_module_level_router() -> None:
    assert inspect.iscoroutinefunction(register)
    assert register.__module__ == put_capacity.__module__ == "services.partners.api"
    found = {route.endpoint for route in router.routes if isinstance(route, APIRoute)}
    assert {register, put_capacity} <= found
    assert all(getattr(api, endpoint.__name__) is endpoint for endpoint in found)


def test_the_router_lists_every_partners_path_the_service_serves() -> None:
    declared = routes()
    assert declared == {
        ("POST", "/partners", "register"), ("GET", "/partners", "list_"),
        ("POST", "/partners/import/hsds", "import_hsds"),
        ("GET", "/partners/export/hsds", "export_hsds"),
        ("GET", "/partners/gaps", "gap_map"),
        ("PUT", "/partners/services/{service_id}/capacity", "put_capacity"),
        ("GET", "/partners/{partner_id}", "detail"),
        ("GET", "/partner-links/{token}", "partner_link"),
        ("POST", "/partner-links/{token}/use", "partner_link_use")}
    # What the service answers is exactly what the router declares, each operation named
    # after its function (FastAPI's operationId starts with the function's name).
    answered = served()
    assert {(m, "/api/v1" + p) for m, p, _ in declared} == set(answered)
    for method, path, name in declared:
        assert answered[method, "/api/v1" + path].startswith(f"{name}_")
    # The detail's {partner_id} is matched last, so /partners/gaps is not read as a partner id.
    paths = [r.path for r in router.routes if isinstance(r, APIRoute)]
    assert paths[-1] == "/partners/{partner_id}"


def test_the_service_hands_its_runtime_and_clock_to_the_routes() -> None:
    def clock() -> datetime:
        return datetime(2026, 3, 10, 15, 0, tzinfo=UTC)

    service = build(Settings(), clock=clock)
    assert isinstance(service.deps, PartnersDeps)
    assert service.deps.runtime is service.runtime and service.deps.clock is clock
    assert service.router is router


def test_the_gap_maps_default_period_is_this_month_so_far_by_the_services_clock() -> None:
    now = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    assert period(None, None, now) == (datetime(2026, 3, 1, tzinfo=UTC), now)
    # A date "to" includes that day; a time without its offset is read as UTC.
    assert period(date(2026, 1, 1), date(2026, 1, 31), now) == (
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    assert period(datetime(2026, 1, 1, 8), None, now) == (
        datetime(2026, 1, 1, 8, tzinfo=UTC), now)
