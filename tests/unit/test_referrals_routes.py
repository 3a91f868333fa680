"""The referrals routes are module-level functions on module-level routers, so a reader finds
each one by importing it; the service serves exactly those routes, with what it was built with
(``ReferralsDeps``) reaching them through ``Wired``. No NATS, no server; the last test serves the
built service in-process and counts the statements one POST /referrals makes."""

import inspect
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select
from support.sql import statements_run

from contracts.events import ReferralOpened
from runtime.auth import issue_token
from runtime.host import create_app
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.referrals import api, audit
from services.referrals.api import accept, open_, router
from services.referrals.deps import ReferralsDeps
from services.referrals.service import build
from services.referrals.settings import ReferralsSettings
from services.referrals.tables import KnownFamily


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


# --- what one request costs the database ------------------------------------------------------


@pytest.fixture
async def served_app(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceRuntime]]:
    """The built service over HTTP in-process on a SQLite file: its routes, policy and audit
    trail as deployed, without NATS (nothing here publishes)."""
    settings = ReferralsSettings(data_dir=tmp_path,
                                 referrals_database_url=f"sqlite:///{tmp_path / 'r.db'}")
    service = build(settings)
    rt = service.runtime
    await rt.db.create_schema()
    async with rt.db.transaction() as session:
        session.add(KnownFamily(district_id="d001", family_id="fam-1", school_id="lincoln-es"))
    token = issue_token(settings.jwt_secret, subject="admin-1", role="district_admin",
                        district="d001")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app([service])),
                                     base_url="http://referrals.test",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            yield client, rt
    finally:
        await rt.db.dispose()


def verb_and_table(sql: str) -> str:
    words = sql.replace(",", " ").split()
    verb = words[0]
    table = {"INSERT": lambda: words[2], "SELECT": lambda: words[1].split(".")[0],
             "BEGIN": lambda: ""}.get(verb, lambda: " ".join(words[1:3]))()
    return f"{verb} {table}".strip()


def statements(rt: ServiceRuntime) -> AbstractContextManager[list[str]]:
    """Each statement the service's database ran in the block, as its verb and table."""
    return statements_run(rt.db.engine, verb_and_table)


OPEN = {"district_id": "d001", "school_id": "lincoln-es", "student_ref": "stu-1",
        "family_id": "fam-1", "need": "dental", "urgency": "routine", "consent": "given",
        "opened_by": "c-1"}


async def test_opening_a_referral_is_one_statement_per_table(
        served_app: tuple[httpx.AsyncClient, ServiceRuntime]) -> None:
    client, rt = served_app
    with statements(rt) as seen:
        opened = await client.post("/api/v1/referrals", json=OPEN,
                                   headers={"Idempotency-Key": "k-1"})
    assert opened.status_code == 201, opened.text
    # The look-ups (earlier or duplicate in one UNION ALL; the family), then one INSERT per
    # table: no SELECT after an INSERT, no ORM refresh. Grows back, fails here.
    assert seen == ["BEGIN", "INSERT referral_audit", "SELECT referrals", "SELECT known_families",
                    "INSERT referrals", "INSERT referral_timeline", "INSERT outbox"]
    body = opened.json()
    assert opened.headers["Location"] == f"/api/v1/referrals/{body['id']}"
    assert (body["status"], body["follow_up"], body["consent_recorded_by"]) == (
        "opened", "scheduled", "coordinator:c-1")
    async with rt.unit_of_work() as uow:
        types = (await uow.session.scalars(select(rt.tables.outbox.c.event_type))).all()
    assert types == [ReferralOpened.ce_type()]

    with statements(rt) as seen:
        read = await client.get(f"/api/v1/referrals/{body['id']}", params={"district_id": "d001"})
    assert seen == ["BEGIN", "INSERT referral_audit", "SELECT referrals",  # + its timeline
                    "SELECT referral_notes"]
    detail = read.json()
    assert {k: v for k, v in detail.items() if k in body} == body  # the same referral
    assert [(e["event"], e["data"]["referral_id"]) for e in detail["timeline"]] == [
        ("ReferralOpened", body["id"])]
    assert detail["timeline"][0]["data"]["opened_at"] == body["opened_at"]

    again = await client.post("/api/v1/referrals", json=OPEN, headers={"Idempotency-Key": "k-1"})
    assert (again.status_code, again.json()) == (200, body)
    assert again.headers["Idempotent-Replay"] == "true"
