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
import uuid
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
    file: str = ""  # where it came from, for what the directory reports about it
    row: int | None = None
    path: str = ""


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
    parsed: dict[str, list[Row]] = {}
    for raw_name, content in files.items():
        name = ALIASES.get(raw_name, raw_name)
        if name not in COLUMNS:
            continue
        try:
            parsed[raw_name] = _parse_csv(raw_name, name, content)
        except FileFailed as exc:
            plan.failed_files.append(raw_name)
            plan.errors.append(Problem(raw_name, None, None, f"file not loaded: {exc}"))
    tables = _collect(plan, parsed, files, lambda name: name)
    return _build(plan, tables, lambda table: table)


def _collect(plan: Plan, parsed: dict[str, list[Row]], present: Iterable[str],
             file_of: Any) -> dict[str, list[Row]]:
    """The tables by their HSDS name, with a warning for each file Ensemble does not keep and an
    error for each required one missing."""
    tables: dict[str, list[Row]] = {}
    for raw_name in present:
        if ALIASES.get(raw_name, raw_name) not in COLUMNS:
            plan.warnings.append(Problem(file_of(raw_name), None, None,
                                         "not an HSDS table Ensemble keeps; ignored"))
    for raw_name, rows in parsed.items():
        tables[ALIASES.get(raw_name, raw_name)] = rows
        plan.rows_read[file_of(raw_name)] = len(rows)
    for required in REQUIRED_FILES:
        if required not in tables and file_of(required) not in plan.failed_files:
            plan.failed_files.append(file_of(required))
            plan.errors.append(Problem(file_of(required), None, None, "file not loaded: missing"))
    return tables


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


# What the JSON shapes Open Referral publishes look like (examples/*.json of the specification):
# the keys that tell one kind of object from another when it is not a service.
ORGANIZATION_KEYS = {"services", "tax_status", "tax_id", "year_incorporated", "legal_status",
                     "logo", "parent_organization_id", "organization_identifiers", "programs",
                     "website", "funding", "locations"}
LOCATION_KEYS = {"location_type", "latitude", "longitude", "addresses", "accessibility",
                 "external_identifier", "transportation"}
TERM_KEYS = {"taxonomy", "parent_id", "term_uri", "taxonomy_detail", "taxonomy_id"}
SERVICE_KEYS = {"status", "organization", "organization_id", "service_areas",
                "service_at_locations", "capacities", "eligibility_description", "minimum_age",
                "maximum_age", "program", "program_id", "interpretation_services",
                "application_process", "cost_options", "required_documents"}
KIND_NAMES = {"location": "an HSDS location", "taxonomy_term": "an HSDS taxonomy term",
              "taxonomy": "an HSDS taxonomy", "base": "the HSDS API's base document",
              "not an object": "not an object"}
KIND_PLURALS = {"location": "HSDS locations", "taxonomy_term": "HSDS taxonomy terms",
                "taxonomy": "HSDS taxonomies", "base": "HSDS API base documents",
                "not an object": "values that are not objects"}
WHAT_IMPORTS = ("Ensemble imports HSDS services: a service object, a list or an API page "
                "('contents') of services, an organization with its 'services', services at "
                "locations, or the tabular form")


def _kind(obj: Any) -> str:
    """service | organization | service_at_location, or another HSDS kind (KIND_NAMES)."""
    if not isinstance(obj, dict):
        return "not an object"
    keys = set(obj)
    if isinstance(obj.get("service"), dict):
        return "service_at_location"
    if keys & SERVICE_KEYS:
        return "service"
    if keys & ORGANIZATION_KEYS:
        return "organization"
    if keys & LOCATION_KEYS:
        return "location"
    if keys & TERM_KEYS or ("code" in keys and "name" in keys):
        return "taxonomy_term"
    if "openapi_url" in keys or "profile" in keys:
        return "base"
    if "version" in keys:
        return "taxonomy"
    return "service"


