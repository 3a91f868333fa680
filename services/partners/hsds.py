"""Open Referral HSDS 3.0 (and 3.1's capacity) in and out, pure (no database): usable from HTTP
and a CLI alike.

Import reads either the tabular form (a zip of the CSV tables, HSDS file names) or the JSON form
(compiled ``service`` objects, as a list or an HSDS API page ``{"contents": [...]}``), as it is
or zipped (a county's JSON is larger than a request may be; zipped, a twentieth). Both are
flattened into the same tables and checked by the same rules, so an error always names the file,
the row and the field.

What loads and what does not:
- A bad row (a required value missing, a wrong type or value, a duplicate id, a link to a row that
  is not loaded) is reported and left out; the other rows load. A child row (a language, a
  schedule...) that is bad is left out and its service still loads.
- A *failed file* is one that cannot be taken as a whole: it is not UTF-8 or not CSV/JSON, or
  its header lacks a column the table needs. None of its rows load, and rows of other files that
  point into it (services of a failed organizations.csv) are reported as not loaded. Every file is
  checked before anything is written, and the good rows are then written in one transaction, so
  nothing of a failed file (or of a failed import) is ever left half-loaded.

``row`` is the CSV row number counting the header as row 1 (what a spreadsheet shows); for
JSON it is the 1-based position of the service in the list, and ``field`` is its path inside it.

Capacity (HSDS 3.1 ``service_capacity`` with its ``units``; ``capacities`` in JSON). HSDS counts
a service's capacity once, for everyone it serves, in any unit; Ensemble counts referral slots
per service *and school*: ``capacity`` (slots) of which ``reserved`` are held by referrals. So:
- Only a unit that counts people or places (bed, seat, slot, place, appointment, child, family...,
  see ``SLOT_UNIT``) sets slots. Any other (kilograms, hours) is kept and exported as it came, with
  a warning that it sets no slots. Of several countable rows, the latest ``updated`` is used.
- ``available`` is read as the slots open now: it is split evenly over the schools the service
  serves (the first schools get the remainder), and each school's capacity becomes what it has
  reserved plus its share, so its open slots equal the share and the district's total open slots
  equal ``available``. ``maximum``, when given, caps ``available`` (a warning says so when it was
  above). Fractions of a unit are rounded down: half a slot is no slot.
- A service with such a row takes its slots from it; the import's ``capacity`` parameter applies
  to the others only.
- Export writes each service's capacity as Ensemble holds it now: ``available`` the open slots
  over all its schools, ``maximum`` the slots, ``updated`` the time of the export; in the unit it
  was imported with (or Ensemble's own "referral slot" unit).
"""

import csv
import io
import json
import math
import re
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.partners.taxonomy_map import OWN_TAXONOMY, Term, need_for

SERVICE_STATUSES = ("active", "inactive", "defunct", "temporarily closed")
MAX_UNZIPPED_BYTES = 200_000_000  # a zip that unpacks to more is refused before it is read

