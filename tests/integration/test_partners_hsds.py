"""HSDS 3.0 import and export (with 3.1's service_capacity and units): the pure importer against a
generated county directory with known broken rows, and the HTTP endpoints end to end (zip and
JSON, round trip, a failed file, capacity in and out)."""

import io
import json
import zipfile
from typing import Any

from conftest import System, token
from support.generators import gen

from services.partners import hsds


def test_importer_loads_good_rows_and_names_every_bad_one() -> None:
    data = gen.build(organizations=300)
    plan = hsds.read_zip(data.zip())
    assert len(plan.organizations) == 300
    assert len(plan.services) == data.services
    assert not {s.hsds_id for s in plan.services} & data.bad_services
    found = {(e.file, e.row, e.field) for e in plan.errors}
    for broken in data.broken:
        assert broken in found, (broken, sorted(found)[:5])
    # The failed file: cost_options.csv lacks service_id; nothing of it loads.
    assert plan.failed_files == ["cost_options.csv"]
    assert any(e.file == "cost_options.csv" and "service_id" in e.message for e in plan.errors)
    assert all(not s.detail["cost_options"] for s in plan.services)
    # Needs come from the 211 codes and term names; languages and ages are kept.
    by_id = {s.hsds_id: s for s in plan.services}
    for service in plan.services:
        assert service.need != "other", service
    assert by_id["svc-0001-0"].languages == ["en", "vi"]
    assert by_id["svc-0003-0"].languages == ["en", "es"]  # its bad language row left out
    schedules = by_id["svc-0004-0"].detail["schedules"]
    assert [s["opens_at"] for s in schedules] == ["09:00"]  # its bad schedule row left out
    assert "Klingon" not in json.dumps(by_id["svc-0003-0"].detail)
    # Capacity (HSDS 3.1): the open slots of the services whose rows count people or places.
    assert {s.hsds_id: s.slots for s in plan.services if s.slots is not None} == data.slots
    assert by_id["svc-0002-0"].slots is None  # every one of its capacity rows was broken
    warned = {(w.file, w.row, w.field) for w in plan.warnings}
    assert set(data.capacity_warnings) <= warned
    kept = by_id["svc-0000-0"].detail["capacities"]  # the kilograms row is kept for export
    assert {c["unit"]["name"]: c["available"] for c in kept} == {
        "Appointment slot": 9, "Kilogram": 500}
    assert by_id["svc-0000-0"].detail["slots_from"] == "cap-svc-0000-0-new"  # the later figure


def test_a_failed_organizations_file_takes_its_services_with_it() -> None:
    data = gen.build(organizations=5)
    files = dict(data.files)
    files["organizations.csv"] = b"\xff\xfe not utf-8"
    plan = hsds.read_csv_tables(files)
    assert plan.organizations == [] and plan.services == []
    assert "organizations.csv" in plan.failed_files
    assert any(e.file == "services.csv" and e.field == "organization_id"
               and "file failed" in e.message for e in plan.errors)


def test_json_errors_name_the_service_and_the_path() -> None:
    services = [
        {"id": "s1", "name": "Dental Day", "status": "active",
         "organization": {"id": "o1", "name": "Clinic"},
         "languages": [{"id": "l1", "code": "es"}, {"id": "l2", "code": "??"}]},
        {"id": "s2", "name": "No status org", "status": "maybe",
         "organization": {"id": "o1", "name": "Clinic"}},
    ]
    plan = hsds.read_json(json.dumps({"contents": services}).encode())
    assert [s.hsds_id for s in plan.services] == ["s1"]
    assert plan.services[0].languages == ["es"]
    problems = {(e.file, e.row, e.field) for e in plan.errors}
    assert ("services.json", 1, "languages[1].code") in problems
    assert ("services.json", 2, "status") in problems


