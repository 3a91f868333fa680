"""HSDS import and export against Open Referral's own examples and compiled schema (copies in
tests/data/openreferral, see its README): every JSON shape the specification shows imports, a
file of another kind says what it is, and every exported service holds to the schema (types,
formats, required and non-null fields), ids UUIDs, numbers numbers."""

import csv
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from support.generators import gen

from services.partners import hsds

DATA = Path(__file__).parents[1] / "data"
EXAMPLES = DATA / "openreferral"
SCHEMA = jsonschema_rs.validator_for(json.loads((EXAMPLES / "schema" / "service.json")
                                                .read_text()), validate_formats=True)
SERVICE_ID = "ac148810-d857-441c-9679-408f346de14b"
ORG_ID = "d9d5e0f5-d3ce-4f73-9a2f-4dd0ecc6c610"


def _read(name: str) -> hsds.Plan:
    return hsds.read_json((EXAMPLES / name).read_bytes(), name)


def _csv_tables() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (EXAMPLES / "csv").glob("*.csv")}


@pytest.mark.parametrize("name", ["organization_full.json", "service_full.json",
                                  "service_list.json", "service_at_location_full.json",
                                  "service_at_location_list.json", "tabular.json"])
def test_every_shape_of_services_the_specification_shows_imports(name: str) -> None:
    plan = _read(name)
    assert plan.errors == [], [str(e) for e in plan.errors]
    assert [s.hsds_id for s in plan.services] == [SERVICE_ID]
    assert [o.hsds_id for o in plan.organizations] == [ORG_ID]
    [service] = plan.services
    assert service.organization_hsds_id == ORG_ID
    assert service.name == "Community Counselling"
    assert (service.min_age, service.max_age) == (12, 100)
    if "list" not in name:  # the list examples carry the service without its children
        assert service.languages == ["ur"]


def test_an_organization_brings_its_nested_services_and_a_list_of_them_loads() -> None:
    plan = _read("organization_full.json")
    [service] = plan.services
    assert service.path == "services[0]." and service.row == 1
    listed = _read("organization_list.json")
    assert [o.name for o in listed.organizations] == ["Example Organization Inc."]
    assert listed.services == [] and listed.errors == []


def test_a_page_that_is_not_the_last_says_the_others_are_missing() -> None:
    plan = _read("service_list.json")
    [warning] = [w for w in plan.warnings if w.field == "contents"]
    assert "page 1 of 10" in warning.message and "every page" in warning.message


def test_a_service_at_location_keeps_its_own_id_and_its_location() -> None:
    for name in ("service_at_location_full.json", "service_full.json", "organization_full.json"):
        [service] = _read(name).services
        [at] = service.detail["service_at_locations"]
        assert at["id"] == "e94c9f38-1e8f-4564-91d4-d53501ab1765", name
        assert at["location"]["name"] == "MyCity Civic Center"
        assert "MyCity Civic Center" in service.areas


@pytest.mark.parametrize(("name", "kind"), [
    ("base.json", "base document"), ("location.json", "an HSDS location"),
    ("taxonomy.json", "an HSDS taxonomy,"), ("taxonomy_list.json", "a list of HSDS taxonomies"),
    ("taxonomy_term.json", "an HSDS taxonomy term"),
    ("taxonomy_term_list.json", "a list of HSDS taxonomy terms")])
def test_a_file_of_another_kind_of_object_says_what_it_is(name: str, kind: str) -> None:
    plan = _read(name)
    assert plan.services == [] and plan.failed_files == [name]
    [error] = plan.errors
    assert kind in error.message and "not services" in error.message
    assert "Ensemble imports HSDS services" in error.message


def test_a_list_mixing_services_and_other_objects_loads_the_services() -> None:
    service = json.loads((EXAMPLES / "service_full.json").read_text())
    term = json.loads((EXAMPLES / "taxonomy_term.json").read_text())
    plan = hsds.read_json(json.dumps([service, term]).encode(), "mixed.json")
    assert [s.hsds_id for s in plan.services] == [SERVICE_ID]
    [error] = plan.errors
    assert (error.file, error.row) == ("mixed.json", 2)
    assert "taxonomy term, not a service" in error.message


def test_the_csv_tables_load_with_numbers_as_numbers() -> None:
    plan = hsds.read_csv_tables(_csv_tables())
    [service] = plan.services
    assert service.hsds_id == SERVICE_ID and (service.min_age, service.max_age) == (12, 100)
    # The example's capacity row names a service that is not in services.csv: said so.
    assert [(e.file, e.row, e.field) for e in plan.errors] == [
        ("service_capacity.csv", 2, "service_id")]
    [schedule] = service.detail["schedules"]
    assert (schedule["timezone"], schedule["count"], schedule["interval"]) == (3, 3, 1)
    [cost] = service.detail["cost_options"]
    assert cost["amount"] == 35
    [at] = service.detail["service_at_locations"]
    assert (at["location"]["latitude"], at["location"]["longitude"]) == (100, 101)
    [phone] = service.detail["phones"]
    assert phone["extension"] == 100


