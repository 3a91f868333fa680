"""The COST review list through the real services: referrals opened this week, the stuck ones
and why, the support holding each, and only the school's own."""

from typing import Any

from conftest import System, token


async def _matched(system: System, referral_id: str, attempt: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        detail = await system.referral(referral_id)
        found = [e for e in detail["timeline"] if e["event"] == "PartnerMatched"]
        return found[-1]["data"] if len(found) >= attempt else None

    return await system.eventually(check, timeout=30, what=f"match attempt {attempt}")


async def test_the_weekly_list_shows_this_weeks_referrals_and_why_some_are_stuck(
        system: System) -> None:
    for name in ("Smile A", "Smile B"):
        await system.register_partner(name=name, capacity=5)
    family = await system.register_family()
    declined = await system.open_referral(family)
    for attempt in (1, 2):  # both partners decline it: no partner left
        match = await _matched(system, declined["id"], attempt)
        answer = await system.http.post(
            f"/api/v1/referrals/{declined['id']}/decline",
            json={"district_id": "d001", "partner_id": match["partner_id"],
                  "reason": "no_capacity"})
        assert answer.status_code == 200, answer.text
    await system.wait_status(declined["id"], "no_partner", timeout=30)
    nobody = await system.open_referral(family, need="vision")  # no partner offers it
    await system.wait_status(nobody["id"], "no_partner", timeout=30)
    held = await system.open_referral(family)
    holder = (await _matched(system, held["id"], 1))["partner_id"]
    await system.wait_status(held["id"], "matched", timeout=30)
    elsewhere = await system.register_family(school_id="roosevelt-ms")
    other_school = await system.open_referral(elsewhere)

    response = await system.http.get("/api/v1/schools/lincoln-es/cost-review",
                                     params={"district_id": "d001"})
    assert response.status_code == 200, response.text
    review = response.json()
    assert review["school_name"] == "Lincoln Elementary"
    by_id = {r["referral_id"]: r for r in review["referrals"]}
    assert other_school["id"] not in by_id
    assert set(by_id) == {declined["id"], nobody["id"], held["id"]}
    assert review["opened_this_week"] == 3 and review["stuck"] == 2
    assert by_id[declined["id"]]["stuck"] == ["no_partner", "declined_twice"]
    assert by_id[declined["id"]]["declines"] == 2
    assert by_id[nobody["id"]]["stuck"] == ["no_partner"]
    assert by_id[held["id"]] | {"stuck": [], "partner_id": holder} == by_id[held["id"]]
    # Stuck first, oldest first; then the rest.
    assert [r["referral_id"] for r in review["referrals"]] == [
        declined["id"], nobody["id"], held["id"]]
    assert all(r["opened_this_week"] for r in review["referrals"])
    assert "Maria" not in response.text  # ids and categories only

    # The school's coordinator reads it; another school's coordinator is refused.
    for school, status in (("lincoln-es", 200), ("roosevelt-ms", 403)):
        bearer = token(system.settings, "coordinator", "d001", (school,))
        answer = await system.http.get("/api/v1/schools/lincoln-es/cost-review",
                                       params={"district_id": "d001"},
                                       headers={"Authorization": f"Bearer {bearer}"})
        assert answer.status_code == status, answer.text
    unknown = await system.http.get("/api/v1/schools/nowhere/cost-review",
                                    params={"district_id": "d001"})
    assert unknown.status_code == 404
    missing = await system.http.get("/api/v1/schools/lincoln-es/cost-review")
    assert missing.status_code == 422 and "district_id" in missing.text
