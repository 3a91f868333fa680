"""OneRoster 1.2 CSV rosters (the bulk format SIS products export) read into families and their
students, pure (no database): the HTTP upload and the CLI share it; roster_sync.py writes it.

The files (1EdTech OneRoster CSV binding 1.2): ``manifest.csv`` (which files are there, each
``bulk``, ``delta`` or ``absent``), ``orgs.csv``, ``users.csv``, and where present
``roles.csv`` (1.2 keeps users' roles there), ``enrollments.csv`` and ``demographics.csv``.

- A *guardian* is a user whose role is parent, guardian or relative (roles.csv, or a 1.1-style
  ``role`` column of users.csv); each becomes a family. A *student* (role student) is linked to
  its guardians through ``agentSourcedIds`` (on the student, or on the guardian: either way).
  A student with several guardians is linked to the first one listed that loads.
- A student's school: its enrollment's ``schoolSourcedId``, else its role's ``orgSourcedId``,
  else its ``primaryOrgSourcedId``; that org must be a school of the district (its sourcedId,
  identifier or name equal to a school's id or name in the districts file). A family's school is
  its first student's.
- Phones (``sms``, else ``phone``) and emails are checked as a family registered over HTTP is;
  a guardian needs one of them. The preferred language comes from a ``preferredLanguage`` (or
  ``metadata.preferredLanguage``, ``metadata.language``, ``metadata.homeLanguage``) column of
  users.csv or demographics.csv where the SIS adds one; else the district's first language.
- Nothing of demographics.csv but a language column is read: Ensemble keeps no birth date, sex
  or race.

A bad row is reported (file, row as a spreadsheet shows it with the header as row 1, field) and
left out; the good rows load. A *failed file* (not UTF-8, not CSV, a required column missing, or
declared in the manifest but not there) loads nothing, and a ``bulk`` users file that failed
retires nobody.
"""

import csv
import hashlib
import io
import json
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email

from runtime.districts import District
from services.engagement.schemas import e164  # as families registered over HTTP are

GUARDIAN_ROLES = {"parent", "guardian", "relative"}
LANGUAGE_COLUMNS = ("preferredlanguage", "metadata.preferredlanguage", "metadata.language",
                    "metadata.homelanguage", "metadata.primarylanguage")
LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")
MAX_UNZIPPED_BYTES = 500_000_000
FILES = ("orgs.csv", "users.csv", "roles.csv", "enrollments.csv", "demographics.csv")
HEADER_REQUIRED = {
    "manifest.csv": ["propertyname", "value"],
    "orgs.csv": ["sourcedid", "name", "type"],
    "users.csv": ["sourcedid", "givenname", "familyname"],
    "roles.csv": ["sourcedid", "usersourcedid", "role", "orgsourcedid"],
    "enrollments.csv": ["sourcedid", "usersourcedid", "schoolsourcedid", "role"],
    "demographics.csv": ["sourcedid"],
}
GRADES = {"pk": -1, "pr": -1, "tk": 0, "kg": 0, "k": 0}


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
class Guardian:
    source_id: str
    row: int
    name: str
    phone: str | None
    email: str | None
    language: str
    students: list[str] = field(default_factory=list)  # sourcedIds, as the file links them
    raw: list[Any] = field(default_factory=list)  # the row's values as the file has them
    checked: bool = True  # False: the same as last time (``known``), not checked again

    def fingerprint(self, school_id: str) -> str:
        """What the family was made from (the file's values and its school): the same again
        is nothing to write."""
        return _digest([*self.raw, school_id])


@dataclass
class StudentRow:
    source_id: str
    row: int
    school_id: str
    grade: int | None
    guardians: list[str] = field(default_factory=list)  # sourcedIds, first = the family's

    def fingerprint(self, family_id: str) -> str:
        return _digest([self.school_id, self.grade, family_id])


