"""A county directory in HSDS 3.0 CSV form (with 3.1's service_capacity and units), generated
deterministically (no random state shared with anything else), with a known set of broken rows.

`python tests/data/hsds/generate.py OUT.zip` writes it; tests call `build()` in memory.
"""

import csv
import io
import random
import sys
import zipfile
from dataclasses import dataclass, field

NEEDS = [  # (taxonomy code, term name, service name word) as a 211 directory would write them
    ("BD-1800.2000", "Food Pantries", "Food Pantry"),
    ("BH-1800.8500", "Transitional Housing", "Housing Help"),
    ("BM-6500.1500", "Clothing", "Clothing Closet"),
    ("RP-1400.8000", "Outpatient Mental Health", "Counseling"),
    ("", "Dental Care", "Dental Clinic"),
    ("", "Vision Care", "Eye Exams"),
    ("", "Tutoring Services", "Homework Help"),
    ("", "Mentoring Programs", "Mentor Match"),
    ("FT-3000", "Legal Aid", "Legal Clinic"),
]
EXPECTED_NEED = {"BD-1800.2000": "food", "BH-1800.8500": "housing", "BM-6500.1500": "clothing",
                 "RP-1400.8000": "mental_health", "Dental Care": "dental",
                 "Vision Care": "vision", "Tutoring Services": "tutoring",
                 "Mentoring Programs": "mentoring", "FT-3000": "legal"}
AREAS = ["lincoln-es", "Roosevelt Middle School", "Riverside Unified", "Elsewhere County"]
LANGS = ["en", "es", "vi", "zh"]