def test_json_capacities_name_their_path_and_the_rules_hold() -> None:
    unit = {"id": "u-seat", "name": "Seat"}
    org = {"id": "o1", "name": "Clinic"}
    services = [
        {"id": "s1", "name": "Tutoring", "status": "active", "organization": org,
         "capacities": [
             {"id": "c1", "unit": unit, "available": 7.5, "maximum": 20,
              "updated": "2025-03-01T10:00:00.5+01:00"},
             {"id": "c2", "unit": {"id": "u-hour", "name": "Hours"}, "available": 40,
              "updated": "2025-03-02T10:00:00Z"}]},
        {"id": "s2", "name": "Mentoring", "status": "active", "organization": org,
         "capacities": [{"id": "c3", "unit": unit, "available": "many", "updated": "2025"},
                        {"id": "c4", "available": 3, "updated": "2025-03-01"},
                        {"id": "c5", "unit": {"id": "u-x", "name": "Bed"}, "available": 12,
                         "maximum": 10, "updated": "not a date"}]},
    ]
    plan = hsds.read_json(json.dumps(services).encode())
    by_id = {s.hsds_id: s for s in plan.services}
    assert by_id["s1"].slots == 7  # half a seat is no seat; hours set no slots
    assert by_id["s2"].slots is None
    problems = {(e.file, e.row, e.field) for e in plan.errors}
    assert {("services.json", 2, "capacities[0].available"),
            ("services.json", 2, "capacities[1].unit_id"),
            ("services.json", 2, "capacities[2].updated")} <= problems
    assert ("services.json", 1, "capacities[1].unit_id") in {
        (w.file, w.row, w.field) for w in plan.warnings}


def test_a_failed_units_file_takes_the_capacity_rows_with_it() -> None:
    data = gen.build(organizations=9)
    files = dict(data.files)
    files["units.csv"] = b"id,scheme\nunit-slot,SI\n"  # the header lacks name
    plan = hsds.read_csv_tables(files)
    assert "units.csv" in plan.failed_files
    assert len(plan.services) == data.services  # the services load all the same
    assert all(s.slots is None and s.detail["capacities"] == [] for s in plan.services)
    assert any(e.file == "service_capacity.csv" and e.field == "unit_id"
               and "file failed" in e.message for e in plan.errors)


def test_a_zip_of_one_json_file_reads_as_json_and_mixed_zips_are_refused() -> None:
    page = json.dumps({"contents": [{"id": "s1", "name": "Dental Day", "status": "active",
                                     "organization": {"id": "o1", "name": "Clinic"}}]})
    plan = hsds.read_zip(_zipped({"directory/page.json": page.encode()}))
    assert [s.hsds_id for s in plan.services] == ["s1"] and plan.errors == []
    mixed = hsds.read_zip(_zipped({"page.json": page.encode(), "services.csv": b"id\n"}))
    assert mixed.failed_files == ["(upload)"] and mixed.services == []


def _zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _zip_names(content: bytes) -> set[str]:
    return set(zipfile.ZipFile(io.BytesIO(content)).namelist())


async def _services_by_hsds_id(system: System, data: Any,
                               district: str = "d001") -> dict[str, dict[str, Any]]:
    """The directory as the API lists it, by the source's service id (names are unique)."""
    hsds_id_of = {s.name: s.hsds_id for s in hsds.read_zip(data.zip()).services}
    listed = (await system.http.get("/api/v1/partners", params={"district_id": district})).json()
    return {hsds_id_of[s["name"]]: s for p in listed for s in p["services"]}