def test_a_value_that_should_be_a_number_is_left_out_with_a_warning() -> None:
    tables = _csv_tables()
    tables["locations.csv"] = tables["locations.csv"].replace(b",100,101,", b",north,101,")
    plan = hsds.read_csv_tables(tables)
    [at] = plan.services[0].detail["service_at_locations"]
    assert "latitude" not in at["location"] and at["location"]["longitude"] == 101
    assert ("locations.csv", 2, "latitude") in {(w.file, w.row, w.field) for w in plan.warnings}


def _exported(plan: hsds.Plan, schools: list[str] | None = None) -> list[hsds.ExportService]:
    """The plan's services as the directory gives them back (directory.export_services)."""
    organizations = {o.hsds_id: o for o in plan.organizations}
    out = []
    for s in plan.services:
        org = organizations[s.organization_hsds_id]
        out.append(hsds.ExportService(
            id=s.hsds_id, organization={"id": org.hsds_id, "name": org.name},
            name=s.name, description=s.description, status=s.status, need=s.need,
            min_age=s.min_age, max_age=s.max_age, languages=s.languages,
            schools=schools or [], detail=s.detail, slots=4, open=3,
            as_of="2026-12-03T10:00:00.000+00:00"))
    return out


def _schema_errors(item: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}"
            for e in SCHEMA.iter_errors(item)]


def _generated() -> Any:
    return gen.build(organizations=40)


def test_every_exported_service_holds_to_the_schema() -> None:
    sources = [_read(n) for n in ("organization_full.json", "service_at_location_list.json")]
    sources += [hsds.read_csv_tables(_csv_tables()), hsds.read_zip(_generated().zip())]
    checked = 0
    for plan in sources:
        for item in hsds.to_json(_exported(plan, ["lincoln-es"]))["contents"]:
            assert _schema_errors(item) == [], item["id"]
            assert "null" not in json.dumps(item)
            checked += 1
    assert checked > 40


def test_ids_are_uuids_and_the_same_on_every_export() -> None:
    plan = hsds.read_zip(_generated().zip())  # its ids are "svc-0001-0", "org-0001"...
    first = hsds.to_json(_exported(plan))
    assert first == hsds.to_json(_exported(plan))
    ids = [v for item in first["contents"] for v in _ids(item)]
    assert ids and all(str(uuid.UUID(v)) == v for v in ids)
    by_source = {hsds.export_id(s.hsds_id): s.hsds_id for s in plan.services}
    assert {item["id"] for item in first["contents"]} == set(by_source)
    # The example's own UUIDs are kept as they are, the service-at-location's too.
    [item] = hsds.to_json(_exported(_read("service_full.json")))["contents"]
    assert item["id"] == SERVICE_ID and item["organization"]["id"] == ORG_ID
    assert [sal["id"] for sal in item["service_at_locations"]] == [
        "e94c9f38-1e8f-4564-91d4-d53501ab1765"]


def _ids(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if (k == "id" or k.endswith("_id"))
                and isinstance(v, str)] + [i for v in value.values() for i in _ids(v)]
    if isinstance(value, list):
        return [i for v in value for i in _ids(v)]
    return []


def test_the_csv_export_writes_numbers_and_reads_back_the_same() -> None:
    plan = hsds.read_csv_tables(_csv_tables())
    content = hsds.to_csv_zip(_exported(plan))
    archive = zipfile.ZipFile(io.BytesIO(content))
    services = list(csv.DictReader(io.StringIO(archive.read("services.csv").decode())))
    assert (services[0]["minimum_age"], services[0]["maximum_age"]) == ("12", "100")
    capacity = list(csv.DictReader(io.StringIO(archive.read("service_capacity.csv").decode())))
    assert {(c["available"], c["maximum"]) for c in capacity} == {("3", "4")}
    sal = list(csv.DictReader(io.StringIO(archive.read("service_at_location.csv").decode())))
    assert [r["id"] for r in sal] == ["e94c9f38-1e8f-4564-91d4-d53501ab1765"]
    back = hsds.read_zip(content)
    assert back.errors == []
    [again] = hsds.to_json(_exported(back))["contents"]
    [first] = hsds.to_json(_exported(plan))["contents"]
    assert again["minimum_age"] == 12 and again["schedules"] == first["schedules"]
    assert _schema_errors(again) == []