def read_json(data: bytes, file_name: str = "services.json") -> Plan:
    """HSDS JSON in any shape the specification shows: a service, a service at a location, an
    organization with its services, a list or an API page (``contents``) of those, or the
    tabular form (``{"services.csv": [...], ...}``)."""
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _file_failed(file_name, f"not JSON: {exc}")
    if isinstance(payload, dict) and payload and all(
            isinstance(k, str) and k.endswith(".csv") for k in payload):
        return _read_tabular_json(payload, file_name)
    plan = Plan()
    if isinstance(payload, dict) and isinstance(payload.get("contents"), list):
        _warn_partial_page(plan, payload, file_name)
        items = payload["contents"]
    elif isinstance(payload, dict) and isinstance(payload.get("services"), list) \
            and not {"id", "name"} & set(payload):
        items = payload["services"]  # Ensemble's own earlier shape
    elif isinstance(payload, list):
        items = payload
    elif isinstance(payload, dict):
        items = [payload]  # one object: a service, an organization, a service at a location
    else:
        return _file_failed(file_name, f"a JSON {type(payload).__name__}. {WHAT_IMPORTS}")
    kinds = [_kind(item) for item in items]
    if items and not set(kinds) & {"service", "organization", "service_at_location"}:
        kind = max(set(kinds), key=kinds.count)
        one = len(items) == 1 and isinstance(payload, dict) and "contents" not in payload
        what = KIND_NAMES[kind] if one else f"a list of {KIND_PLURALS[kind]}"
        return _file_failed(file_name, f"this is {what}, not services. {WHAT_IMPORTS}")
    tables: dict[str, list[Row]] = {name: [] for name in COLUMNS}
    plan.rows_read[file_name] = len(items)
    for index, (item, kind) in enumerate(zip(items, kinds, strict=True), start=1):
        if kind == "service":
            _flatten_service(tables, item, index, "")
        elif kind == "organization":
            _flatten_organization(tables, item, index)
        elif kind == "service_at_location":
            at = {k: v for k, v in item.items() if k != "service"}
            _flatten_service(tables, item["service"], index, "service.", at=[(at, "")])
        else:
            tables["services.csv"].append({"_row": index, "_path": "", "_bad": (
                f"{KIND_NAMES[kind]}, not a service or an organization; left out")})
    return _build(plan, tables, lambda table: file_name)


def _file_failed(file_name: str, message: str) -> Plan:
    plan = Plan(failed_files=[file_name])
    plan.errors.append(Problem(file_name, None, None, f"file not loaded: {message}"))
    return plan


def _warn_partial_page(plan: Plan, page: dict[str, Any], file_name: str) -> None:
    pages = page.get("total_pages")
    if page.get("last_page") is False or (isinstance(pages, int) and pages > 1):
        plan.warnings.append(Problem(file_name, None, "contents", (
            f"page {page.get('page_number', '?')} of {pages or '?'} ({page.get('total_items', '?')}"
            " items in all): only this page's items are in the file; import every page, or ask "
            "the directory for all of them in one page")))


def _read_tabular_json(payload: dict[str, Any], file_name: str) -> Plan:
    """HSDS's tabular JSON (examples/tabular.json): each table as a list of row objects."""
    plan = Plan()
    parsed: dict[str, list[Row]] = {}
    for raw_name, objects in payload.items():
        name = ALIASES.get(raw_name, raw_name)
        if name not in COLUMNS:
            continue
        if not isinstance(objects, list):
            plan.failed_files.append(f"{file_name}/{raw_name}")
            plan.errors.append(Problem(f"{file_name}/{raw_name}", None, None,
                                       "file not loaded: not a list of rows"))
            continue
        rows: list[Row] = []
        for number, obj in enumerate(objects, start=1):
            if not isinstance(obj, dict):
                rows.append({"_row": number, "_path": "", "_bad": "not an object"})
                continue
            row: Row = {"_row": number, "_path": ""}
            for column in COLUMNS[name]:
                value = obj.get(column)
                row[column] = None if value in (None, "") else value
            rows.append(row)
        parsed[raw_name] = rows
    tables = _collect(plan, parsed, payload, lambda name: f"{file_name}/{name}")
    return _build(plan, tables, lambda table: f"{file_name}/{table}")


