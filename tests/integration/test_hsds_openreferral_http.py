"""Open Referral's own examples through the HTTP import and export: an organization with its
services nested loads, a service placed in no school is reported with how to place it, and the
exports (JSON and CSV) hold to the compiled schema, keeping the example's own ids."""

import csv
import io
import json
import zipfile
from pathlib import Path

import jsonschema_rs
from conftest import System

from services.partners import hsds

EXAMPLES = Path(__file__).parents[1] / "data" / "openreferral"
SCHEMA = jsonschema_rs.validator_for(json.loads((EXAMPLES / "schema" / "service.json")
                                                .read_text()), validate_formats=True)
SERVICE_ID = "ac148810-d857-441c-9679-408f346de14b"


async def test_the_specifications_organization_loads_is_reported_unplaced_and_exports(
        system: System) -> None:
    response = await system.http.post(
        "/api/v1/partners/import/hsds", params={"district_id": "d001", "capacity": 2},
        content=(EXAMPLES / "organization_full.json").read_bytes(),
        headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["loaded"]["organizations_created"] == 1
    assert report["loaded"]["services_created"] == 1
    assert report["loaded"]["services_without_school"] == 1
    [unplaced] = [w for w in report["warnings"] if w["field"] == "services[0].service_areas"]
    assert unplaced["row"] == 1 and SERVICE_ID in unplaced["message"]
    assert "MyCity Civic Center" in unplaced["message"]  # what it names, and how to fix it
    assert "named like a school" in unplaced["message"] and "/capacity" in unplaced["message"]

    # The fix the report offers: a service area named like a school, imported again.
    service = json.loads((EXAMPLES / "service_full.json").read_text())
    service["service_areas"].append({"id": "0e0a4f0e-1f5e-4d8e-9a55-6d2f8f7f6c11",
                                     "name": "Lincoln Elementary"})
    again = await system.http.post(
        "/api/v1/partners/import/hsds", params={"district_id": "d001", "capacity": 2},
        content=json.dumps(service).encode(), headers={"Content-Type": "application/json"})
    assert again.status_code == 200, again.text
    loaded = again.json()["loaded"]
    assert (loaded["services_updated"], loaded["services_without_school"]) == (1, 0)
    listed = (await system.http.get("/api/v1/partners", params={"district_id": "d001"})).json()
    [placed] = [s for p in listed for s in p["services"]]
    assert placed["schools"] == ["lincoln-es"]

    page = (await system.http.get("/api/v1/partners/export/hsds",
                                  params={"district_id": "d001"})).json()
    [item] = page["contents"]
    assert [f"{'/'.join(map(str, e.instance_path))}: {e.message}"
            for e in SCHEMA.iter_errors(item)] == []
    assert item["id"] == SERVICE_ID
    assert [s["id"] for s in item["service_at_locations"]] == [
        "e94c9f38-1e8f-4564-91d4-d53501ab1765"]
    assert item["minimum_age"] == 12 and "null" not in json.dumps(item)

    exported = await system.http.get("/api/v1/partners/export/hsds",
                                     params={"district_id": "d001", "format": "csv-zip"})
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    [row] = csv.DictReader(io.StringIO(archive.read("services.csv").decode()))
    assert (row["id"], row["minimum_age"]) == (SERVICE_ID, "12")
    back = hsds.read_zip(exported.content)
    assert back.errors == [] and [s.hsds_id for s in back.services] == [SERVICE_ID]
