"""HTTP metrics name the service and the route template a request reached (an on-call engineer
reads them per service): FastAPI hands the middleware the route of the service's own router,
without the /api/v1 prefix or the service's tag, which once labelled every API request
`service="ensemble"` with a path no dashboard knew."""

from pathlib import Path

import httpx
from prometheus_client import REGISTRY

from ensemble.system import build_services
from runtime.host import create_app
from runtime.settings import Settings


def count(service: str, route: str, status: str) -> float:
    return REGISTRY.get_sample_value("ensemble_http_requests_total", {
        "service": service, "route": route, "method": "GET", "status": status}) or 0.0


async def test_each_request_is_counted_under_its_service_and_full_route_template(
        tmp_path: Path) -> None:
    app = create_app(build_services(Settings(ENSEMBLE_DATA_DIR=tmp_path)))
    asked = {("referrals", "/api/v1/referrals/{referral_id}"): "/api/v1/referrals/r-1",
             ("engagement", "/api/v1/families/{family_id}"): "/api/v1/families/f-1",
             ("partners", "/api/v1/partners"): "/api/v1/partners"}
    before = {key: count(*key, "401") for key in asked}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        for path in asked.values():
            assert (await client.get(path, params={"district_id": "d001"})).status_code == 401
    for key in asked:
        assert count(*key, "401") == before[key] + 1, key
    assert count("ensemble", "/referrals/{referral_id}", "401") == 0  # the old, wrong label