# HSDS 3.0 tabular columns of the tables Ensemble keeps (schema/compiled/tabular.json).
COLUMNS: dict[str, list[str]] = {
    "organizations.csv": ["id", "name", "alternate_name", "description", "email", "website",
                          "tax_status", "tax_id", "year_incorporated", "legal_status", "logo",
                          "uri", "parent_organization_id"],
    "services.csv": ["id", "organization_id", "program_id", "name", "alternate_name",
                     "description", "url", "email", "status", "interpretation_services",
                     "application_process", "fees_description", "wait_time", "fees",
                     "accreditations", "eligibility_description", "minimum_age", "maximum_age",
                     "assured_date", "assurer_email", "licenses", "alert", "last_modified"],
    "locations.csv": ["id", "location_type", "url", "organization_id", "name", "alternate_name",
                      "description", "transportation", "latitude", "longitude",
                      "external_identifier", "external_identifier_type"],
    "addresses.csv": ["id", "location_id", "attention", "address_1", "address_2", "city",
                      "region", "state_province", "postal_code", "country", "address_type"],
    "service_at_location.csv": ["id", "service_id", "location_id", "description"],
    "service_areas.csv": ["id", "service_id", "name", "description", "extent", "extent_type",
                          "uri"],
    "languages.csv": ["id", "service_id", "location_id", "phone_id", "name", "code", "note"],
    "schedules.csv": ["id", "service_id", "location_id", "service_at_location_id", "valid_from",
                      "valid_to", "dtstart", "timezone", "until", "count", "wkst", "freq",
                      "interval", "byday", "byweekno", "bymonthday", "byyearday", "description",
                      "opens_at", "closes_at", "schedule_link", "attending_type", "notes"],
    "cost_options.csv": ["id", "service_id", "valid_from", "valid_to", "option", "currency",
                         "amount", "amount_description"],
    "contacts.csv": ["id", "organization_id", "service_id", "service_at_location_id",
                     "location_id", "name", "title", "department", "email"],
    "phones.csv": ["id", "location_id", "service_id", "organization_id", "contact_id",
                   "service_at_location_id", "number", "extension", "type", "description"],
    "taxonomy_terms.csv": ["id", "code", "name", "description", "parent_id", "taxonomy",
                           "language", "taxonomy_id", "term_uri"],
    "attributes.csv": ["id", "link_id", "taxonomy_term_id", "link_type", "link_entity", "value"],
    # HSDS 3.1
    "service_capacity.csv": ["id", "service_id", "unit_id", "available", "maximum",
                             "description", "updated"],
    "units.csv": ["id", "name", "scheme", "identifier", "uri"],
}
# Columns a file must have, or it fails as a whole.
HEADER_REQUIRED: dict[str, list[str]] = {
    "organizations.csv": ["id", "name"],
    "services.csv": ["id", "organization_id", "name"],
    "locations.csv": ["id"],
    "addresses.csv": ["id", "location_id"],
    "service_at_location.csv": ["id", "service_id", "location_id"],
    "service_areas.csv": ["id", "service_id"],
    "languages.csv": ["id"],
    "schedules.csv": ["id"],
    "cost_options.csv": ["id", "service_id"],
    "contacts.csv": ["id"],
    "phones.csv": ["id", "number"],
    "taxonomy_terms.csv": ["id", "name"],
    "attributes.csv": ["id", "link_id", "taxonomy_term_id"],
    "service_capacity.csv": ["id", "service_id", "unit_id", "available"],
    "units.csv": ["id", "name"],
}
# Values a row must have, or it is left out.
ROW_REQUIRED: dict[str, list[str]] = {
    "organizations.csv": ["id", "name"],
    "services.csv": ["id", "organization_id", "name"],
    "service_areas.csv": ["id", "service_id"],
    "cost_options.csv": ["id", "service_id"],
    "phones.csv": ["id", "number"],
    "taxonomy_terms.csv": ["id", "name"],
    "attributes.csv": ["id", "link_id", "taxonomy_term_id"],
    "service_capacity.csv": ["id", "service_id", "unit_id", "available"],
    "units.csv": ["id", "name"],
}
ALIASES = {"service_at_locations.csv": "service_at_location.csv",
           "service_capacities.csv": "service_capacity.csv", "unit.csv": "units.csv"}
REQUIRED_FILES = ("organizations.csv", "services.csv")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")
TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?")
# Units that count people or places, so that one unit is one referral slot.
SLOT_UNIT = re.compile(
    r"\b(slots?|places?|seats?|beds?|spaces?|spots?|openings?|appointments?|referrals?|"
    r"clients?|persons?|people|individuals?|famil(y|ies)|households?|child(ren)?|kids?|youths?|"
    r"students?|participants?|patients?|cases?|enrol(l)?(ment|ments)?|visits?|sessions?)\b",
    re.IGNORECASE)
SLOT_UNIT_OF_ENSEMBLE = {"id": "ensemble-unit-referral-slot", "name": "Referral slot",
                         "scheme": "ensemble", "identifier": "referral-slot"}


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f" row {self.row}" if self.row else "")
        return f"{where}{f' field {self.field}' if self.field else ''}: {self.message}"


