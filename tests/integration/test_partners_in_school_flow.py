"""In-school supports through the real loop: a district that matches in-school first gets its
school's counselor before a better-scoring community partner, and the outside partner once the
counselor is full; a family that shares only inside the school (consent in_school) never gets
an outside partner until it widens its consent; the PartnerMatched reasons say which and why."""

from pathlib import Path
from typing import Any

import pytest
from conftest import System

from runtime.settings import DEFAULT_DISTRICTS_FILE, Settings


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The deployment's districts, d001 matching in-school supports first."""
    text = DEFAULT_DISTRICTS_FILE.read_text()
    first_district = 'id = "d001"\n'
    assert first_district in text
    path = tmp_path / "districts.toml"
    path.write_text(text.replace(first_district,
                                 first_district + "match_in_school_first = true\n", 1))
    return settings.model_copy(update={"districts_file": path})


async def _match(system: System, referral_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        detail = await system.referral(referral_id)
        found = [e for e in detail["timeline"] if e["event"] == "PartnerMatched"]
        return found[-1]["data"] if found else None

    return await system.eventually(check, timeout=30, what="a match")


async def _outside_and_in_school(system: System,
                                 in_school_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Spanish-speaking community partner with room, and the school's own support (English,
    one slot): the outside one scores higher for a Spanish-speaking family."""
    outside = await system.register_partner(
        name="Riverside Family Counseling", needs=["mental_health"], languages=["en", "es"],
        capacity=5)
    registered = await system.http.post("/api/v1/partners", json={
        "district_id": "d001", "name": in_school_name, "needs": ["mental_health"],
        "languages": ["en"], "capacity": 1, "in_school_of": "lincoln-es"})
    assert registered.status_code == 201, registered.text
    return outside, registered.json()


async def test_the_schools_own_counselor_is_matched_first_then_the_outside_partner(
        system: System) -> None:
    outside, counselor = await _outside_and_in_school(system, "Lincoln school counselor")
    assert counselor["in_school_of"] == "lincoln-es" and outside["in_school_of"] is None
    assert counselor["services"][0]["schools"] == ["lincoln-es"]

    family = await system.register_family(preferred_language="es")
    first = await system.open_referral(family, need="mental_health")
    match = await _match(system, first["id"])
    # The outside partner speaks Spanish and has more room: it would score higher.
    assert match["partner_id"] == counselor["id"], match
    assert ("in-school support of lincoln-es (the district matches in-school supports first)"
            in match["reasons"])

    second = await system.open_referral(family, need="mental_health")  # another student
    match = await _match(system, second["id"])
    assert match["partner_id"] == outside["id"], match
    assert any(r.startswith("outside partner: no in-school support of lincoln-es eligible")
               for r in match["reasons"])

    # An in-school support serves its own school only.
    service_id = counselor["services"][0]["id"]
    refused = await system.http.put(
        f"/api/v1/partners/services/{service_id}/capacity",
        json={"district_id": "d001", "school_id": "roosevelt-ms", "capacity": 3})
    assert refused.status_code == 409, refused.text
    assert "in-school support of lincoln-es" in refused.text


async def test_a_family_that_shares_only_inside_the_school_is_never_matched_outside(
        system: System) -> None:
    outside, nurse = await _outside_and_in_school(system, "Lincoln school nurse")

    family = await system.register_family(preferred_language="es")
    first = await system.open_referral(family, need="mental_health", consent="in_school")
    match = await _match(system, first["id"])
    assert match["partner_id"] == nurse["id"], match
    assert "consent given for the school's own supports only" in match["reasons"]

    # The nurse is full: the outside partner has room, but the family did not agree to it.
    second = await system.open_referral(family, need="mental_health", consent="in_school")
    detail = await system.wait_status(second["id"], "no_partner", timeout=30)
    [none] = [e for e in detail["timeline"] if e["event"] == "NoPartnerAvailable"]
    assert detail["partner_id"] is None and detail["consent"] == "in_school"
    # Narrowing is refused once shared; the family widening its consent is matched outside.
    narrowed = await system.http.post(f"/api/v1/referrals/{first['id']}/consent", json={
        "district_id": "d001", "consent": "declined", "recorded_by": "coord-1"})
    assert narrowed.status_code == 409, narrowed.text
    widened = await system.http.post(f"/api/v1/referrals/{second['id']}/consent", json={
        "district_id": "d001", "consent": "given", "recorded_by": "coord-1"})
    assert widened.status_code == 200, widened.text
    match = await _match(system, second["id"])
    assert match["partner_id"] == outside["id"], match
    assert none["data"]["reason"].startswith("the family shares only inside the school: ")
