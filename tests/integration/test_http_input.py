"""Bad input over HTTP is a clear 4xx naming what is wrong, never a 500."""

from collections.abc import AsyncIterator

import pytest
from conftest import System


def field_errors(response) -> set[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return {".".join(str(p) for p in e["loc"][1:]) for e in response.json()["detail"]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"need": "astrology"}, "need"),
        ({"urgency": "whenever"}, "urgency"),
        ({"school_id": "bad school!"}, "school_id"),
        ({"grade": 14}, "grade"),
        ({"student_ref": ""}, "student_ref"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_referral_fields_are_checked(system: System, change: dict, field: str) -> None:
    body = {"district_id": "d001", "school_id": "lincoln-es", "student_ref": "s1",
            "family_id": "f1", "need": "dental"} | change
    response = await system.http.post("/api/v1/referrals", json=body)
    assert field in field_errors(response)


async def test_missing_field_is_named(system: System) -> None:
    response = await system.http.post("/api/v1/referrals", json={"district_id": "d001"})
    assert {"school_id", "student_ref", "family_id", "need"} <= field_errors(response)


async def test_unknown_school_and_family_are_answers_not_crashes(system: System) -> None:
    body = {"district_id": "d001", "school_id": "atlantis-hs", "student_ref": "s1",
            "family_id": "f1", "need": "dental"}
    response = await system.http.post("/api/v1/referrals", json=body)
    assert response.status_code == 404 and "atlantis-hs" in response.json()["detail"]

    # A school of another district is not a school of this one.
    response = await system.http.post("/api/v1/referrals",
                                      json=body | {"school_id": "lakeview-hs"})
    assert response.status_code == 404

    response = await system.http.post("/api/v1/referrals", json=body | {"school_id": "lincoln-es"})
    assert response.status_code == 409 and "family f1" in response.json()["detail"]

    response = await system.http.get("/api/v1/referrals/nope", params={"district_id": "d001"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": "12345"}, "phone"),
        ({"phone": "call me maybe"}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"preferred_language": "español!"}, "preferred_language"),
        ({"preferred_channel": "pigeon"}, "preferred_channel"),
    ],
)
async def test_family_contact_details_are_validated(system: System, change: dict,
                                                    field: str) -> None:
    body = {"district_id": "d001", "school_id": "lincoln-es", "name": "A Family",
            "email": "a@example.org"} | change
    response = await system.http.post("/api/v1/families", json=body)
    assert field in field_errors(response)


async def test_closing_twice_names_the_current_state(system: System) -> None:
    await system.register_partner(needs=["tutoring"], schools=["roosevelt-ms"])
    family = await system.register_family(school_id="roosevelt-ms")
    referral = await system.open_referral(family, need="vision")
    close = {"district_id": "d001", "outcome": "unmet_no_partner"}
    first = await system.http.post(f"/api/v1/referrals/{referral['id']}/close", json=close)
    assert first.status_code == 200
    retried = await system.http.post(f"/api/v1/referrals/{referral['id']}/close", json=close)
    assert retried.status_code == 200 and retried.headers["Already-Applied"] == "true"
    second = await system.http.post(f"/api/v1/referrals/{referral['id']}/close",
                                    json=close | {"outcome": "no_longer_needed"})
    assert second.status_code == 409
    assert "closed" in second.json()["detail"]


async def test_oversized_body_is_refused(system: System) -> None:
    response = await system.http.post("/api/v1/referrals", content=b"x" * 2_000_000,
                                      headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_oversized_chunked_body_is_refused(system: System) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        for _ in range(40):
            yield b" " * 64_000

    response = await system.http.post("/api/v1/referrals", content=chunks(),
                                      headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "body over" in response.json()["detail"]


async def test_openapi_is_served(system: System) -> None:
    spec = (await system.http.get("/openapi.json")).json()
    assert {"/api/v1/referrals", "/api/v1/partners", "/api/v1/families"} <= set(spec["paths"])
    assert (await system.http.get("/docs")).status_code == 200


# --- found by tests/integration/test_openapi_fuzz.py (schemathesis) ------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/referrals/r1/accept", {"district_id": [], "partner_id": []}),
        ("POST", "/api/v1/families/f1/contacts", {"district_id": {"d": 1}, "kind": "sms"}),
        ("POST", "/api/v1/family-events", {"district_id": "d001", "school_id": [],
                                           "title": "t", "place": "p",
                                           "starts_at": "2030-01-01T00:00:00Z"}),
    ],
)
async def test_a_district_or_school_that_is_not_a_string_is_a_422(
    system: System, method: str, path: str, body: dict
) -> None:
    # Was a 500: the door put the value in a set before validation saw it.
    response = await system.http.request(method, path, json=body)
    assert response.status_code == 422, response.text
    named = {e["loc"][-1] for e in response.json()["detail"]}
    assert named & {"district_id", "school_id"}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/families", {"limit": -9223372036854775809}),
        ("/api/v1/families", {"offset": 2**64}),
        ("/api/v1/messages", {"limit": 0}),
        ("/api/v1/referrals", {"offset": 2**63}),
        ("/api/v1/family-events/e1/invitations", {"limit": 10**20}),
        ("/api/v1/webhooks/endpoints/w1/dead-letters", {"offset": -1}),
    ],
)
async def test_paging_out_of_range_is_a_422(system: System, path: str, params: dict) -> None:
    # Was a 500: the database cannot take an integer that size.
    response = await system.http.get(path, params={"district_id": "d001"} | params)
    assert set(params) <= field_errors(response)


