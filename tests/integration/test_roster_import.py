"""Rosters end to end: a district admin uploads a generated OneRoster package with bad rows over
HTTP (real NATS, database and HTTP); the good rows become families the rest of the system knows
(a referral opens for one), the bad ones are named by file, row and field; the same package again
writes nothing to the outbox; other roles and districts are refused; a family that left the
roster is sent no announcement or invitation. The CLI: tests/e2e/test_roster_cli.py."""

from typing import Any

from conftest import System, token
from sqlalchemy import func, select
from support.generators import roster as gen


async def _outbox_rows(system: System) -> int:
    rt = system.services["engagement"].runtime
    async with rt.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(rt.tables.outbox)) or 0)


async def test_a_roster_upload_loads_good_rows_names_bad_ones_and_resyncs_quietly(
        system: System) -> None:
    data = gen.build(students=30)
    upload = {"params": {"district_id": "d001"}, "content": data.zip(),
              "headers": {"Content-Type": "application/zip"}}
    response = await system.http.post("/api/v1/rosters/import", **upload)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["loaded"]["families_created"] == len(data.guardians)
    assert report["loaded"]["students_created"] == len(data.students)
    assert {(e["file"], e["row"], e["field"]) for e in report["errors"]} == set(data.broken)
    assert "sis-" not in str(report["loaded"])

    families = (await system.http.get("/api/v1/families",
                                      params={"district_id": "d001", "limit": 500})).json()
    assert len(families) == len(data.guardians)
    linked: dict[str, list[dict[str, Any]]] = {}
    for family in families:
        linked[family["id"]] = (await system.http.get(
            f"/api/v1/families/{family['id']}/students", params={"district_id": "d001"})).json()
    refs = [s["student_ref"] for found in linked.values() for s in found]
    # Each student is linked to its first guardian's family (a second guardian is a family too).
    assert len(refs) == len(set(refs)) == len(data.students)
    assert all(ref.startswith("stu-") and "sis" not in ref for ref in refs)
    family = next(f for f in families if linked[f["id"]])
    students = linked[family["id"]]
    # The rest of the system knows the family (FamilyRegistered went out): a referral opens.
    referral = await system.open_referral(family, student_ref=students[0]["student_ref"])
    assert referral["family_id"] == family["id"]

    before = await _outbox_rows(system)
    again = await system.http.post("/api/v1/rosters/import", **upload)
    assert again.status_code == 200, again.text
    loaded = again.json()["loaded"]
    assert loaded["families_unchanged"] == len(data.guardians) and loaded["events"] == 0
    assert loaded["families_created"] == loaded["families_updated"] == 0
    assert await _outbox_rows(system) == before


async def test_only_the_districts_own_admin_may_upload_a_roster(system: System) -> None:
    data = gen.build(students=3, broken=False)
    upload = {"params": {"district_id": "d001"}, "content": data.zip()}
    for role, district, schools in [("coordinator", "d001", ("lincoln-es",)),
                                    ("district_admin", "d002", ())]:
        headers = {"Authorization": "Bearer " + token(system.settings, role, district, schools),
                   "Content-Type": "application/zip"}
        refused = await system.http.post("/api/v1/rosters/import", headers=headers, **upload)
        assert refused.status_code == 403, (role, district, refused.text)
    broken = await system.http.post("/api/v1/rosters/import", params={"district_id": "d001"},
                                    content=b"PK\x03\x04 not a zip",
                                    headers={"Content-Type": "application/zip"})
    assert broken.status_code == 422 and broken.json()["failed_files"] == ["(upload)"]


async def test_families_that_left_the_roster_get_no_announcement_or_invitation(
        system: System) -> None:
    data = gen.build(students=12, broken=False)
    headers = {"Content-Type": "application/zip"}
    first = await system.http.post("/api/v1/rosters/import", params={"district_id": "d001"},
                                   content=data.zip(), headers=headers)
    assert first.status_code == 200, first.text
    families = (await system.http.get("/api/v1/families", params={
        "district_id": "d001", "school_id": "lincoln-es", "limit": 500})).json()
    # The bulk file of the next night leaves out one Lincoln guardian: that family retires.
    gone = next(g for g in sorted(data.guardians) if any(
        r.get("sourcedId") == g and r.get("primaryOrgSourcedId") == "org-lincoln"
        for r in data.tables["users.csv"]))
    data.tables["users.csv"] = [r for r in data.tables["users.csv"]
                                if r.get("sourcedId") != gone]
    second = await system.http.post("/api/v1/rosters/import", params={"district_id": "d001"},
                                    content=data.zip(), headers=headers)
    assert second.json()["loaded"]["families_retired"] == 1
    now = (await system.http.get("/api/v1/families", params={
        "district_id": "d001", "school_id": "lincoln-es", "limit": 500})).json()
    assert len([f for f in now if f["retired_at"] is not None]) == 1
    active = len(families) - 1

    made = (await system.http.post("/api/v1/announcements", json={
        "district_id": "d001", "school_id": "lincoln-es", "title": "Snow day",
        "body": "School is closed tomorrow."})).json()

    async def fanned_out() -> dict[str, Any] | None:
        got = (await system.http.get(f"/api/v1/announcements/{made['id']}",
                                     params={"district_id": "d001"})).json()
        return got if got["status"] != "fanning_out" else None

    done = await system.eventually(fanned_out, 30, "the announcement fanned out")
    assert done["families_targeted"] + done["families_unreachable"] == active

    event = (await system.http.post("/api/v1/family-events", json={
        "district_id": "d001", "school_id": "lincoln-es", "title": "Math night",
        "starts_at": "2030-01-10T18:00:00-08:00", "place": "Library"})).json()
    invited = (await system.http.post(f"/api/v1/family-events/{event['id']}/invitations",
                                      json={"district_id": "d001"})).json()
    assert invited["invited"] + invited["unreachable"] == active


async def test_a_roster_never_writes_an_erased_familys_details_back(system: System) -> None:
    data = gen.build(students=6, broken=False)
    headers = {"Content-Type": "application/zip"}
    params = {"district_id": "d001"}
    first = await system.http.post("/api/v1/rosters/import", params=params,
                                   content=data.zip(), headers=headers)
    assert first.status_code == 200, first.text
    families = (await system.http.get("/api/v1/families",
                                      params={**params, "limit": 500})).json()
    erased = families[0]
    gone = await system.http.delete(f"/api/v1/families/{erased['id']}", params=params)
    assert gone.status_code == 200, gone.text
    # The next night's file changes every guardian's email: the others are updated, the erased
    # family stays blank.
    for row in data.tables["users.csv"]:
        if row.get("email") and row["sourcedId"] in data.guardians:
            row["email"] = "new." + row["email"]
    again = await system.http.post("/api/v1/rosters/import", params=params,
                                   content=data.zip(), headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["loaded"]["families_erased"] == 1, again.json()["loaded"]
    after = (await system.http.get(f"/api/v1/families/{erased['id']}", params=params)).json()
    assert (after["name"], after["phone"], after["email"]) == ("", None, None), after
    assert after["erased_at"] is not None