def _add(tables: dict[str, list[Row]], table: str, obj: Any, index: int, path: str,
         shared: bool = False, **links: Any) -> Row | None:
    """One JSON object as a row of ``table``. ``shared`` rows (an organization or a location
    nested in each of its services...) are repeated by JSON and kept once."""
    if not isinstance(obj, dict):
        tables[table].append({"_row": index, "_path": path, "_bad": "not an object"})
        return None
    row: Row = {"_row": index, "_path": path, "_shared": shared}
    for column in COLUMNS[table]:
        value = obj.get(column)
        row[column] = None if value in (None, "") else value
    for key, value in links.items():
        if row.get(key) is None:
            row[key] = value
    tables[table].append(row)
    return row


def _flatten_organization(tables: dict[str, list[Row]], org: dict[str, Any], index: int) -> None:
    """An organization (organization_full.json): its row, and its services nested under it."""
    _add(tables, "organizations.csv", org, index, "")
    for i, service in enumerate(_list(org.get("services"))):
        path = f"services[{i}]."
        if not isinstance(service, dict):
            tables["services.csv"].append({"_row": index, "_path": path, "_bad": "not an object"})
            continue
        _flatten_service(tables, service, index, path, organization_id=org.get("id"))


def _flatten_service(tables: dict[str, list[Row]], item: dict[str, Any], index: int, prefix: str,
                     organization_id: Any = None,
                     at: list[tuple[Any, str]] | None = None) -> None:
    org = item.get("organization")
    org_id = org.get("id") if isinstance(org, dict) else item.get("organization_id")
    if isinstance(org, dict):  # repeated for each of its services; kept once
        _add(tables, "organizations.csv", org, index, f"{prefix}organization.", shared=True)
    service = _add(tables, "services.csv", item, index, prefix,
                   organization_id=org_id or organization_id)
    service_id = service.get("id") if service else None
    for key, table in CHILDREN:
        for i, child in enumerate(_list(item.get(key))):
            _add(tables, table, child, index, f"{prefix}{key}[{i}].", service_id=service_id)
    places = [(sal, f"{prefix}service_at_locations[{i}].")
              for i, sal in enumerate(_list(item.get("service_at_locations")))]
    for sal, path in [*(at or []), *places]:
        _flatten_at_location(tables, sal, index, path, service_id)
    for i, capacity in enumerate(_list(item.get("capacities"))):
        unit = capacity.get("unit") if isinstance(capacity, dict) else None
        unit_id = unit.get("id") if isinstance(unit, dict) else None
        _add(tables, "service_capacity.csv", capacity, index, f"{prefix}capacities[{i}].",
             service_id=service_id, unit_id=unit_id)
        if isinstance(unit, dict):
            _add(tables, "units.csv", unit, index, f"{prefix}capacities[{i}].unit.", shared=True)
    for i, attribute in enumerate(_list(item.get("attributes"))):
        term = attribute.get("taxonomy_term") if isinstance(attribute, dict) else None
        term_id = term.get("id") if isinstance(term, dict) else None
        _add(tables, "attributes.csv", attribute, index, f"{prefix}attributes[{i}].",
             link_id=service_id, link_entity="service", taxonomy_term_id=term_id)
        if isinstance(term, dict):
            _add(tables, "taxonomy_terms.csv", term, index,
                 f"{prefix}attributes[{i}].taxonomy_term.", shared=True)


CHILDREN = [("service_areas", "service_areas.csv"), ("languages", "languages.csv"),
            ("schedules", "schedules.csv"), ("cost_options", "cost_options.csv"),
            ("contacts", "contacts.csv"), ("phones", "phones.csv")]