async def test_an_update_that_leaves_no_way_to_reach_the_family_names_the_field(
    system: System,
) -> None:
    family = await system.register_family()
    response = await system.http.patch(f"/api/v1/families/{family['id']}", json={
        "district_id": "d001", "preferred_channel": "sms"})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "preferred_channel"] and "phone" in error["msg"]


async def test_an_empty_hsds_import_names_the_body(system: System) -> None:
    response = await system.http.post("/api/v1/partners/import/hsds",
                                      params={"district_id": "d001"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body"]


async def test_openapi_documents_every_error_as_json_with_a_detail(system: System) -> None:
    spec = (await system.http.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            for code in ("401", "403", "404", "409", "422"):
                content = operation["responses"][code]["content"]
                assert "detail" in content["application/json"]["schema"]["required"], (
                    method, path, code)
    # Routes that answer other than JSON say so.
    gaps = spec["paths"]["/api/v1/partners/gaps"]["get"]["responses"]["200"]["content"]
    export = spec["paths"]["/api/v1/partners/export/hsds"]["get"]["responses"]["200"]["content"]
    assert "text/csv" in gaps and "application/zip" in export


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "where"),
    [
        ("POST", "/api/v1/announcements",
         {"json": {"district_id": "d001", "title": "\u0000", "body": "b"}}, "body"),
        ("POST", "/api/v1/family-events", {"json": {
            "district_id": "d001", "school_id": "lincoln-es", "title": "Math\u0000night",
            "place": "p", "starts_at": "2030-01-01T00:00:00Z"}}, "body"),
        ("GET", "/api/v1/families/%00", {"params": {"district_id": "d001"}}, "path"),
        ("GET", "/api/v1/families", {"params": {"district_id": "d001", "school_id": "\x00"}},
         "query"),
    ],
)
async def test_the_nul_character_is_a_422(system: System, method: str, path: str,
                                          kwargs: dict, where: str) -> None:
    # Was a 500 on PostgreSQL, which stores no text holding U+0000.
    response = await system.http.request(method, path, **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == [where]


# --- found by a district's driver written from the README and the OpenAPI ----------------------

NUMBER_BODIES = [
    ("/api/v1/referrals", '{"district_id": "d001", "school_id": "lincoln-es", "student_ref": "s1",'
     ' "family_id": "f1", "need": "dental", "grade": %s}', "grade"),
    ("/api/v1/partners", '{"district_id": "d001", "name": "P", "needs": ["dental"],'
     ' "schools": ["lincoln-es"], "capacity": %s}', "capacity"),
    ("/api/v1/family-events/e1/invitations", '{"district_id": "d001", "grades": [1, %s]}',
     "grades.1"),
]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize(("path", "template", "field"), NUMBER_BODIES)
async def test_a_number_json_does_not_have_is_a_422_naming_the_field(
    system: System, number: str, path: str, template: str, field: str
) -> None:
    # Was a 500: Python's json reads NaN and Infinity, 1e999 becomes inf, and the 422 that
    # repeated the value could not be written as JSON.
    response = await system.http.post(path, content=(template % number).encode(),
                                      headers={"content-type": "application/json"})
    assert field_errors(response) == {field}


@pytest.mark.parametrize("body", [b'{"district_id": "d001",', b"not json", b"\xff\xfe{}",
                                  b'{"a": ' + b"1" * 5000 + b"}"])
async def test_a_body_that_is_not_json_is_a_400_as_documented(system: System,
                                                              body: bytes) -> None:
    response = await system.http.post("/api/v1/referrals", content=body,
                                      headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("body is not valid JSON")
    spec = (await system.http.get("/openapi.json")).json()
    assert "400" in spec["paths"]["/api/v1/referrals"]["post"]["responses"]


@pytest.mark.parametrize("outcome", ["no_answer", "reached"])
async def test_a_time_without_its_utc_offset_is_a_422_naming_the_field(
    system: System, outcome: str
) -> None:
    family = await system.register_family()
    response = await system.http.post(f"/api/v1/families/{family['id']}/contacts", json={
        "district_id": "d001", "kind": "phone_call", "outcome": outcome,
        "at": "2026-03-02T10:00:00"})
    assert field_errors(response) == {"at"}  # no_answer was a 500, reached named another field
    listed = await system.http.get(f"/api/v1/families/{family['id']}/contacts",
                                   params={"district_id": "d001"})
    assert listed.json() == []
    response = await system.http.get("/api/v1/referrals", params={
        "district_id": "d001", "opened_from": "2026-03-02T10:00:00"})
    assert field_errors(response) == {"opened_from"}


async def test_a_student_is_linked_with_the_district_in_the_body(system: System) -> None:
    family = await system.register_family()
    path = f"/api/v1/families/{family['id']}/students"
    linked = await system.http.post(path, json={"district_id": "d001", "student_ref": "stu-1",
                                                "grade": 3})
    assert linked.status_code == 201, linked.text
    assert linked.json() == {"student_ref": "stu-1", "school_id": "lincoln-es", "grade": 3}
    # The query form of before is refused, naming the field that moved.
    moved = await system.http.post(path, params={"district_id": "d001"},
                                   json={"student_ref": "stu-2"})
    assert field_errors(moved) == {"district_id"}
