"""A district's OneRoster 1.2 CSV roster (what an SIS exports), generated deterministically,
with a known set of bad rows when asked.

`python tests/data/oneroster/generate.py OUT.zip [STUDENTS]` writes one; tests and the roster
benchmark call `build()` in memory, change its rows (a re-sync) and render it again.

Shape: the district org, Lincoln Elementary (matched to the districts file by name) and
Roosevelt Middle School (by identifier); each student has one or two guardians (parent,
guardian or relative, as roles.csv says), siblings share theirs; the student lists them in
agentSourcedIds; enrollments name the school; demographics.csv carries a
metadata.preferredLanguage extension column, as SIS exports add one.
"""

import csv
import io
import random
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

USERS = ["sourcedId", "status", "dateLastModified", "enabledUser", "username", "userIds",
         "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone",
         "agentSourcedIds", "grades", "password", "userMasterIdentifier", "resourceSourcedIds",
         "preferredGivenName", "preferredMiddleName", "preferredFamilyName",
         "primaryOrgSourcedId", "pronouns"]
ORGS = ["sourcedId", "status", "dateLastModified", "name", "type", "identifier",
        "parentSourcedId"]
ROLES = ["sourcedId", "status", "dateLastModified", "userSourcedId", "roleType", "role",
         "beginDate", "endDate", "orgSourcedId", "userProfileSourcedId"]
ENROLLMENTS = ["sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
               "userSourcedId", "role", "primary", "beginDate", "endDate"]
DEMOGRAPHICS = ["sourcedId", "status", "dateLastModified", "birthDate", "sex",
                "metadata.preferredLanguage"]
HEADERS = {"orgs.csv": ORGS, "users.csv": USERS, "roles.csv": ROLES,
           "enrollments.csv": ENROLLMENTS, "demographics.csv": DEMOGRAPHICS}
GIVEN = ["Maria", "Jose", "Linh", "Wei", "Amina", "James", "Sofia", "Omar", "Mai", "David"]
FAMILY = ["Garcia", "Nguyen", "Chen", "Hassan", "Smith", "Lopez", "Tran", "Ali", "Kim", "Brown"]
LANGUAGES = ["en", "es", "vi", "zh", "ar"]
SCHOOLS = [("org-lincoln", "Lincoln Elementary", "", ["KG", "01", "02", "03", "04", "05"]),
           ("org-roosevelt", "Roosevelt MS", "roosevelt-ms", ["06", "07", "08"])]