def _flatten_at_location(tables: dict[str, list[Row]], sal: Any, index: int, path: str,
                         service_id: Any) -> None:
    location = sal.get("location") if isinstance(sal, dict) else None
    location_id = location.get("id") if isinstance(location, dict) else None
    _add(tables, "service_at_location.csv", sal, index, path, service_id=service_id,
         location_id=location_id)
    if isinstance(location, dict):
        _add(tables, "locations.csv", location, index, f"{path}location.", shared=True)
        for j, address in enumerate(_list(location.get("addresses"))):
            _add(tables, "addresses.csv", address, index, f"{path}location.addresses[{j}].",
                 shared=True, location_id=location_id)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --- checking and building -----------------------------------------------------------------


# Columns the schema types as numbers: CSV gives text, JSON may too; kept as numbers.
NUMBERS: dict[str, list[str]] = {
    "organizations.csv": ["year_incorporated"],
    "services.csv": ["minimum_age", "maximum_age"],
    "locations.csv": ["latitude", "longitude"],
    "schedules.csv": ["timezone", "count", "interval"],
    "cost_options.csv": ["amount"],
    "phones.csv": ["extension"],
    "service_capacity.csv": ["available", "maximum"],
}


class _Rows:
    """The rows of every table, checked once: bad ones reported (with their file, row and field)
    and left out."""

    def __init__(self, plan: Plan, tables: dict[str, list[Row]], file_of: Any) -> None:
        self.plan, self.tables, self.file_of = plan, tables, file_of

    def problem(self, table: str, row: Row, column: str | None, message: str) -> None:
        path = f"{row['_path']}{column}" if column else (row["_path"].rstrip(".") or None)
        self.plan.errors.append(Problem(self.file_of(table), row["_row"], path, message))

    def warn(self, table: str, row: Row, column: str, message: str) -> None:
        self.plan.warnings.append(Problem(self.file_of(table), row["_row"],
                                          f"{row['_path']}{column}", message))

    def good(self, table: str) -> list[Row]:
        kept: list[Row] = []
        seen: set[Any] = set()
        for row in self.tables.get(table, []):
            if "_bad" in row:
                self.problem(table, row, None, row["_bad"])
                continue
            failure = _check(table, row)
            if failure:
                self.problem(table, row, *failure)
                continue
            # JSON nests a service's children in it: the same child id under two services is
            # two rows; a shared row (an organization, a location) is kept once.
            key = (row["id"], None if row.get("_shared") or not row["_path"]
                   else row.get("service_id"))
            if key in seen:
                if not row.get("_shared"):
                    self.problem(table, row, "id", f"duplicate id {row['id']}")
                continue
            seen.add(key)
            self._numbers(table, row)
            kept.append(row)
        return kept

    def _numbers(self, table: str, row: Row) -> None:
        for column in NUMBERS.get(table, []):
            if row.get(column) is None:
                continue
            number = _number(row[column])
            if number is None:
                self.warn(table, row, column, f"{row[column]!r} is not a number; left out")
            row[column] = _plain(number)

    def linked(self, table: str, services: dict[str, Row],
               link: str = "service_id") -> dict[str, list[Row]]:
        """The good rows of a service's child table, by service."""
        by_service: dict[str, list[Row]] = {}
        for row in self.good(table):
            target = row.get(link)
            if target is None:
                continue  # about a location or organization only: not kept
            if target not in services:
                self.problem(table, row, link, f"service {target} not loaded")
                continue
            by_service.setdefault(target, []).append(row)
        return by_service


def _build(plan: Plan, tables: dict[str, list[Row]], file_of: Any) -> Plan:
    """Check every row, drop the bad ones with a Problem each, and assemble the specs."""
    rows = _Rows(plan, tables, file_of)
    organizations = {row["id"]: row for row in rows.good("organizations.csv")}
    services: dict[str, Row] = {}
    failed_orgs = file_of("organizations.csv") in plan.failed_files
    for row in rows.good("services.csv"):
        if row["organization_id"] not in organizations:
            why = "its file failed" if failed_orgs else "no such organization loaded"
            rows.problem("services.csv", row, "organization_id",
                         f"organization {row['organization_id']} not loaded ({why})")
            continue
        services[row["id"]] = row
    details = {key: {sid: [_public(r) for r in found]
                     for sid, found in rows.linked(table, services).items()}
               for key, table in CHILDREN}
    details["service_at_locations"] = _places(rows, services)
    details["taxonomy_terms"] = _terms(rows, services)
    capacity = _Capacity(rows, services)
    for service_id, row in services.items():
        plan.services.append(_spec(plan, file_of("services.csv"), row,
                                   {k: v.get(service_id, []) for k, v in details.items()},
                                   capacity.slots_of(service_id)))
    for org_id, row in organizations.items():
        plan.organizations.append(OrganizationSpec(
            hsds_id=org_id, name=row["name"], alternate_name=row.get("alternate_name"),
            description=row.get("description"), email=row.get("email"),
            website=row.get("website")))
    return plan