@dataclass
class Roster:
    modes: dict[str, str] = field(default_factory=dict)  # file -> bulk | delta | absent
    guardians: dict[str, Guardian] = field(default_factory=dict)
    students: dict[str, StudentRow] = field(default_factory=dict)
    # Every sourcedId of a guardian or a student the users file has (loaded or not), and those
    # marked tobedeleted: what a bulk file leaves out, or marks, is retired.
    present: dict[str, set[str]] = field(default_factory=lambda: {"guardian": set(),
                                                                  "student": set()})
    deleted: dict[str, set[str]] = field(default_factory=lambda: {"guardian": set(),
                                                                  "student": set()})
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    failed_files: list[str] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        """A bulk users file that loaded: who is not in it has left the roster."""
        return self.modes.get("users.csv") == "bulk" and "users.csv" not in self.failed_files

    @property
    def usable(self) -> bool:
        return "users.csv" not in self.failed_files and self.modes.get("users.csv") in (
            "bulk", "delta")

    def report(self, limit: int = 500) -> dict[str, Any]:
        return {
            "modes": self.modes,
            "guardians": len(self.guardians),
            "students": len(self.students),
            "rows_read": self.rows_read,
            "failed_files": self.failed_files,
            "error_count": len(self.errors),
            "errors": [asdict(e) for e in self.errors[:limit]],
            "warning_count": len(self.warnings),
            "warnings": [asdict(w) for w in self.warnings[:limit]],
        }


Row = dict[str, Any]


class FileFailed(Exception):
    pass


def _digest(values: list[Any]) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


# --- the package ---------------------------------------------------------------------------


def files_of_zip(data: bytes) -> dict[str, bytes]:
    """The CSV files of a OneRoster zip by lower-case name (folders inside are ignored)."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    members = [info for info in archive.infolist() if not info.is_dir()]
    unpacked = sum(info.file_size for info in members)
    if unpacked > MAX_UNZIPPED_BYTES:
        raise ValueError(f"{unpacked} bytes unzipped, over {MAX_UNZIPPED_BYTES}")
    return {info.filename.rsplit("/", 1)[-1].lower(): archive.read(info) for info in members
            if info.filename.lower().endswith(".csv")}


def zip_folder(folder: Path) -> bytes:
    """A folder of OneRoster CSV files as the zip the HTTP upload takes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.glob("*.csv")):
            archive.write(path, path.name)
    return buffer.getvalue()


def read_zip(data: bytes, district: District, known: dict[str, str] | None = None) -> Roster:
    try:
        files = files_of_zip(data)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as exc:
        roster = Roster(failed_files=["(upload)"])
        roster.errors.append(Problem("(upload)", None, None,
                                     f"not a zip of OneRoster CSV files: {exc}"))
        return roster
    return read(files, district, known)


def read(files: dict[str, bytes], district: District,
         known: dict[str, str] | None = None) -> Roster:
    """``known``: the fingerprints of the guardians the last import loaded (roster_sync); a
    guardian whose row is the same again is not checked again (a nightly re-sync)."""
    roster = Roster()
    tables = _tables(roster, files)
    if "users.csv" not in tables or roster.modes.get("users.csv") not in ("bulk", "delta"):
        if not roster.errors:
            roster.failed_files.append("users.csv")
            roster.errors.append(Problem("manifest.csv", None, "file.users",
                                         "file.users is absent: there is nobody to load"))
        return roster
    schools = _schools(roster, tables.get("orgs.csv", []), district)
    roles = _roles(tables)
    languages = _languages(tables.get("demographics.csv", []))
    users = tables["users.csv"]
    places = _places(tables)
    guardians: list[Row] = []
    for row in users:
        if not row.get("sourcedid"):
            roster.errors.append(Problem("users.csv", row["_row"], "sourcedId",
                                         "required value missing"))
            continue
        role = roles.get(row["sourcedid"]) or (row.get("role") or "").lower()
        languages.setdefault(row["sourcedid"], _language_of(row))
        kind = ("guardian" if role in GUARDIAN_ROLES else "student" if role == "student"
                else None)
        if kind is None:
            continue
        roster.present[kind].add(row["sourcedid"])
        if (row.get("status") or "").lower() == "tobedeleted":
            roster.deleted[kind].add(row["sourcedid"])
        elif kind == "guardian":
            guardians.append(row)
        else:
            _student(roster, row, schools, places)
    if users and not roster.present["guardian"] | roster.present["student"]:
        # Read on, a bulk file would retire everyone: refused as a whole instead.
        roster.failed_files.append("users.csv")
        roster.errors.append(Problem("users.csv", None, "role", (
            "file not loaded: no user has a role; OneRoster 1.2 keeps roles in roles.csv "
            "(file.roles bulk in manifest.csv), 1.1 in a role column of users.csv")))
        return roster
    children = _link(roster, users, {row["sourcedid"] for row in guardians})
    for row in guardians:
        _guardian(roster, row, languages, district, children.get(row["sourcedid"], []),
                  known or {})
    return roster


