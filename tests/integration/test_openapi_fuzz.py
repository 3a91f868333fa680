"""schemathesis against each service's own OpenAPI, each service served alone over real HTTP as
in a deployment (real NATS, real databases), as a district admin of d001 so requests get past
the door and reach validation and the handlers: no 5xx, every error a structured 4xx (JSON with
a `detail`), status codes and content types as documented.

Each operation is fuzzed three ways, a bounded number of examples each: data that fits the
schema, data that does not, and data that fits with the path's ids pointing at real records
(seeded first), so state transitions on a live referral, family or event are exercised too."""

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from conftest import running, token
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import response_content_type
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ensemble.embedded import DevSmsServer
from ensemble.system import build_services
from runtime.settings import Settings
from services.referrals.settings import ReferralsSettings

DISTRICT = "d001"
SCHOOLS = ("lincoln-es", "roosevelt-ms")
# Examples per operation and mode, the same ones every run (CI stays reproducible);
# ENSEMBLE_FUZZ_EXAMPLES=200 is a longer local hunt with new inputs each run.
EXAMPLES = int(os.environ.get("ENSEMBLE_FUZZ_EXAMPLES", "20"))
HUNT = "ENSEMBLE_FUZZ_EXAMPLES" in os.environ
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def structured_error(response: Response) -> str | None:
    """Why an error answer is not a structured 4xx, or None when it is."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}"
    if status < 400:
        return None
    content_type = response_content_type(response) or ""
    if not content_type.startswith("application/json"):
        return f"{status} answered as {content_type!r}"
    try:
        body = response.json()
    except ValueError:
        return f"{status} with a body that is not JSON"
    if not isinstance(body, dict) or "detail" not in body:
        return f"{status} without a detail: {str(body)[:200]}"
    return None


def pin_scope(case: Case, school: str | None) -> Case:
    """Keep the district (and often the school) the caller's, so the request is not refused at
    the door and goes on to validation and the handler."""
    if case.query and "district_id" in case.query:
        case.query["district_id"] = DISTRICT
    if isinstance(case.body, dict):
        if "district_id" in case.body:
            case.body["district_id"] = DISTRICT
        if school and "school_id" in case.body:
            case.body["school_id"] = school
    if school and case.query and "school_id" in case.query:
        case.query["school_id"] = school
    return case


def fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str],
                   path_parameters: dict[str, str] | None, examples: int,
                   statuses: Counter[int]) -> list[str]:
    """Run one operation's examples (in a worker thread: the services run on the event loop);
    return the failures found, one line each after hypothesis shrank them."""
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    if mode == GenerationMode.POSITIVE:
        strategy = st.tuples(strategy, st.sampled_from((None, *SCHOOLS))).map(
            lambda pair: pin_scope(*pair))
    checks = [*CHECKS, negative_data_rejection] if mode == GenerationMode.NEGATIVE else CHECKS
    session = requests.Session()

    @hypothesis_settings(max_examples=examples, deadline=None, database=None,
                         derandomize=not HUNT, phases=[Phase.generate, Phase.shrink],
                         suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Case) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=15)
        statuses[response.status_code // 100 * 100] += 1
        problem = structured_error(response)
        assert problem is None, f"{problem}\n{case.as_curl_command(headers=headers)}"
        case.validate_response(response, checks=checks, headers=headers)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:
        return [f"{operation.label} [{mode.value}]: {exc}"[:3000]]
    finally:
        session.close()
    return []


@contextlib.asynccontextmanager
async def deployment(settings: Settings) -> AsyncIterator[dict[str, str]]:
    """Every service in its own app on its own port, as deployed (one service per process),
    with the parts of the `system` fixture: NATS, databases, SMTP (`settings`), SMS."""
    services = build_services(settings)
    sms_port = int(str(settings.sms_api_url).rsplit(":", 1)[1])
    async with contextlib.AsyncExitStack() as stack:
        urls = {s.name: await stack.enter_async_context(running(settings, [s]))
                for s in services}
        await stack.enter_async_context(DevSmsServer(
            settings.data_dir / "sms" / "messages.jsonl", sms_port, settings.sms_auth_token,
            f"{urls['notifications']}/api/v1/sms/inbound"))
        yield urls


async def seed(urls: dict[str, str], headers: dict[str, str]) -> dict[str, str]:
    """Real records for the path's ids: a partner, a family, a referral matched to them, a
    family event with an invitation, an announcement, a webhook endpoint and a message."""
    ids: dict[str, str] = {}
    async with httpx.AsyncClient(headers=headers, timeout=15) as http:
        async def post(service: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await http.post(f"{urls[service]}/api/v1{path}", json=body)
            assert response.status_code in (200, 201, 202), response.text
            return dict(response.json())

        partner = await post("partners", "/partners", {
            "district_id": DISTRICT, "name": "Smile Bright Dental", "needs": ["dental"],
            "schools": list(SCHOOLS), "languages": ["en", "es"], "capacity": 50})
        ids["partner_id"] = partner["id"]
        ids["service_id"] = partner["services"][0]["id"]
        family = await post("engagement", "/families", {
            "district_id": DISTRICT, "school_id": SCHOOLS[0], "name": "Maria Garcia",
            "preferred_language": "es", "email": f"family-{uuid.uuid4().hex[:8]}@example.org",
            "preferred_channel": "email"})
        ids["family_id"] = family["id"]
        body = {"district_id": DISTRICT, "school_id": SCHOOLS[0], "student_ref": "stu-fuzz",
                "family_id": family["id"], "need": "dental", "urgency": "routine",
                "consent": "given"}
        deadline = time.monotonic() + 15
        while True:  # referrals hears FamilyRegistered over NATS
            response = await http.post(f"{urls['referrals']}/api/v1/referrals", json=body)
            if response.status_code != 409 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert response.status_code == 201, response.text
        ids["referral_id"] = response.json()["id"]
        event = await post("engagement", "/family-events", {
            "district_id": DISTRICT, "school_id": SCHOOLS[0], "title": "Math night",
            "starts_at": "2030-01-15T18:00:00-08:00", "place": "Library"})
        await post("engagement", f"/family-events/{event['id']}/invitations",
                   {"district_id": DISTRICT})
        ids["event_id"] = event["id"]
        announcement = await post("engagement", "/announcements", {
            "district_id": DISTRICT, "school_id": SCHOOLS[0], "title": "Closed Monday",
            "body": "School is closed on Monday."})
        ids["announcement_id"] = announcement["id"]
        ids["batch_id"] = announcement["id"]
        endpoint = await post("webhooks", "/webhooks/endpoints", {
            "district_id": DISTRICT, "url": "https://hooks.invalid/ensemble"})
        ids["endpoint_id"] = endpoint["id"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "message_id" not in ids:
            messages = (await http.get(f"{urls['notifications']}/api/v1/messages", params={
                "district_id": DISTRICT, "family_id": family["id"]})).json()
            if messages:
                ids["message_id"] = messages[0]["id"]
            await asyncio.sleep(0.1)
    return ids


async def fuzz_service(url: str, headers: dict[str, str], ids: dict[str, str],
                       examples: int, statuses: Counter[int]) -> list[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        spec = (await http.get(f"{url}/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        names = [p.name for p in operation.path_parameters]
        known = {n: ids[n] for n in names if n in ids}
        runs: list[tuple[GenerationMode, dict[str, str] | None]] = [
            (GenerationMode.POSITIVE, None)]
        if any(True for _ in operation.iter_parameters()) or operation.body:
            runs.append((GenerationMode.NEGATIVE, None))  # something there to get wrong
        if known:
            runs.append((GenerationMode.POSITIVE, known))
        for mode, path_parameters in runs:
            failures += await asyncio.to_thread(fuzz_operation, operation, mode, url, headers,
                                                path_parameters, examples, statuses)
    return failures


@pytest.mark.parametrize("service", ["referrals", "partners", "engagement", "notifications",
                                     "webhooks", "insights"])
async def test_openapi_fuzz(settings: Settings, service: str, backend: dict[str, str]) -> None:
    examples = EXAMPLES if not backend else max(3, EXAMPLES // 3)  # a smaller pass there
    headers = {"Authorization": f"Bearer {token(settings, 'district_admin', DISTRICT)}"}
    statuses: Counter[int] = Counter()
    # Random family ids never arrive: do not wait for them
    # (tests/integration/test_referrals_family_wait.py)
    settings = ReferralsSettings.of(settings, family_wait_seconds=0.1)
    async with deployment(settings) as urls:
        ids = await seed(urls, headers)
        failures = await fuzz_service(urls[service], headers, ids, examples, statuses)
    assert not failures, "\n\n".join(failures)
    # The requests got past the door: handlers answered, not only validation.
    assert statuses[200] and statuses[400], dict(statuses)