def _places(rows: _Rows, services: dict[str, Row]) -> dict[str, list[dict[str, Any]]]:
    """Each service's service-at-location rows (their own id kept), each with its location and
    the location's addresses."""
    locations = {row["id"]: _public(row) for row in rows.good("locations.csv")}
    for row in rows.good("addresses.csv"):
        if row["location_id"] in locations:
            address = {k: v for k, v in _public(row).items() if k != "location_id"}
            locations[row["location_id"]].setdefault("addresses", []).append(address)
    at_locations: dict[str, list[dict[str, Any]]] = {}
    for row in rows.good("service_at_location.csv"):
        if row["service_id"] not in services:
            rows.problem("service_at_location.csv", row, "service_id",
                         f"service {row['service_id']} not loaded")
        elif row["location_id"] not in locations:
            rows.problem("service_at_location.csv", row, "location_id",
                         f"location {row['location_id']} not loaded")
        else:
            own = {k: v for k, v in _public(row).items() if k not in ("service_id", "location_id")}
            at_locations.setdefault(row["service_id"], []).append(
                {**own, "location_id": row["location_id"],
                 "location": locations[row["location_id"]]})
    return at_locations


def _terms(rows: _Rows, services: dict[str, Row]) -> dict[str, list[dict[str, Any]]]:
    terms = {row["id"]: row for row in rows.good("taxonomy_terms.csv")}
    service_terms: dict[str, list[dict[str, Any]]] = {}
    for row in rows.good("attributes.csv"):
        if (row.get("link_entity") or "service") != "service":
            continue
        if row["link_id"] not in services:
            rows.problem("attributes.csv", row, "link_id", f"service {row['link_id']} not loaded")
        elif row["taxonomy_term_id"] not in terms:
            rows.problem("attributes.csv", row, "taxonomy_term_id",
                         f"taxonomy term {row['taxonomy_term_id']} not loaded")
        else:
            service_terms.setdefault(row["link_id"], []).append(
                _public(terms[row["taxonomy_term_id"]]))
    return service_terms


class _Capacity:
    """HSDS 3.1 service_capacity rows with their units, and the open slots they give."""

    def __init__(self, rows: _Rows, services: dict[str, Row]) -> None:
        self.rows = rows
        plan = rows.plan
        self.units = {row["id"]: _public(row) for row in rows.good("units.csv")}
        self.by_service: dict[str, list[Row]] = {}
        for row in rows.good("service_capacity.csv"):
            if row["service_id"] not in services:
                rows.problem("service_capacity.csv", row, "service_id",
                             f"service {row['service_id']} not loaded")
            elif row["unit_id"] not in self.units:
                failed = rows.file_of("units.csv") in plan.failed_files
                why = "its file failed" if failed else "no such unit loaded"
                rows.problem("service_capacity.csv", row, "unit_id",
                             f"unit {row['unit_id']} not loaded ({why})")
            else:
                self.by_service.setdefault(row["service_id"], []).append(row)

    def slots_of(self, service_id: str) -> tuple[int | None, str | None, list[dict[str, Any]]]:
        """Open slots, the id of the capacity row they come from, and every capacity row in
        HSDS's compiled shape (with its unit)."""
        rows = self.by_service.get(service_id, [])
        shaped = [{**{k: v for k, v in _public(r).items() if k not in ("service_id", "unit_id")},
                   "unit": self.units[r["unit_id"]]} for r in rows]
        countable = []
        for r, c in zip(rows, shaped, strict=True):
            unit = c["unit"]
            if SLOT_UNIT.search(f"{unit.get('name', '')} {unit.get('identifier') or ''}"):
                countable.append((r, c))
            else:
                self.rows.warn("service_capacity.csv", r, "unit_id", (
                    f"unit {unit.get('name')!r} does not count people or places; kept, sets "
                    "no slots"))
        if not countable:
            return None, None, shaped
        # The latest figure wins; a row without ``updated`` counts as the oldest.
        r, c = max(countable, key=lambda pair: _when(pair[0].get("updated")) or datetime.min)
        available = math.floor(_number(r["available"]) or 0)
        maximum = _number(r.get("maximum"))
        if maximum is not None and available > maximum:
            self.rows.warn("service_capacity.csv", r, "available", (
                f"available {r['available']} is above maximum {r['maximum']}; "
                f"{math.floor(maximum)} used"))
            available = math.floor(maximum)
        return available, str(c["id"]), shaped


