"""Every endpoint, every role, two districts: nothing from another district or school appears,
and a refusal is 401/403/404, never a 500. Endpoints are read from the OpenAPI document, so a
new route is covered the day it is added."""

import re
from typing import Any

import httpx
import pytest
from conftest import System, token
from support.replies import family_replies_by_email

ROLES = [
    ("district_admin", "d001", (), False),
    ("coordinator", "d001", ("roosevelt-ms",), False),  # not Lincoln, where the data is
    ("partner", "d001", (), True),
    ("integrator", "d001", (), False),
    ("operator", "d001", (), False),
    ("district_admin", "d002", (), False),
    ("coordinator", "d002", ("lakeview-hs",), False),
]


@pytest.fixture
async def world(system: System) -> dict[str, Any]:
    """d001 data at Lincoln Elementary: a partner, a family, a referral through the loop."""
    partner = await system.register_partner()
    family = await system.register_family()
    referral = await system.open_referral(family, note="private note 7f3a")
    await family_replies_by_email(system, family, "yes, thank you")
    await system.wait_status(referral["id"], "family_contacted")
    messages = (await system.http.get("/api/v1/messages", params={"district_id": "d001"})).json()
    return {"referral_id": referral["id"], "partner_id": partner["id"],
            "family_id": family["id"], "message_id": messages[0]["id"],
            "secrets": [referral["id"], family["id"], family["email"], "Maria Garcia",
                        "private note 7f3a"]}


def _calls(spec: dict[str, Any], ids: dict[str, Any]) -> list[tuple[str, str]]:
    calls = []
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        concrete = re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), "unknown-id")), path)
        calls += [(method.upper(), concrete) for method in operations]
    return calls


async def test_every_endpoint_with_every_role(system: System, world: dict[str, Any]) -> None:
    spec = (await system.http.get("/openapi.json")).json()
    calls = _calls(spec, world)
    # Routes authenticated otherwise (signed provider webhooks, signed links in messages).
    public = {(m, "/api/v1" + p) for s in system.services.values() for m, p in s.policy.public}
    public_paths = {re.sub(r"\{(\w+)\}", lambda m: str(world.get(m.group(1), "unknown-id")), p)
                    for _m, p in public}
    assert len(calls) >= 10
    base = str(system.http.base_url)
    async with httpx.AsyncClient(base_url=base, timeout=10) as anonymous:
        for method, path in calls:
            response = await anonymous.request(method, path, params={"district_id": "d001"})
            assert response.status_code in (401, 403, 404, 422), (method, path, response.text)

    for role, district, schools, is_partner in ROLES:
        bearer = token(system.settings, role, district, schools,
                       world["partner_id"] if is_partner else None)
        headers = {"Authorization": f"Bearer {bearer}"}
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as http:
            for method, path in calls:
                for district_param in {district, "d001"}:
                    response = await http.request(method, path, json={},
                                                  params={"district_id": district_param})
                    where = (role, district, method, path, district_param)
                    assert response.status_code < 500, (*where, response.text)
                    if path in public_paths:
                        continue  # no token involved; the route checks its own signature
                    if role in ("operator", "integrator") and "/webhooks" not in path:
                        assert response.status_code == 403, where
                    if district_param != district:
                        assert response.status_code == 403, where  # naming another district
                    outsider = district == "d002" or role == "coordinator"
                    if outsider and response.status_code < 300:
                        for secret in world["secrets"]:
                            assert secret not in response.text, (*where, secret)


async def test_coordinator_sees_only_their_schools(system: System, world: dict[str, Any]) -> None:
    lincoln = token(system.settings, "coordinator", "d001", ("lincoln-es",))
    roosevelt = token(system.settings, "coordinator", "d001", ("roosevelt-ms",))
    path = f"/api/v1/referrals/{world['referral_id']}"
    params = {"district_id": "d001"}
    seen = await system.http.get(path, params=params,
                                 headers={"Authorization": f"Bearer {lincoln}"})
    assert seen.status_code == 200
    hidden = await system.http.get(path, params=params,
                                   headers={"Authorization": f"Bearer {roosevelt}"})
    assert hidden.status_code == 404
    listed = await system.http.get("/api/v1/referrals", params=params,
                                   headers={"Authorization": f"Bearer {roosevelt}"})
    assert listed.status_code == 200 and listed.json() == []
    # A coordinator cannot open a referral at someone else's school.
    body = {"district_id": "d001", "school_id": "lincoln-es", "student_ref": "s",
            "family_id": world["family_id"], "need": "dental"}
    refused = await system.http.post("/api/v1/referrals", json=body,
                                     headers={"Authorization": f"Bearer {roosevelt}"})
    assert refused.status_code == 403


async def test_a_bad_token_is_401(system: System) -> None:
    for header in ("Bearer not-a-jwt", "Basic dXNlcjpwYXNz", ""):
        response = await system.http.get("/api/v1/referrals", params={"district_id": "d001"},
                                         headers={"Authorization": header})
        assert response.status_code == 401