def _tables(roster: Roster, files: dict[str, bytes]) -> dict[str, list[Row]]:
    """The manifest's modes, and each file it declares, parsed (or failed, with why)."""
    if "manifest.csv" not in files:
        roster.failed_files.append("manifest.csv")
        roster.errors.append(Problem("manifest.csv", None, None, (
            "file not loaded: missing; a OneRoster package names its files and their modes "
            "(bulk, delta, absent) in manifest.csv")))
        return {}
    try:
        manifest = {r["propertyname"]: (r.get("value") or "").strip().lower()
                    for r in _parse("manifest.csv", files["manifest.csv"])}
    except FileFailed as exc:
        roster.failed_files.append("manifest.csv")
        roster.errors.append(Problem("manifest.csv", None, None, f"file not loaded: {exc}"))
        return {}
    version = manifest.get("oneroster.version")
    if version not in ("1.2", "1.1"):
        roster.warnings.append(Problem("manifest.csv", None, "oneroster.version", (
            f"{version!r}: read as OneRoster 1.2")))
    tables: dict[str, list[Row]] = {}
    for name in FILES:
        mode = manifest.get(f"file.{name.removesuffix('.csv')}".lower(), "absent")
        roster.modes[name] = mode
        if mode not in ("bulk", "delta"):
            continue
        if name not in files:
            roster.failed_files.append(name)
            roster.errors.append(Problem(name, None, None, (
                f"file not loaded: the manifest says {mode} but the package has no {name}")))
            continue
        try:
            tables[name] = _parse(name, files[name])
            roster.rows_read[name] = len(tables[name])
        except FileFailed as exc:
            roster.failed_files.append(name)
            roster.errors.append(Problem(name, None, None, f"file not loaded: {exc}"))
    return tables


def _parse(name: str, content: bytes) -> list[Row]:
    """Rows by lower-case column, values stripped (empty: None), each with its ``_row``."""
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
            row: Row = {"_row": number}
            for column, value in zip(header, values, strict=False):
                row[column] = value.strip() or None
            rows.append(row)
        return rows
    except csv.Error as exc:
        raise FileFailed(f"not CSV: {exc}") from exc


def _schools(roster: Roster, orgs: list[Row], district: District) -> dict[str, str]:
    """Org sourcedId -> the district's school id. A school org that names no school of the
    district is an error (its students are then refused with it)."""
    by_name: dict[str, str] = {}
    for school in district.schools:
        by_name[school.id.lower()] = school.id
        by_name[school.name.lower()] = school.id
    found: dict[str, str] = {}
    for row in orgs:
        if row.get("sourcedid") is None:
            roster.errors.append(Problem("orgs.csv", row["_row"], "sourcedId",
                                         "required value missing"))
            continue
        if (row.get("status") or "").lower() == "tobedeleted":
            continue
        keys = [row.get(k) for k in ("identifier", "sourcedid", "name")]
        match = next((by_name[k.lower()] for k in keys if k and k.lower() in by_name), None)
        if match:
            found[row["sourcedid"]] = match
        elif (row.get("type") or "").lower() == "school":
            roster.errors.append(Problem("orgs.csv", row["_row"], "name", (
                f"org {row['sourcedid']} ({row.get('name')}) is no school of {district.name}: "
                "its sourcedId, identifier or name must be a school's id or name in the "
                f"districts file ({', '.join(s.id for s in district.schools[:5])}...)")))
    return found


def _roles(tables: dict[str, list[Row]]) -> dict[str, str]:
    """Each user's role from roles.csv (a primary role first), active rows only."""
    roles: dict[str, str] = {}
    rows = sorted(tables.get("roles.csv", []),
                  key=lambda r: (r.get("roletype") or "").lower() != "primary")
    for row in rows:
        if (row.get("status") or "").lower() != "tobedeleted" and row.get("usersourcedid"):
            roles.setdefault(row["usersourcedid"], (row.get("role") or "").lower())
    return roles


def _language_of(row: Row) -> str | None:
    return next((row[c] for c in LANGUAGE_COLUMNS if row.get(c)), None)


def _languages(demographics: list[Row]) -> dict[str, str | None]:
    return {row["sourcedid"]: _language_of(row) for row in demographics
            if row.get("sourcedid") and _language_of(row)}