@dataclass
class OrganizationSpec:
    hsds_id: str
    name: str
    alternate_name: str | None = None
    description: str | None = None
    email: str | None = None
    website: str | None = None


@dataclass
class ServiceSpec:
    hsds_id: str
    organization_hsds_id: str
    name: str
    description: str | None
    status: str
    need: str
    need_rule: str
    min_age: int | None
    max_age: int | None
    languages: list[str]
    areas: list[str]  # service area and location names: matched to schools by the directory
    detail: dict[str, Any]  # HSDS-shaped, given back on export
    slots: int | None = None  # open slots over all its schools, from service_capacity


@dataclass
class Plan:
    organizations: list[OrganizationSpec] = field(default_factory=list)
    services: list[ServiceSpec] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    failed_files: list[str] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)

    def report(self, limit: int = 500) -> dict[str, Any]:
        return {
            "organizations": len(self.organizations),
            "services": len(self.services),
            "rows_read": self.rows_read,
            "failed_files": self.failed_files,
            "error_count": len(self.errors),
            "errors": [asdict(e) for e in self.errors[:limit]],
            "warning_count": len(self.warnings),
            "warnings": [asdict(w) for w in self.warnings[:limit]],
        }


Row = dict[str, Any]  # values by column, plus "_row" and "_path" (where it came from)


class FileFailed(Exception):
    pass


# --- reading -------------------------------------------------------------------------------