# Every write, with a caller outside the scope it names: (who, method, path, body, answer).
# "coordinator" is Lincoln's coordinator, "partner" the partner of the world's referral; ids in
# braces come from the world (the roosevelt_* ones are at a school that is not Lincoln's).
OUTSIDE = {"name": "Outside Clinic", "needs": ["dental"], "capacity": 1}
WRITES: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("coordinator", "POST", "/partners", OUTSIDE | {"schools": ["roosevelt-ms"]}, 403),
    ("coordinator", "POST", "/partners", OUTSIDE | {"schools": ["lincoln-es", "roosevelt-ms"]},
     403),
    ("coordinator", "POST", "/partners", OUTSIDE | {"schools": ["lincoln-es"],
                                                    "name": "Lincoln Clinic"}, 201),
    ("coordinator", "POST", "/partners", OUTSIDE | {"in_school_of": "roosevelt-ms",
                                                    "schools": []}, 403),
    ("coordinator", "PUT", "/partners/services/{service_id}/capacity",
     {"school_id": "roosevelt-ms", "capacity": 3}, 403),
    ("coordinator", "POST", "/partners/import/hsds", {}, 403),  # the district's directory
    ("coordinator", "POST", "/rosters/import", {}, 403),  # the district's SIS roster
    ("admin_d002", "POST", "/rosters/import", {}, 403),
    ("coordinator", "POST", "/referrals", {"school_id": "roosevelt-ms", "student_ref": "s9",
                                           "family_id": "{roosevelt_family}",
                                           "need": "dental"}, 403),
    ("coordinator", "POST", "/referrals/{roosevelt_referral}/close",
     {"outcome": "no_longer_needed"}, 404),
    ("coordinator", "POST", "/referrals/{roosevelt_referral}/cancel", {"reason": "duplicate"},
     404),
    ("coordinator", "POST", "/referrals/{roosevelt_referral}/consent",
     {"consent": "declined", "recorded_by": "c1"}, 404),
    ("coordinator", "POST", "/referrals/{roosevelt_referral}/notes", {"text": "hello"}, 404),
    ("coordinator", "POST", "/families", {"school_id": "roosevelt-ms", "name": "A Family",
                                          "email": "a@example.org"}, 403),
    ("coordinator", "PATCH", "/families/{roosevelt_family}", {"preferred_language": "en"}, 404),
    ("coordinator", "POST", "/families/{roosevelt_family}/students", {"student_ref": "s9"}, 404),
    ("coordinator", "POST", "/families/{roosevelt_family}/contacts", {"kind": "phone_call"},
     404),
    ("coordinator", "POST", "/family-events", {"school_id": "roosevelt-ms", "title": "Night",
                                               "place": "Gym",
                                               "starts_at": "2030-01-15T18:00:00Z"}, 403),
    ("coordinator", "POST", "/announcements", {"school_id": "roosevelt-ms", "title": "t",
                                               "body": "b"}, 403),
    ("coordinator", "POST", "/announcements", {"title": "t", "body": "b"}, 403),  # district
    ("coordinator", "POST", "/webhooks/endpoints", {"url": "https://hooks.example.org/x"}, 403),
    ("partner", "POST", "/referrals/{referral_id}/accept", {"partner_id": "someone-else"}, 403),
    ("partner", "POST", "/referrals/{referral_id}/in-service", {}, 403),
    ("partner", "POST", "/referrals/{referral_id}/close", {"outcome": "no_longer_needed"}, 403),
    ("partner", "POST", "/partners", OUTSIDE | {"schools": ["lincoln-es"]}, 403),
    ("admin_d002", "POST", "/partners", OUTSIDE | {"schools": ["lincoln-es"]}, 403),
]


async def test_every_write_stays_in_the_callers_scope(system: System,
                                                      world: dict[str, Any]) -> None:
    """A coordinator acts only for their schools, a partner only for itself, a district admin
    only in their district: a write naming anything else is a 403 before it runs, and a record
    outside the scope is not found (404), whatever the write."""
    partner = (await system.http.get(f"/api/v1/partners/{world['partner_id']}",
                                     params={"district_id": "d001"})).json()
    roosevelt = await system.register_family(school_id="roosevelt-ms")
    ids = world | {"service_id": partner["services"][0]["id"],
                   "roosevelt_family": roosevelt["id"],
                   "roosevelt_referral": (await system.open_referral(roosevelt,
                                                                     need="vision"))["id"]}
    callers = {"coordinator": token(system.settings, "coordinator", "d001", ("lincoln-es",)),
               "partner": token(system.settings, "partner", "d001", (), world["partner_id"]),
               "admin_d002": token(system.settings, "district_admin", "d002")}
    for who, method, path, body, expected in WRITES:
        concrete = path.format(**ids)
        named = {k: v.format(**ids) if isinstance(v, str) else v for k, v in body.items()}
        response = await system.http.request(
            method, f"/api/v1{concrete}", json={"district_id": "d001"} | named,
            params={"district_id": "d001"} if method == "PATCH" or "import" in path else None,
            headers={"Authorization": f"Bearer {callers[who]}"})
        assert response.status_code == expected, (who, method, path, body, response.text)
    names = {p["name"] for p in (await system.http.get(
        "/api/v1/partners", params={"district_id": "d001"})).json()}
    assert "Outside Clinic" not in names and "Lincoln Clinic" in names
    referral = await system.referral(ids["roosevelt_referral"])
    assert referral["status"] not in ("closed", "cancelled") and referral["consent"] == "given"