def _guardian(roster: Roster, row: Row, languages: dict[str, str | None], district: District,
              students: list[str], known: dict[str, str]) -> None:
    def bad(column: str, message: str) -> None:
        roster.errors.append(Problem("users.csv", row["_row"], column, message))

    source = row["sourcedid"]
    given = row.get("preferredgivenname") or row.get("givenname")
    name = " ".join(p for p in (given, row.get("familyname")) if p)
    column = "sms" if row.get("sms") else "phone"
    email, phone = row.get("email"), row.get(column)
    language = languages.get(source) or district.languages[0]
    guardian = Guardian(source_id=source, row=row["_row"], name=name, phone=phone, email=email,
                        language=language, students=students,
                        raw=[name, email, column, phone, language])
    school = next((roster.students[s].school_id for s in students), None)
    if school is not None and known.get(source) == guardian.fingerprint(school):
        guardian.checked = False  # as loaded last time: nothing to check or write
        roster.guardians[source] = guardian
        return
    if not name:
        return bad("givenName", "a guardian needs a name")
    if len(name) > 200:
        return bad("givenName", "name longer than 200 characters")
    if email is not None:
        try:
            guardian.email = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            return bad("email", f"{email!r} is not an email address: {exc}")
    if phone is not None:
        try:
            guardian.phone = e164(phone)
        except ValueError as exc:
            return bad(column, f"{phone!r}: {exc}")
    if phone is None and email is None:
        return bad("email", "a guardian needs an email, an sms or a phone number to be reached")
    if not LANGUAGE.match(language) or len(language) > 16:
        roster.warnings.append(Problem("users.csv", row["_row"], "preferredLanguage", (
            f"{language!r} is not a language code (ISO 639, BCP 47); "
            f"{district.languages[0]} used")))
        language = district.languages[0]
    guardian.language = language.replace("_", "-")
    roster.guardians[source] = guardian


Place = tuple[str, int, str, str]  # the file, row and field naming a student's school; the org


def _places(tables: dict[str, list[Row]]) -> dict[str, Place]:
    """Where each student's school is named: its enrollment, else its role (first rows win)."""
    places: dict[str, Place] = {}
    for role in tables.get("roles.csv", []):
        if role.get("usersourcedid") and role.get("orgsourcedid") and (
                role.get("status") or "").lower() != "tobedeleted":
            places.setdefault(role["usersourcedid"], (
                "roles.csv", role["_row"], "orgSourcedId", role["orgsourcedid"]))
    enrolled: dict[str, Place] = {}
    for row in tables.get("enrollments.csv", []):
        if row.get("usersourcedid") and row.get("schoolsourcedid") and (
                row.get("status") or "").lower() != "tobedeleted":
            enrolled.setdefault(row["usersourcedid"], (
                "enrollments.csv", row["_row"], "schoolSourcedId", row["schoolsourcedid"]))
    return places | enrolled


def _student(roster: Roster, row: Row, schools: dict[str, str],
             places: dict[str, Place]) -> None:
    source = row["sourcedid"]
    where = places.get(source)
    if where is None and row.get("primaryorgsourcedid"):
        where = ("users.csv", row["_row"], "primaryOrgSourcedId", row["primaryorgsourcedid"])
    if where is None:
        roster.errors.append(Problem("users.csv", row["_row"], "primaryOrgSourcedId", (
            "no school: the student has no enrollment, role or primary org naming one")))
        return
    file, number, column, org = where
    if org not in schools:
        roster.errors.append(Problem(file, number, column, (
            f"org {org} is not a school of the district (see orgs.csv); student {source} "
            "not loaded")))
        return
    roster.students[source] = StudentRow(source_id=source, row=row["_row"],
                                         school_id=schools[org], grade=_grade(row.get("grades")))


def _grade(value: str | None) -> int | None:
    """OneRoster grades (CEDS: PK, KG, 01-12...): the first, as Ensemble counts (-1 pre-K)."""
    if not value:
        return None
    first = value.split(",")[0].strip().lower()
    if first in GRADES:
        return GRADES[first]
    return int(first) if first.isdigit() and 1 <= int(first) <= 12 else None


def _link(roster: Roster, users: list[Row], guardians: set[str]) -> dict[str, list[str]]:
    """Students to guardians through agentSourcedIds, written on either side; each guardian's
    students, in the file's order."""
    for row in users:
        agents = [a.strip() for a in (row.get("agentsourcedids") or "").split(",") if a.strip()]
        source = row.get("sourcedid")
        if source in roster.students:
            for agent in agents:
                if agent not in roster.students[source].guardians:
                    roster.students[source].guardians.append(agent)
        elif source in guardians:
            for agent in agents:
                if agent in roster.students and source not in roster.students[agent].guardians:
                    roster.students[agent].guardians.append(source)
    children: dict[str, list[str]] = {}
    for student in roster.students.values():
        for guardian in student.guardians:
            children.setdefault(guardian, []).append(student.source_id)
    return children