def read_zip(data: bytes) -> Plan:
    """A zip of HSDS CSV tables (folders inside the zip are ignored), or of one HSDS JSON file
    (a directory's JSON is large; zipped it fits in a request)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [info for info in archive.infolist() if not info.is_dir()]
        unpacked = sum(info.file_size for info in members)
        if unpacked > MAX_UNZIPPED_BYTES:
            raise ValueError(f"{unpacked} bytes unzipped, over {MAX_UNZIPPED_BYTES}")
        names = {info.filename.rsplit("/", 1)[-1].lower(): info for info in members}
        files = {name: archive.read(info) for name, info in names.items()
                 if name.endswith(".csv")}
        json_files = {name: archive.read(info) for name, info in names.items()
                      if name.endswith(".json") and name != "datapackage.json"}
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as exc:
        return _upload_failed(f"not a zip of HSDS files: {exc}")
    if json_files and files:
        return _upload_failed("a zip holds HSDS CSV tables or one JSON file, not both")
    if len(json_files) > 1:
        return _upload_failed(f"a zip holds one HSDS JSON file, not {len(json_files)}")
    if json_files:
        [(name, content)] = json_files.items()
        return read_json(content, name)
    return read_csv_tables(files)


def _upload_failed(message: str) -> Plan:
    plan = Plan(failed_files=["(upload)"])
    plan.errors.append(Problem("(upload)", None, None, message))
    return plan


def read_csv_tables(files: dict[str, bytes]) -> Plan:
    plan = Plan()
    tables: dict[str, list[Row]] = {}
    for raw_name, content in files.items():
        name = ALIASES.get(raw_name, raw_name)
        if name not in COLUMNS:
            plan.warnings.append(Problem(raw_name, None, None, "not an HSDS table Ensemble "
                                         "keeps; ignored"))
            continue
        try:
            tables[name] = _parse_csv(raw_name, name, content)
            plan.rows_read[raw_name] = len(tables[name])
        except FileFailed as exc:
            plan.failed_files.append(raw_name)
            plan.errors.append(Problem(raw_name, None, None, f"file not loaded: {exc}"))
    for required in REQUIRED_FILES:
        if required not in files and required not in plan.failed_files:
            plan.failed_files.append(required)
            plan.errors.append(Problem(required, None, None, "file not loaded: missing"))
    return _build(plan, tables, lambda table: table)


def _parse_csv(raw_name: str, name: str, content: bytes) -> list[Row]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFailed(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in HEADER_REQUIRED[name] if c not in header]
        if missing:
            raise FileFailed(f"header lacks column(s) {', '.join(missing)}")
        rows = []
        for number, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header):
                rows.append({"_row": number, "_path": "", "_bad": "more values than columns"})
                continue
            row: Row = {"_row": number, "_path": ""}
            for column, value in zip(header, values, strict=False):
                row[column] = value.strip() or None
            rows.append(row)
        return rows
    except csv.Error as exc:
        raise FileFailed(f"not CSV: {exc}") from exc


def read_json(data: bytes, file_name: str = "services.json") -> Plan:
    """Compiled HSDS services: a list, or an API page with ``contents``."""
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        plan = Plan(failed_files=[file_name])
        plan.errors.append(Problem(file_name, None, None, f"file not loaded: not JSON: {exc}"))
        return plan
    if isinstance(payload, dict):
        payload = payload.get("contents", payload.get("services"))
    if not isinstance(payload, list):
        plan = Plan(failed_files=[file_name])
        plan.errors.append(Problem(file_name, None, None, "file not loaded: expected a list of "
                                   "services or an object with 'contents'"))
        return plan
    tables: dict[str, list[Row]] = {name: [] for name in COLUMNS}
    plan = Plan(rows_read={file_name: len(payload)})
    for index, item in enumerate(payload, start=1):
        if not isinstance(item, dict):
            tables["services.csv"].append({"_row": index, "_path": "", "_bad": "not an object"})
            continue
        _flatten_service(tables, item, index)
    return _build(plan, tables, lambda table: file_name)


def _flatten_service(tables: dict[str, list[Row]], item: dict[str, Any], index: int) -> None:
    def add(table: str, obj: Any, path: str, **links: Any) -> Row | None:
        if not isinstance(obj, dict):
            tables[table].append({"_row": index, "_path": path, "_bad": "not an object"})
            return None
        row: Row = {"_row": index, "_path": path}
        for column in COLUMNS[table]:
            value = obj.get(column)
            row[column] = None if value in (None, "") else value
        for key, value in links.items():
            if row.get(key) is None:
                row[key] = value
        tables[table].append(row)
        return row

    org = item.get("organization")
    org_id = org.get("id") if isinstance(org, dict) else item.get("organization_id")
    if isinstance(org, dict):  # repeated for each of its services; kept once
        add("organizations.csv", org, "organization.")
    service = add("services.csv", item, "", organization_id=org_id)
    service_id = service.get("id") if service else None
    for key, table in [("service_areas", "service_areas.csv"), ("languages", "languages.csv"),
                       ("schedules", "schedules.csv"), ("cost_options", "cost_options.csv"),
                       ("contacts", "contacts.csv"), ("phones", "phones.csv")]:
        for i, child in enumerate(_list(item.get(key))):
            add(table, child, f"{key}[{i}].", service_id=service_id)
    for i, sal in enumerate(_list(item.get("service_at_locations"))):
        location = sal.get("location") if isinstance(sal, dict) else None
        location_id = location.get("id") if isinstance(location, dict) else None
        add("service_at_location.csv", sal, f"service_at_locations[{i}].", service_id=service_id,
            location_id=location_id)
        if isinstance(location, dict):
            add("locations.csv", location, f"service_at_locations[{i}].location.")
            for j, address in enumerate(_list(location.get("addresses"))):
                add("addresses.csv", address,
                    f"service_at_locations[{i}].location.addresses[{j}].", location_id=location_id)
    for i, capacity in enumerate(_list(item.get("capacities"))):
        unit = capacity.get("unit") if isinstance(capacity, dict) else None
        unit_id = unit.get("id") if isinstance(unit, dict) else None
        add("service_capacity.csv", capacity, f"capacities[{i}].", service_id=service_id,
            unit_id=unit_id)
        if isinstance(unit, dict):
            add("units.csv", unit, f"capacities[{i}].unit.")
    for i, attribute in enumerate(_list(item.get("attributes"))):
        term = attribute.get("taxonomy_term") if isinstance(attribute, dict) else None
        term_id = term.get("id") if isinstance(term, dict) else None
        add("attributes.csv", attribute, f"attributes[{i}].", link_id=service_id,
            link_entity="service", taxonomy_term_id=term_id)
        if isinstance(term, dict):
            add("taxonomy_terms.csv", term, f"attributes[{i}].taxonomy_term.")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --- checking and building -----------------------------------------------------------------


def _build(plan: Plan, tables: dict[str, list[Row]], file_of: Any) -> Plan:
    """Check every row, drop the bad ones with a Problem each, and assemble the specs."""

    def problem(table: str, row: Row, column: str | None, message: str) -> None:
        path = f"{row['_path']}{column}" if column else (row["_path"].rstrip(".") or None)
        plan.errors.append(Problem(file_of(table), row["_row"], path, message))

    def good_rows(table: str) -> list[Row]:
        kept: list[Row] = []
        seen: set[Any] = set()
        for row in tables.get(table, []):
            if "_bad" in row:
                problem(table, row, None, row["_bad"])
                continue
            failure = _check(table, row)
            if failure:
                problem(table, row, *failure)
                continue
            if row["id"] in seen:
                if row["_path"] == "":
                    problem(table, row, "id", f"duplicate id {row['id']}")
                continue  # JSON repeats shared rows (a location of two services): kept once
            seen.add(row["id"])
            kept.append(row)
        return kept

    organizations = {row["id"]: row for row in good_rows("organizations.csv")}
    services: dict[str, Row] = {}
    failed_orgs = "organizations.csv" in plan.failed_files
    for row in good_rows("services.csv"):
        if row["organization_id"] not in organizations:
            why = "its file failed" if failed_orgs else "no such organization loaded"
            problem("services.csv", row, "organization_id",
                    f"organization {row['organization_id']} not loaded ({why})")
            continue
        services[row["id"]] = row

    def children(table: str, link: str = "service_id") -> dict[str, list[Row]]:
        by_service: dict[str, list[Row]] = {}
        for row in good_rows(table):
            target = row.get(link)
            if target is None:
                continue  # about a location or organization only: not kept
            if target not in services:
                problem(table, row, link, f"service {target} not loaded")
                continue
            by_service.setdefault(target, []).append(_public(row))
        return by_service

    areas = children("service_areas.csv")
    languages = children("languages.csv")
    schedules = children("schedules.csv")
    costs = children("cost_options.csv")
    contacts = children("contacts.csv")
    phones = children("phones.csv")
    locations = {row["id"]: _public(row) for row in good_rows("locations.csv")}
    for row in good_rows("addresses.csv"):
        if row["location_id"] in locations:
            locations[row["location_id"]].setdefault("addresses", []).append(_public(row))
    at_locations: dict[str, list[dict[str, Any]]] = {}
    for row in good_rows("service_at_location.csv"):
        if row["service_id"] not in services:
            problem("service_at_location.csv", row, "service_id",
                    f"service {row['service_id']} not loaded")
        elif row["location_id"] not in locations:
            problem("service_at_location.csv", row, "location_id",
                    f"location {row['location_id']} not loaded")
        else:
            at_locations.setdefault(row["service_id"], []).append(locations[row["location_id"]])
    terms = {row["id"]: row for row in good_rows("taxonomy_terms.csv")}
    service_terms: dict[str, list[dict[str, Any]]] = {}
    for row in good_rows("attributes.csv"):
        if (row.get("link_entity") or "service") != "service":
            continue
        if row["link_id"] not in services:
            problem("attributes.csv", row, "link_id", f"service {row['link_id']} not loaded")
        elif row["taxonomy_term_id"] not in terms:
            problem("attributes.csv", row, "taxonomy_term_id",
                    f"taxonomy term {row['taxonomy_term_id']} not loaded")
        else:
            service_terms.setdefault(row["link_id"], []).append(
                _public(terms[row["taxonomy_term_id"]]))

    units = {row["id"]: _public(row) for row in good_rows("units.csv")}
    capacities: dict[str, list[Row]] = {}
    for row in good_rows("service_capacity.csv"):
        if row["service_id"] not in services:
            problem("service_capacity.csv", row, "service_id",
                    f"service {row['service_id']} not loaded")
        elif row["unit_id"] not in units:
            why = "its file failed" if "units.csv" in plan.failed_files else "no such unit loaded"
            problem("service_capacity.csv", row, "unit_id",
                    f"unit {row['unit_id']} not loaded ({why})")
        else:
            capacities.setdefault(row["service_id"], []).append(row)

    def slots_of(service_id: str) -> tuple[int | None, str | None, list[dict[str, Any]]]:
        """Open slots, the id of the capacity row they come from, and every capacity row in
        HSDS's compiled shape (with its unit)."""
        rows = capacities.get(service_id, [])
        shaped = [{**{k: v for k, v in _public(r).items() if k not in ("service_id", "unit_id")},
                   **{k: _plain(_number(r[k])) for k in ("available", "maximum")
                      if r.get(k) is not None},
                   "unit": units[r["unit_id"]]} for r in rows]
        countable = []
        for r, c in zip(rows, shaped, strict=True):
            unit = c["unit"]
            if SLOT_UNIT.search(f"{unit.get('name', '')} {unit.get('identifier') or ''}"):
                countable.append((r, c))
            else:
                plan.warnings.append(Problem(
                    file_of("service_capacity.csv"), r["_row"], f"{r['_path']}unit_id",
                    f"unit {unit.get('name')!r} does not count people or places; kept, sets "
                    "no slots"))
        if not countable:
            return None, None, shaped
        # The latest figure wins; a row without ``updated`` counts as the oldest.
        r, c = max(countable, key=lambda pair: _when(pair[0].get("updated")) or datetime.min)
        available = math.floor(_number(r["available"]) or 0)
        maximum = _number(r.get("maximum"))
        if maximum is not None and available > maximum:
            plan.warnings.append(Problem(
                file_of("service_capacity.csv"), r["_row"], f"{r['_path']}available",
                f"available {r['available']} is above maximum {r['maximum']}; "
                f"{math.floor(maximum)} used"))
            available = math.floor(maximum)
        return available, str(c["id"]), shaped

    used_orgs: set[str] = set()
    for service_id, row in services.items():
        found = service_terms.get(service_id, [])
        need, rule = need_for(
            [Term(str(t.get("code") or ""), str(t.get("name") or ""), str(t.get("taxonomy") or ""))
             for t in found],
            row.get("name") or "", row.get("description") or "")
        if rule.startswith("no "):
            plan.warnings.append(Problem(file_of("services.csv"), row["_row"], "need",
                                         f"service {service_id}: {rule}; filed as other"))
        langs = [str(x.get("code") or x.get("name")) for x in languages.get(service_id, [])]
        names = [str(a["name"]) for a in areas.get(service_id, []) if a.get("name")]
        names += [str(loc["name"]) for loc in at_locations.get(service_id, []) if loc.get("name")]
        extra = {k: v for k, v in _public(row).items()
                 if k not in ("id", "organization_id", "name", "description", "status",
                              "minimum_age", "maximum_age")}
        slots, slots_from, capacity_rows = slots_of(service_id)
        plan.services.append(ServiceSpec(
            hsds_id=service_id,
            organization_hsds_id=row["organization_id"],
            name=row["name"],
            description=row.get("description"),
            status=(row.get("status") or "active").lower(),
            need=need.value,
            need_rule=rule,
            min_age=_int(row.get("minimum_age")),
            max_age=_int(row.get("maximum_age")),
            languages=[lang for lang in langs if LANGUAGE.match(lang)],
            areas=names,
            detail={
                "service": extra,
                "service_areas": areas.get(service_id, []),
                "languages": languages.get(service_id, []),
                "schedules": schedules.get(service_id, []),
                "cost_options": costs.get(service_id, []),
                "contacts": contacts.get(service_id, []),
                "phones": phones.get(service_id, []),
                "locations": at_locations.get(service_id, []),
                "taxonomy_terms": [t for t in found if t.get("taxonomy") != OWN_TAXONOMY],
                "capacities": capacity_rows,
                "slots_from": slots_from,
            },
            slots=slots,
        ))
        used_orgs.add(row["organization_id"])
    for org_id, row in organizations.items():
        plan.organizations.append(OrganizationSpec(
            hsds_id=org_id, name=row["name"], alternate_name=row.get("alternate_name"),
            description=row.get("description"), email=row.get("email"),
            website=row.get("website")))
    return plan


