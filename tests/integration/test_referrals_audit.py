"""The audit trail: who read or changed a student's referral, per district."""

from conftest import System, token


async def test_reads_and_changes_are_recorded_for_the_district(system: System) -> None:
    await system.register_partner()
    family = await system.register_family()
    referral = await system.open_referral(family)
    path = f"/api/v1/referrals/{referral['id']}"
    params = {"district_id": "d001"}

    ana = {"Authorization": "Bearer " + token(system.settings, "coordinator", "d001",
                                               ("lincoln-es",))}
    assert (await system.http.get(path, params=params, headers=ana)).status_code == 200
    closed = await system.http.post(f"{path}/close", headers=ana, json={
        "district_id": "d001", "outcome": "no_longer_needed"})
    assert closed.status_code == 200, closed.text
    # A look from another district is refused and leaves no trace in this district's trail.
    other = {"Authorization": "Bearer " + token(system.settings, "district_admin", "d002")}
    assert (await system.http.get(path, params={"district_id": "d002"},
                                  headers=other)).status_code == 404

    trail = await system.http.get(f"{path}/audit", params=params)
    assert trail.status_code == 200, trail.text
    entries = [(e["actor"], e["role"], e["action"]) for e in trail.json()]
    assert ("test-coordinator", "coordinator", "read") in entries
    assert ("test-coordinator", "coordinator", "close") in entries
    # The admin's own look at the trail is in it (written with the read); d002's is not.
    assert [e for e in entries if e[1] == "district_admin"] == [
        ("test-district_admin", "district_admin", "read")]

    # Only a district admin reads the trail, and only their district's.
    assert (await system.http.get(f"{path}/audit", params=params, headers=ana)).status_code == 403
    assert (await system.http.get(f"{path}/audit", params={"district_id": "d002"},
                                  headers=other)).status_code == 404