def _spec(plan: Plan, file: str, row: Row, detail: dict[str, list[dict[str, Any]]],
          capacity: tuple[int | None, str | None, list[dict[str, Any]]]) -> ServiceSpec:
    service_id = row["id"]
    found = detail["taxonomy_terms"]
    need, rule = need_for(
        [Term(str(t.get("code") or ""), str(t.get("name") or ""), str(t.get("taxonomy") or ""))
         for t in found],
        row.get("name") or "", row.get("description") or "")
    if rule.startswith("no "):
        plan.warnings.append(Problem(file, row["_row"], f"{row['_path']}need",
                                     f"service {service_id}: {rule}; filed as other"))
    langs = [str(x.get("code") or x.get("name")) for x in detail["languages"]]
    names = [str(a["name"]) for a in detail["service_areas"] if a.get("name")]
    names += [str(sal["location"]["name"]) for sal in detail["service_at_locations"]
              if sal["location"].get("name")]
    extra = {k: v for k, v in _public(row).items()
             if k not in ("id", "organization_id", "name", "description", "status",
                          "minimum_age", "maximum_age")}
    slots, slots_from, capacity_rows = capacity
    return ServiceSpec(
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
            **{key: detail[key] for key, _ in CHILDREN},
            "service_at_locations": detail["service_at_locations"],
            "taxonomy_terms": [t for t in found if t.get("taxonomy") != OWN_TAXONOMY],
            "capacities": capacity_rows,
            "slots_from": slots_from,
        },
        slots=slots,
        file=file,
        row=row["_row"],
        path=row["_path"],
    )


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

# HSDS ids are UUIDs. A source id that is not one (a county's "svc-0001") is written as a UUID
# derived from it, the same on every export; ids Ensemble makes for rows it adds are derived
# from the service's id and what the row is, so they too are the same on every export.
EXPORT_NAMESPACE = uuid.UUID("0d1c9d8e-5f0b-4c61-9f4e-2f2a8e51b7a3")


def export_id(value: Any) -> str:
    """The HSDS id written for a source id: itself when it is a UUID, else one derived from it."""
    text = str(value)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return str(uuid.uuid5(EXPORT_NAMESPACE, text))


def _made_id(*parts: Any) -> str:
    return str(uuid.uuid5(EXPORT_NAMESPACE, "/".join(str(p) for p in parts)))


def _is_id(key: str) -> bool:
    return key == "id" or key.endswith("_id")


def _hsds_shaped(value: Any) -> Any:
    """What HSDS accepts: no nulls (a value or the key left out), every id a UUID."""
    if isinstance(value, dict):
        return {k: export_id(v) if _is_id(k) and isinstance(v, str | int)
                and not isinstance(v, bool) else _hsds_shaped(v)
                for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_hsds_shaped(v) for v in value]
    return value


SLOT_UNIT_OF_ENSEMBLE = {"id": _made_id("ensemble", "unit", "referral-slot"),
                         "name": "Referral slot", "scheme": "ensemble",
                         "identifier": "referral-slot"}


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
        out.append({"id": _made_id(s.id, "capacity"), "unit": SLOT_UNIT_OF_ENSEMBLE,
                    "description": "Open referral slots over the schools it serves", **live})
    return out