def _check(table: str, row: Row) -> tuple[str, str] | None:
    """The first problem of a row: (field, message), or None."""
    for column in ROW_REQUIRED.get(table, ["id"]):
        if row.get(column) is None:
            return column, "required value missing"
    for column in ("id", "organization_id", "service_id", "location_id", "link_id",
                   "taxonomy_term_id", "unit_id"):
        value = row.get(column)
        if value is not None and not isinstance(value, str | int):
            return column, "must be a text identifier"
        if value is not None:
            row[column] = str(value)
            if len(row[column]) > 128:
                return column, "identifier longer than 128 characters"
    if table == "services.csv":
        status = str(row.get("status") or "active").lower()
        if status not in SERVICE_STATUSES:
            return "status", f"{row['status']!r} is not one of {', '.join(SERVICE_STATUSES)}"
        ages = {}
        for column in ("minimum_age", "maximum_age"):
            if row.get(column) is not None:
                age = _int(row[column])
                if age is None or not 0 <= age <= 120:
                    return column, f"{row[column]!r} is not an age (a whole number 0-120)"
                ages[column] = age
        if ages.get("minimum_age", 0) > ages.get("maximum_age", 120):
            return "minimum_age", "minimum_age is above maximum_age"
        if len(str(row["name"])) > 200:
            return "name", "longer than 200 characters"
    if table == "organizations.csv" and len(str(row["name"])) > 200:
        return "name", "longer than 200 characters"
    if table in ("organizations.csv", "services.csv", "contacts.csv"):
        email = row.get("email")
        if email is not None and not EMAIL.match(str(email)):
            return "email", f"{email!r} is not an email address"
    if table == "languages.csv":
        code, name = row.get("code"), row.get("name")
        if code is None and name is None:
            return "code", "a language needs a code or a name"
        if code is not None and not LANGUAGE.match(str(code)):
            return "code", f"{code!r} is not a language code (ISO 639)"
    if table == "schedules.csv":
        for column in ("opens_at", "closes_at"):
            value = row.get(column)
            if value is not None and not TIME.match(str(value)):
                return column, f"{value!r} is not a time (HH:MM)"
    if table == "service_capacity.csv":
        for column in ("available", "maximum"):
            value = row.get(column)
            if value is None:
                continue
            number = _number(value)
            if number is None or number < 0:
                return column, f"{value!r} is not a number of units (0 or more)"
        updated = row.get("updated")
        if updated is not None and _when(updated) is None:
            return "updated", f"{updated!r} is not a date-time (ISO 8601)"
    if table == "units.csv" and len(str(row["name"])) > 200:
        return "name", "longer than 200 characters"
    if table == "cost_options.csv" and row.get("amount") is not None:
        try:
            float(row["amount"])
        except (TypeError, ValueError):
            return "amount", f"{row['amount']!r} is not a number"
    return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def _number(value: Any) -> float | None:
    """A finite number from a JSON number or a CSV text; None when it is not one."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plain(number: float | None) -> float | int | None:
    """A whole number as an int (CSV gives "12"; JSON writes 12, not 12.0)."""
    return int(number) if number is not None and number.is_integer() else number


def _when(value: Any) -> datetime | None:
    """An ISO 8601 date-time as naive UTC (to compare); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _public(row: Row) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_") and v is not None}


