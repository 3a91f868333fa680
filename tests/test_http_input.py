"""Bad input over HTTP is a clear 4xx naming what is wrong, never a 500."""

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
    second = await system.http.post(f"/api/v1/referrals/{referral['id']}/close", json=close)
    assert second.status_code == 409
    assert "closed" in second.json()["detail"]


async def test_oversized_body_is_refused(system: System) -> None:
    response = await system.http.post("/api/v1/referrals", content=b"x" * 2_000_000,
                                      headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_openapi_is_served(system: System) -> None:
    spec = (await system.http.get("/openapi.json")).json()
    assert {"/api/v1/referrals", "/api/v1/partners", "/api/v1/families"} <= set(spec["paths"])
    assert (await system.http.get("/docs")).status_code == 200