@dataclass
class Roster:
    modes: dict[str, str]
    tables: dict[str, list[dict[str, Any]]]
    guardians: set[str] = field(default_factory=set)  # sourcedIds that load
    students: set[str] = field(default_factory=set)
    broken: list[tuple[str, int, str]] = field(default_factory=list)  # (file, row, field)

    def row_of(self, file: str, source_id: str) -> int:
        """The spreadsheet row (header = 1) of a sourcedId in a file."""
        ids = [r.get("sourcedId") for r in self.tables[file]]
        return ids.index(source_id) + 2

    def files(self) -> dict[str, bytes]:
        out = {"manifest.csv": _csv(["propertyName", "value"], [
            {"propertyName": k, "value": v} for k, v in [
                ("manifest.version", "1.0"), ("oneroster.version", "1.2"),
                *((f"file.{name.removesuffix('.csv')}", mode)
                  for name, mode in self.modes.items())]])}
        for name, rows in self.tables.items():
            if self.modes.get(name) in ("bulk", "delta"):
                out[name] = _csv(HEADERS[name], rows)
        return out

    def zip(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in self.files().items():
                archive.writestr(name, content)
        return buffer.getvalue()


def _csv(header: list[str], rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _phone(rng: random.Random) -> str:
    while True:
        number = f"+1206{rng.randint(2_000_000, 9_999_999)}"
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            return number


def build(students: int = 40, seed: int = 7, broken: bool = True) -> Roster:
    rng = random.Random(seed)
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in HEADERS}
    tables["orgs.csv"] = [
        {"sourcedId": "org-district", "name": "Riverside Unified", "type": "district"},
        *({"sourcedId": sid, "name": name, "type": "school", "identifier": ident,
           "parentSourcedId": "org-district"} for sid, name, ident, _ in SCHOOLS)]
    roster = Roster({name: "bulk" for name in HEADERS}, tables)
    guardians: list[str] = []
    for i in range(students):
        sid = f"sis-s-{i:06d}"
        org, _, _, grades = SCHOOLS[i % len(SCHOOLS)]
        if guardians and i % 5 == 4:  # a sibling: the previous student's guardians
            mine = list(tables["users.csv"][-1]["agentSourcedIds"].split(","))
        else:
            mine = [f"sis-g-{len(guardians) + k:06d}" for k in range(1 + (i % 3 == 0))]
            for g in mine:
                _guardian(tables, g, org, rng)
                guardians.append(g)
        tables["users.csv"].append({
            "sourcedId": sid, "enabledUser": "true", "username": sid,
            "givenName": rng.choice(GIVEN), "familyName": rng.choice(FAMILY),
            "agentSourcedIds": ",".join(mine), "grades": rng.choice(grades),
            "primaryOrgSourcedId": org})
        tables["roles.csv"].append({"sourcedId": f"role-{sid}", "userSourcedId": sid,
                                    "roleType": "primary", "role": "student",
                                    "orgSourcedId": org})
        tables["enrollments.csv"].append({"sourcedId": f"enr-{sid}", "classSourcedId": "hr-1",
                                          "schoolSourcedId": org, "userSourcedId": sid,
                                          "role": "student", "primary": "true"})
    roster.guardians, roster.students = set(guardians), {
        r["sourcedId"] for r in tables["users.csv"] if r["sourcedId"].startswith("sis-s-")}
    teacher = {"sourcedId": "sis-t-000001", "enabledUser": "true", "givenName": "Theo",
               "familyName": "Teacher", "email": "theo@example.org"}
    tables["users.csv"].append(teacher)
    tables["roles.csv"].append({"sourcedId": "role-t1", "userSourcedId": "sis-t-000001",
                                "roleType": "primary", "role": "teacher",
                                "orgSourcedId": "org-lincoln"})
    if broken:
        _break(roster, rng)
    return roster


def _guardian(tables: dict[str, list[dict[str, Any]]], gid: str, org: str,
              rng: random.Random) -> None:
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    row = {"sourcedId": gid, "enabledUser": "true", "username": gid, "givenName": given,
           "familyName": family, "email": f"{gid}@example.org", "primaryOrgSourcedId": org}
    if rng.random() < 0.7:
        row["sms"] = _phone(rng)
    tables["users.csv"].append(row)
    tables["roles.csv"].append({"sourcedId": f"role-{gid}", "userSourcedId": gid,
                                "roleType": "primary",
                                "role": rng.choice(["parent", "parent", "guardian", "relative"]),
                                "orgSourcedId": org})
    tables["demographics.csv"].append({"sourcedId": gid,
                                       "metadata.preferredLanguage": rng.choice(LANGUAGES)})


def _break(roster: Roster, rng: random.Random) -> None:
    """Bad rows, each with the (file, row, field) the import must report."""
    users, t = roster.tables["users.csv"], roster.tables
    t["orgs.csv"].append({"sourcedId": "org-mars", "name": "Mars Academy", "type": "school"})
    roster.broken.append(("orgs.csv", len(t["orgs.csv"]) + 1, "name"))
    # A guardian whose email is not one (and no phone): its only student goes with it.
    _guardian(t, "sis-g-bad-email", "org-lincoln", rng)
    users[-1].update(email="not-an-email", sms="")
    roster.broken.append(("users.csv", len(users) + 1, "email"))
    users.append({"sourcedId": "sis-s-orphan", "givenName": "Ana", "familyName": "Ruiz",
                  "agentSourcedIds": "sis-g-bad-email", "grades": "02",
                  "primaryOrgSourcedId": "org-lincoln"})
    t["roles.csv"].append({"sourcedId": "role-orphan", "userSourcedId": "sis-s-orphan",
                           "role": "student", "orgSourcedId": "org-lincoln"})
    roster.broken.append(("users.csv", len(users) + 1, "agentSourcedIds"))
    # A guardian whose text number is not one.
    _guardian(t, "sis-g-bad-sms", "org-lincoln", rng)
    users[-1].update(sms="555-12")
    roster.broken.append(("users.csv", len(users) + 1, "sms"))
    # A guardian with no way to reach them.
    _guardian(t, "sis-g-unreachable", "org-lincoln", rng)
    users[-1].update(email="", sms="")
    roster.broken.append(("users.csv", len(users) + 1, "email"))
    # A student enrolled at a school the district does not have.
    good = sorted(roster.guardians)[0]
    users.append({"sourcedId": "sis-s-mars", "givenName": "Neil", "familyName": "Arm",
                  "agentSourcedIds": good, "grades": "04"})
    t["roles.csv"].append({"sourcedId": "role-mars", "userSourcedId": "sis-s-mars",
                           "role": "student", "orgSourcedId": "org-mars"})
    t["enrollments.csv"].append({"sourcedId": "enr-mars", "classSourcedId": "hr-9",
                                 "schoolSourcedId": "org-mars", "userSourcedId": "sis-s-mars",
                                 "role": "student"})
    roster.broken.append(("enrollments.csv", len(t["enrollments.csv"]) + 1, "schoolSourcedId"))
    # A row without its sourcedId.
    users.append({"givenName": "No", "familyName": "Id"})
    roster.broken.append(("users.csv", len(users) + 1, "sourcedId"))


if __name__ == "__main__":
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(sys.argv[1], "wb") as out:
        out.write(build(count).zip())