# --- writing -------------------------------------------------------------------------------


@dataclass
class ExportService:
    """A service as the directory holds it, ready to be written as HSDS."""

    id: str
    organization: dict[str, Any]
    name: str
    description: str | None
    status: str
    need: str
    min_age: int | None
    max_age: int | None
    languages: list[str]
    schools: list[str]
    detail: dict[str, Any]
    slots: int = 0  # over all its schools
    open: int = 0
    as_of: str = ""  # when slots and open were read (ISO 8601)


def capacities(s: ExportService) -> list[dict[str, Any]]:
    """HSDS 3.1 ``capacities``: the slot row with Ensemble's figures now, the others as
    imported."""
    imported = s.detail.get("capacities") or []
    slots_from = s.detail.get("slots_from")
    live = {"available": s.open, "maximum": s.slots, "updated": s.as_of}
    out = [{**c, **live} if c.get("id") == slots_from else c for c in imported]
    if slots_from is None:
        out.append({"id": f"{s.id}-capacity", "unit": SLOT_UNIT_OF_ENSEMBLE,
                    "description": "Open referral slots over the schools it serves", **live})
    return out


def compiled_service(s: ExportService) -> dict[str, Any]:
    """The HSDS 3.0 compiled ``service`` object, with 3.1's ``capacities``."""
    detail = s.detail
    languages = detail.get("languages") or [
        {"id": f"{s.id}-lang-{code}", "service_id": s.id, "code": code} for code in s.languages]
    areas = detail.get("service_areas") or [
        {"id": f"{s.id}-area-{school}", "service_id": s.id, "name": school,
         "extent_type": "school"} for school in s.schools]
    need_term = {"id": f"ensemble-need-{s.need}", "code": s.need, "name": s.need.replace("_", " "),
                 "description": f"Ensemble need category {s.need}", "taxonomy": OWN_TAXONOMY}
    terms = [*(detail.get("taxonomy_terms") or []), need_term]
    return {
        "id": s.id,
        "organization_id": s.organization["id"],
        **(detail.get("service") or {}),
        "name": s.name,
        "description": s.description,
        "status": s.status,
        "minimum_age": s.min_age,
        "maximum_age": s.max_age,
        "organization": s.organization,
        "service_areas": areas,
        "languages": languages,
        "schedules": detail.get("schedules") or [],
        "cost_options": detail.get("cost_options") or [],
        "contacts": detail.get("contacts") or [],
        "phones": detail.get("phones") or [],
        "service_at_locations": [
            {"id": f"{s.id}-at-{loc['id']}", "service_id": s.id, "location_id": loc["id"],
             "location": loc}
            for loc in detail.get("locations") or []],
        "capacities": capacities(s),
        "attributes": [
            {"id": f"{s.id}-attr-{t['id']}", "link_id": s.id, "link_type": "service",
             "link_entity": "service", "taxonomy_term_id": t["id"], "taxonomy_term": t}
            for t in terms],
    }