@dataclass
class Dataset:
    files: dict[str, bytes]
    organizations: int
    services: int
    # (file, row, field) of every broken row, and which service ids they take out
    broken: list[tuple[str, int, str]] = field(default_factory=list)
    bad_services: set[str] = field(default_factory=set)
    # Open slots each service's capacity rows give (services without a countable row: absent),
    # and the (file, row, field) of the rows that load with a warning.
    slots: dict[str, int] = field(default_factory=dict)
    capacity_warnings: list[tuple[str, int, str]] = field(default_factory=list)

    def zip(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in self.files.items():
                archive.writestr(f"hsds/{name}", content)
        return buffer.getvalue()


def _csv(header: list[str], rows: list[list[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def build(organizations: int = 300, seed: int = 7) -> Dataset:
    rng = random.Random(seed)
    orgs, services, areas, langs, terms, attrs, schedules = [], [], [], [], [], [], []
    for code, name, _ in NEEDS:
        terms.append([f"term-{name}", code, name, "211 taxonomy" if code else "", "airs"])
    broken: list[tuple[str, int, str]] = []
    bad: set[str] = set()
    units = [["unit-slot", "Appointment slot", "", "", ""], ["unit-bed", "Bed", "", "", ""],
             ["unit-kg", "Kilogram", "SI", "kgm", "https://units.example/kgm"]]
    capacities: list[list[object]] = []
    slots: dict[str, int] = {}
    warnings: list[tuple[str, int, str]] = []
    old, new = "2024-09-25T14:23:06.5+01:00", "2025-01-10T08:00:00Z"
    for o in range(organizations):
        oid = f"org-{o:04d}"
        orgs.append([oid, f"Community Org {o:04d}", f"Serves families ({o})",
                     f"info{o}@org.example", f"https://org{o}.example"])
        for k in range(rng.randint(1, 3)):
            sid = f"svc-{o:04d}-{k}"
            code, term, word = NEEDS[(o + k) % len(NEEDS)]
            low = rng.choice([None, 3, 5, 11])
            services.append([sid, oid, f"{word} {o}-{k}", f"{word} for families", "active",
                             low if low is not None else "", "" if low is None else low + 8])
            areas.append([f"area-{sid}", sid, AREAS[(o + k) % len(AREAS)], "", "", "", ""])
            langs.append([f"lang-{sid}-en", sid, "English", "en"])
            if o % 2:
                langs.append([f"lang-{sid}-x", sid, "", LANGS[1 + o % 3]])
            attrs.append([f"attr-{sid}", sid, f"term-{term}", "service"])
            schedules.append([f"sched-{sid}", sid, "WEEKLY", "MO,WE", "09:00", "17:00"])
            if k == 0 and o % 3 == 0:  # every third organization's first service says
                unit = "unit-bed" if o % 2 else "unit-slot"
                capacities.append([f"cap-{sid}", sid, unit, o % 7, 10, "Open places", old])
                slots[sid] = o % 7
            if k == 0 and o % 15 == 0:  # ...one in a unit that is no slot: kept, with a warning
                capacities.append([f"cap-{sid}-kg", sid, "unit-kg", 500, "", "Food", new])
                warnings.append(("service_capacity.csv", len(capacities) + 1, "unit_id"))
            if k == 0 and o % 33 == 0:  # ...and a later figure, which wins
                capacities.append([f"cap-{sid}-new", sid, "unit-slot", 9, "", "", new])
                slots[sid] = 9
    # Broken rows. CSV row numbers count the header as row 1.
    services.append(["svc-bad-status", "org-0001", "Bad status", "", "open", "", ""])
    broken.append(("services.csv", len(services) + 1, "status"))
    bad.add("svc-bad-status")
    services.append(["svc-bad-age", "org-0002", "Bad age", "", "active", "ten", ""])
    broken.append(("services.csv", len(services) + 1, "minimum_age"))
    bad.add("svc-bad-age")
    services.append(["svc-no-org", "org-9999", "Orphan", "", "active", "", ""])
    broken.append(("services.csv", len(services) + 1, "organization_id"))
    bad.add("svc-no-org")
    services.append(["svc-0000-0", "org-0000", "Duplicate id", "", "active", "", ""])
    broken.append(("services.csv", len(services) + 1, "id"))
    orgs.append(["", "No id", "", "", ""])
    broken.append(("organizations.csv", len(orgs) + 1, "id"))
    orgs.append(["org-bad-email", "Bad email", "", "not-an-email", ""])
    broken.append(("organizations.csv", len(orgs) + 1, "email"))
    langs.append(["lang-bad", "svc-0003-0", "Klingon", "tlh!"])
    broken.append(("languages.csv", len(langs) + 1, "code"))
    schedules.append(["sched-bad", "svc-0004-0", "WEEKLY", "MO", "9am", "17:00"])
    broken.append(("schedules.csv", len(schedules) + 1, "opens_at"))
    # Capacity: above its maximum (a warning, the maximum used), then broken rows.
    capacities.append(["cap-over", "svc-0001-0", "unit-slot", 15, 10, "", new])
    warnings.append(("service_capacity.csv", len(capacities) + 1, "available"))
    slots["svc-0001-0"] = 10
    units.append(["unit-noname", "", "", "", ""])
    broken.append(("units.csv", len(units) + 1, "name"))
    bad_capacity: list[tuple[list[object], str]] = [
        (["cap-bad-n", "svc-0002-0", "unit-slot", "lots", "", "", ""], "available"),
        (["cap-neg", "svc-0002-0", "unit-slot", -1, "", "", ""], "available"),
        (["cap-when", "svc-0002-0", "unit-slot", 4, "", "", "yesterday"], "updated"),
        (["cap-unit", "svc-0002-0", "unit-missing", 4, "", "", ""], "unit_id"),
        (["cap-noname", "svc-0002-0", "unit-noname", 4, "", "", ""], "unit_id"),
        (["cap-nosvc", "svc-9999-0", "unit-slot", 4, "", "", ""], "service_id"),
        (["", "svc-0002-0", "unit-slot", 4, "", "", ""], "id"),
    ]
    for row, column in bad_capacity:
        capacities.append(row)
        broken.append(("service_capacity.csv", len(capacities) + 1, column))
    files = {
        "organizations.csv": _csv(["id", "name", "description", "email", "website"], orgs),
        "services.csv": _csv(["id", "organization_id", "name", "description", "status",
                              "minimum_age", "maximum_age"], services),
        "service_areas.csv": _csv(["id", "service_id", "name", "description", "extent",
                                   "extent_type", "uri"], areas),
        "languages.csv": _csv(["id", "service_id", "name", "code"], langs),
        "taxonomy_terms.csv": _csv(["id", "code", "name", "description", "taxonomy"], terms),
        "attributes.csv": _csv(["id", "link_id", "taxonomy_term_id", "link_entity"], attrs),
        "schedules.csv": _csv(["id", "service_id", "freq", "byday", "opens_at", "closes_at"],
                              schedules),
        "service_capacity.csv": _csv(["id", "service_id", "unit_id", "available", "maximum",
                                      "description", "updated"], capacities),
        "units.csv": _csv(["id", "name", "scheme", "identifier", "uri"], units),
        # A whole file that fails: its header lacks service_id.
        "cost_options.csv": _csv(["id", "amount"], [["cost-1", "10"]]),
    }
    good_services = sum(1 for s in services if s[0] not in bad) - 1  # minus the duplicate
    return Dataset(files, organizations, good_services, broken, bad, slots, warnings)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "hsds.zip"
    with open(target, "wb") as handle:
        handle.write(build().zip())
