"""The referrals routes are module-level functions on module-level routers, so a reader finds
each one by importing it; the service serves exactly those routes, with what it was built with
(``ReferralsDeps``) reaching them through ``Depends(wired("referrals"))``. No NATS, no server."""

import inspect

from fastapi.routing import APIRoute

from runtime.host import create_app
from runtime.settings import Settings
from services.referrals import api, audit
from services.referrals.api import accept, open_, router
from services.referrals.deps import ReferralsDeps
from services.referrals.service import build


def routes(r: object) -> set[tuple[str, str, str]]:
    """(method, path, function name) of each route declared on a router."""
    return {(method, route.path, route.endpoint.__name__)
            for route in r.routes if isinstance(route, APIRoute)  # type: ignore[attr-defined]
            for method in route.methods}


def served() -> set[tuple[str, str, str]]:
    """(method, path, operationId) of each operation the built service answers, from its app's
    OpenAPI document."""
    app = create_app([build(Settings())])
    return {(method.upper(), path, operation["operationId"])
            for path, item in app.openapi()["paths"].items() if path.startswith("/api/v1/")
            for method, operation in item.items()}


def test_a_route_is_a_module_level_function_on_the_module_level_router() -> None:
    assert inspect.iscoroutinefunction(open_) and open_.__module__ == "services.referrals.api"
    found = {route.endpoint for route in router.routes if isinstance(route, APIRoute)}
    assert {open_, accept} <= found
    assert all(getattr(api, endpoint.__name__) is endpoint for endpoint in found)
    assert audit.trail in {route.endpoint for route in audit.router.routes}


def test_the_routers_list_every_referrals_path_the_service_serves() -> None:
    declared = routes(api.router) | routes(audit.router)
    assert {path for _, path, _ in declared} == {
        "/referrals", "/referrals/counts", "/referrals/follow-ups", "/referrals/{referral_id}",
        "/referrals/{referral_id}/accept", "/referrals/{referral_id}/decline",
        "/referrals/{referral_id}/in-service", "/referrals/{referral_id}/cancel",
        "/referrals/{referral_id}/close", "/referrals/{referral_id}/consent",
        "/referrals/{referral_id}/notes", "/referrals/{referral_id}/audit",
        "/schools/{school_id}/cost-review"}
    assert ("POST", "/referrals", "open_") in declared
    assert ("GET", "/referrals/{referral_id}/audit", "trail") in declared
    # What the service answers is exactly what the two routers declare, each operation named
    # after its function (FastAPI's operationId starts with the function's name).
    answered = served()
    assert {(m, "/api/v1" + p) for m, p, _ in declared} == {(m, p) for m, p, _ in answered}
    for method, path, name in declared:
        operation = next(o for m, p, o in answered if (m, p) == (method, "/api/v1" + path))
        assert operation.startswith(f"{name}_"), (operation, name)
    assert len(declared) == 14  # GET and POST /referrals, and one method on each other path


def test_the_service_hands_its_runtime_and_desk_to_the_routes() -> None:
    service = build(Settings())
    assert isinstance(service.deps, ReferralsDeps)
    assert service.deps.runtime is service.runtime
    assert service.deps.desk.districts is service.runtime.districts