def to_json(services: Iterable[ExportService]) -> dict[str, Any]:
    """An HSDS API page holding every service."""
    contents = [compiled_service(s) for s in services]
    return {"total_items": len(contents), "total_pages": 1, "page_number": 1,
            "size": len(contents), "first_page": True, "last_page": True,
            "empty": not contents, "contents": contents}


def to_csv_zip(services: Iterable[ExportService]) -> bytes:
    """The HSDS tabular form: one CSV per table, in a zip."""
    tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in COLUMNS}

    def put(table: str, row: dict[str, Any]) -> None:
        tables[table].setdefault(str(row["id"]), row)

    for s in services:
        item = compiled_service(s)
        put("organizations.csv", item["organization"])
        put("services.csv", item)
        for key, table in [("service_areas", "service_areas.csv"), ("languages", "languages.csv"),
                           ("schedules", "schedules.csv"), ("cost_options", "cost_options.csv"),
                           ("contacts", "contacts.csv"), ("phones", "phones.csv")]:
            for child in item[key]:
                put(table, {**child, "service_id": s.id})
        for sal in item["service_at_locations"]:
            location = sal["location"]
            put("service_at_location.csv", sal)
            put("locations.csv", location)
            for address in location.get("addresses") or []:
                put("addresses.csv", {**address, "location_id": location["id"]})
        for attribute in item["attributes"]:
            put("attributes.csv", attribute)
            put("taxonomy_terms.csv", attribute["taxonomy_term"])
        for capacity in item["capacities"]:
            put("service_capacity.csv", {**capacity, "service_id": s.id,
                                         "unit_id": capacity["unit"]["id"]})
            put("units.csv", capacity["unit"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, rows in tables.items():
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=COLUMNS[name], extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows.values())
            archive.writestr(name, out.getvalue())
    return buffer.getvalue()