async def test_import_export_round_trip_over_http(system: System) -> None:
    data = gen.build(organizations=300)
    response = await system.http.post(
        "/api/v1/partners/import/hsds", params={"district_id": "d001", "capacity": 3},
        content=data.zip(), headers={"Content-Type": "application/zip"})
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    assert report["loaded"]["organizations_created"] == 300
    assert report["loaded"]["services_created"] == data.services
    assert report["failed_files"] == ["cost_options.csv"]
    assert {(e["file"], e["row"], e["field"]) for e in report["errors"]} >= set(data.broken)
    assert {(w["file"], w["row"], w["field"])
            for w in report["warnings"]} >= set(data.capacity_warnings)
    assert report["loaded"]["services_without_school"] > 0  # "Elsewhere County"

    dental = (await system.http.get("/api/v1/partners",
                                    params={"district_id": "d001", "need": "dental"})).json()
    assert dental and all(s["need"] == "dental" for p in dental for s in p["services"])

    # Slots: HSDS available split over the schools served; the capacity parameter elsewhere.
    services = await _services_by_hsds_id(system, data)
    split_unevenly = 0
    for sid, service in services.items():
        per_school = [c["capacity"] for c in service["capacity_by_school"]]
        if not service["schools"]:
            assert per_school == []
        elif sid in data.slots:
            assert sum(per_school) == data.slots[sid], sid
            assert max(per_school) - min(per_school) <= 1, sid
            split_unevenly += max(per_school) != min(per_school)
        else:
            assert per_school == [3] * len(service["schools"]), sid
    assert split_unevenly  # the remainder went somewhere: an odd number over two schools

    # The same file again changes nothing but updates in place.
    again = await system.http.post(
        "/api/v1/partners/import/hsds", params={"district_id": "d001"},
        content=data.zip(), headers={"Content-Type": "application/zip"})
    assert again.json()["loaded"]["services_created"] == 0
    assert again.json()["loaded"]["services_updated"] == data.services
    assert await _services_by_hsds_id(system, data) == services

    # A referral holds one slot: the export's available counts it out, its maximum does not.
    family = await system.register_family()
    referral = await system.open_referral(family, need="dental")
    detail = await system.wait_status(referral["id"], "matched")
    [matched] = [e["data"] for e in detail["timeline"] if e["event"] == "PartnerMatched"]
    services = await _services_by_hsds_id(system, data)
    [held] = [sid for sid, s in services.items() if s["id"] == matched["service_id"]]
    assert services[held]["reserved"] == 1

    exported = await system.http.get("/api/v1/partners/export/hsds",
                                     params={"district_id": "d001", "format": "csv-zip"})
    assert exported.status_code == 200
    assert {"organizations.csv", "services.csv", "service_areas.csv", "languages.csv",
            "taxonomy_terms.csv", "attributes.csv", "service_capacity.csv",
            "units.csv"} <= _zip_names(exported.content)
    back = hsds.read_zip(exported.content)
    assert back.errors == []
    assert len(back.services) == data.services
    # HSDS ids are UUIDs: the county's "svc-0001-0" is written as one derived from it.
    assert {s.hsds_id: s.need for s in back.services} == {
        hsds.export_id(s.hsds_id): s.need for s in hsds.read_zip(data.zip()).services}
    assert {s.hsds_id: s.slots for s in back.services} == {
        hsds.export_id(sid): s["capacity"] - s["reserved"] for sid, s in services.items()}
    kilograms = [c for s in back.services for c in s.detail["capacities"]
                 if c["unit"]["name"] == "Kilogram"]
    assert kilograms and all(c["available"] == 500 for c in kilograms)  # as imported

    page = (await system.http.get("/api/v1/partners/export/hsds",
                                  params={"district_id": "d001"})).json()
    assert page["total_items"] == data.services
    first = page["contents"][0]
    assert {"organization", "service_areas", "languages", "schedules",
            "attributes", "capacities"} <= set(first)
    [slot_row] = [c for s in page["contents"] if s["id"] == hsds.export_id(held)
                  for c in s["capacities"]
                  if c["unit"]["name"] != "Kilogram"]
    assert slot_row["maximum"] == services[held]["capacity"]
    assert slot_row["available"] == services[held]["capacity"] - 1
    # That JSON, zipped (a directory's JSON is over the request limit as it is), imported into
    # another district: the same directory there.
    other = {"Authorization": "Bearer " + token(system.settings, "district_admin", "d002")}
    moved = await system.http.post(
        "/api/v1/partners/import/hsds", params={"district_id": "d002"},
        content=_zipped({"hsds.json": json.dumps(page).encode()}),
        headers={**other, "Content-Type": "application/zip"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["loaded"]["services_created"] == data.services
    assert moved.json()["error_count"] == 0


async def test_a_wholly_bad_upload_is_refused_and_leaves_nothing(system: System) -> None:
    response = await system.http.post(
        "/api/v1/partners/import/hsds", params={"district_id": "d001"},
        content=b"PK\x03\x04 broken zip", headers={"Content-Type": "application/zip"})
    assert response.status_code == 422
    assert response.json()["failed_files"] == ["(upload)"]
    listed = await system.http.get("/api/v1/partners", params={"district_id": "d001"})
    assert listed.json() == []