def _at_locations(s: ExportService) -> list[dict[str, Any]]:
    """Service-at-location rows with their own ids (an import before they were kept held the
    locations only: those get an id derived from the service and the location)."""
    if "service_at_locations" in s.detail:
        rows = s.detail["service_at_locations"]
    else:
        rows = [{"id": _made_id(s.id, "at", loc["id"]), "location_id": loc["id"],
                 "location": loc} for loc in s.detail.get("locations") or []]
    return [{**sal, "service_id": s.id,
             "location": {"location_type": "physical", **sal["location"]}} for sal in rows]


def _term(term: dict[str, Any]) -> dict[str, Any]:
    """A taxonomy term as HSDS requires it (id, name and description)."""
    return {**term, "description": term.get("description") or term.get("name")}


def compiled_service(s: ExportService) -> dict[str, Any]:
    """The HSDS 3.0 compiled ``service`` object, with 3.1's ``capacities``."""
    detail = s.detail
    languages = detail.get("languages") or [
        {"id": _made_id(s.id, "language", code), "service_id": s.id, "code": code}
        for code in s.languages]
    areas = detail.get("service_areas") or [
        {"id": _made_id(s.id, "area", school), "service_id": s.id, "name": school,
         "extent_type": "school"} for school in s.schools]
    need_term = {"id": _made_id("ensemble", "need", s.need), "code": s.need,
                 "name": s.need.replace("_", " "),
                 "description": f"Ensemble need category {s.need}", "taxonomy": OWN_TAXONOMY}
    terms = [*(_term(t) for t in detail.get("taxonomy_terms") or []), need_term]
    organization = {**s.organization,
                    "description": s.organization.get("description") or s.organization["name"]}
    return _hsds_shaped({
        "id": s.id,
        "organization_id": organization["id"],
        **(detail.get("service") or {}),
        "name": s.name,
        "description": s.description,
        "status": s.status,
        "minimum_age": s.min_age,
        "maximum_age": s.max_age,
        "organization": organization,
        "service_areas": areas,
        "languages": languages,
        "schedules": detail.get("schedules") or [],
        "cost_options": detail.get("cost_options") or [],
        "contacts": detail.get("contacts") or [],
        "phones": detail.get("phones") or [],
        "service_at_locations": _at_locations(s),
        "capacities": capacities(s),
        "attributes": [
            {"id": _made_id(s.id, "attribute", t["id"]), "link_id": s.id, "link_type": "service",
             "link_entity": "service", "taxonomy_term_id": t["id"], "taxonomy_term": t}
            for t in terms],
    })


def to_json(services: Iterable[ExportService]) -> dict[str, Any]:
    """An HSDS API page holding every service."""
    contents = [compiled_service(s) for s in services]
    return {"total_items": len(contents), "total_pages": 1, "page_number": 1,
            "size": len(contents), "first_page": True, "last_page": True,
            "empty": not contents, "contents": contents}


def to_csv_zip(services: Iterable[ExportService]) -> bytes:
    """The HSDS tabular form: one CSV per table, in a zip. Numbers are written as numbers
    (12, 2.5: never "12.0"), an absent value as an empty cell."""
    tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in COLUMNS}

    def put(table: str, row: dict[str, Any]) -> None:
        tables[table].setdefault(str(row["id"]), row)

    for s in services:
        item = compiled_service(s)
        sid = item["id"]
        put("organizations.csv", item["organization"])
        put("services.csv", item)
        for key, table in CHILDREN:
            for child in item.get(key, []):
                put(table, {**child, "service_id": sid})
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
            put("service_capacity.csv", {**capacity, "service_id": sid,
                                         "unit_id": capacity["unit"]["id"]})
            put("units.csv", capacity["unit"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, rows in tables.items():
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=COLUMNS[name], extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows.values())
            archive.writestr(name, out.getvalue())
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return _plain(value)
    return value
