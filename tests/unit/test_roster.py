"""OneRoster 1.2 CSV rosters into families and students: the reader on generated rosters with
known bad rows (tests/data/oneroster/generate.py), and the sync on a real unit of work over
in-memory SQLite (support.uow.HandlerBench): a first import, a re-import of the same file that
writes and publishes nothing, a bulk file's absences and tobedeleted rows retiring, a delta
applying only what it carries."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from support.generators import roster as gen
from support.uow import HandlerBench

from runtime.districts import District, load_districts
from services.engagement import roster, roster_sync
from services.engagement.tables import Base, Family, RosterRecord, Student

DISTRICT: District = load_districts(
    Path(__file__).parents[2] / "deploy" / "districts.toml").get("d001")  # type: ignore[assignment]
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)



def _read(data: Any) -> roster.Roster:
    return roster.read(data.files(), DISTRICT)


def test_every_bad_row_is_named_by_file_row_and_field_and_the_good_rows_load() -> None:
    data = gen.build(students=40)
    read = _read(data)
    assert set(read.guardians) == data.guardians
    assert set(read.students) == data.students | {"sis-s-orphan"}  # its family fails in sync
    found = {(e.file, e.row, e.field) for e in read.errors}
    assert found == set(data.broken) - {("users.csv", data.row_of("users.csv", "sis-s-orphan"),
                                         "agentSourcedIds")}
    assert read.failed_files == [] and read.modes["users.csv"] == "bulk"
    assert "sis-t-000001" not in read.guardians | read.students  # a teacher is no family


def test_guardians_languages_schools_and_grades_are_read_as_the_file_gives_them() -> None:
    data = gen.build(students=10, broken=False)
    read = _read(data)
    languages = {r["sourcedId"]: r["metadata.preferredLanguage"]
                 for r in data.tables["demographics.csv"]}
    assert {g.source_id: g.language for g in read.guardians.values()} == languages
    assert {s.school_id for s in read.students.values()} == {"lincoln-es", "roosevelt-ms"}
    assert all(s.grade is not None and -1 <= s.grade <= 12 for s in read.students.values())
    assert all(g.phone is None or g.phone.startswith("+1206") for g in read.guardians.values())
    # A sibling shares the guardians of the student before it.
    assert read.students["sis-s-000004"].guardians == read.students["sis-s-000003"].guardians


def test_a_one_dot_one_style_users_file_with_roles_in_it_is_read_too() -> None:
    files = {
        "manifest.csv": b"propertyName,value\noneroster.version,1.1\nfile.orgs,bulk\n"
                        b"file.users,bulk\n",
        "orgs.csv": b"sourcedId,name,type\no1,Lincoln Elementary,school\n",
        "users.csv": b"sourcedId,role,givenName,familyName,email,agentSourcedIds,orgSourcedIds,"
                     b"primaryOrgSourcedId\n"
                     b"p1,parent,Rosa,Diaz,rosa@example.org,s1,o1,o1\n"
                     b"s1,student,Leo,Diaz,,,o1,o1\n",
    }
    read = roster.read(files, DISTRICT)
    assert read.errors == []
    assert read.students["s1"].guardians == ["p1"]  # linked from the guardian's side
    assert read.guardians["p1"].students == ["s1"]


def test_a_package_without_its_manifest_or_a_declared_file_fails_as_a_whole() -> None:
    data = gen.build(students=5, broken=False)
    files = data.files()
    del files["manifest.csv"]
    read = roster.read(files, DISTRICT)
    assert read.failed_files == ["manifest.csv"] and not read.usable
    files = data.files()
    del files["users.csv"]
    read = roster.read(files, DISTRICT)
    assert "users.csv" in read.failed_files and not read.usable
    assert any("no users.csv" in e.message for e in read.errors)
    files = data.files()
    files["users.csv"] = b"sourcedId,email\nx,y\n"
    read = roster.read(files, DISTRICT)
    assert [(e.file, e.message) for e in read.errors] == [
        ("users.csv", "file not loaded: header lacks column(s) givenname, familyname")]


def test_a_users_file_without_roles_retires_nobody() -> None:
    data = gen.build(students=5, broken=False)
    data.modes["roles.csv"] = "absent"  # users.csv (1.2) has no role column: nobody has a role
    read = _read(data)
    assert not read.usable and not read.full and read.failed_files == ["users.csv"]
    assert "no user has a role" in read.errors[0].message


async def _sync(bench: HandlerBench, data: Any) -> tuple[roster.Roster, Any, list[Any]]:
    before = len(bench.emitted)
    known = await roster_sync.known_guardians(bench, DISTRICT)
    read = roster.read(data.files(), DISTRICT, known)
    result = await roster_sync.import_roster(bench, DISTRICT, read, NOW)
    return read, result, bench.emitted[before:]


async def _count(bench: HandlerBench, model: Any, *where: Any) -> int:
    async with bench.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where))
                   or 0)


async def test_a_first_import_then_the_same_file_again_writes_and_publishes_nothing() -> None:
    data = gen.build(students=40)
    async with HandlerBench(Base.metadata) as bench:
        read, result, events = await _sync(bench, data)
        assert result.families_created == len(data.guardians)
        assert result.students_created == len(data.students)
        orphan = ("users.csv", data.row_of("users.csv", "sis-s-orphan"), "agentSourcedIds")
        assert orphan in {(e.file, e.row, e.field) for e in read.errors}
        assert len(events) == len(data.guardians)
        assert {e.type for e in events} == {"org.ensemble.engagement.family_registered.v1"}
        # Never a SIS id (nor a name, a phone, an email) in an event.
        published = json.dumps([e.data for e in events])
        assert "sis-" not in published and "@example.org" not in published
        assert await _count(bench, Student) == len(data.students)
        refs = {r.target_id for r in await _records(bench, "student")}
        assert all(ref.startswith("stu-") and "sis" not in ref for ref in refs)

        _, again, events = await _sync(bench, data)
        assert events == []
        assert (again.families_created, again.families_updated, again.students_created,
                again.students_updated) == (0, 0, 0, 0)
        assert again.families_unchanged == len(data.guardians)
        assert again.students_unchanged == len(data.students)
        assert await _count(bench, Family) == len(data.guardians)


async def _records(bench: HandlerBench, kind: str) -> list[RosterRecord]:
    async with bench.db.transaction() as session:
        return list((await session.scalars(select(RosterRecord).where(
            RosterRecord.kind == kind))).all())


async def test_a_changed_bulk_file_updates_retires_and_adds_only_what_changed() -> None:
    data = gen.build(students=20, broken=False)
    async with HandlerBench(Base.metadata) as bench:
        await _sync(bench, data)
        users = {r["sourcedId"]: r for r in data.tables["users.csv"]}
        users["sis-g-000000"]["email"] = "new-address@example.org"  # contact only: no event
        demographics = {r["sourcedId"]: r for r in data.tables["demographics.csv"]}
        old = demographics["sis-g-000001"]["metadata.preferredLanguage"]
        demographics["sis-g-000001"]["metadata.preferredLanguage"] = "ar" if old != "ar" else "vi"
        users["sis-s-000002"]["status"] = "tobedeleted"
        gone = "sis-s-000005"
        data.tables["users.csv"] = [r for r in data.tables["users.csv"] if r["sourcedId"] != gone]
        _, result, events = await _sync(bench, data)
        assert (result.families_updated, result.students_retired) == (2, 2)
        assert result.families_created == result.students_created == 0
        assert result.students_updated == 0
        assert [e.data["preferred_language"] for e in events] == [
            demographics["sis-g-000001"]["metadata.preferredLanguage"]]
        assert await _count(bench, Student) == len(data.students) - 2
        async with bench.db.transaction() as session:
            emails = set((await session.scalars(select(Family.email))).all())
        assert "new-address@example.org" in emails and "sis-g-000000@example.org" not in emails


async def test_a_delta_applies_only_what_it_carries_and_retires_only_what_it_marks() -> None:
    data = gen.build(students=20, broken=False)
    async with HandlerBench(Base.metadata) as bench:
        await _sync(bench, data)
        delta = gen.build(students=20, broken=False)
        delta.modes = {name: ("delta" if name == "users.csv" else "absent")
                       for name in delta.modes}
        keep = {"sis-g-000000", "sis-s-000001"}
        delta.tables["users.csv"] = [
            {**r, "status": "tobedeleted" if r["sourcedId"] == "sis-s-000001" else "active",
             "sms": "+12065550123" if r["sourcedId"] == "sis-g-000000" else r.get("sms")}
            for r in delta.tables["users.csv"] if r["sourcedId"] in keep]
        # Roles come from roles.csv, absent here: a delta may carry a 1.1-style role column.
        for row in delta.tables["users.csv"]:
            row["role"] = "parent" if row["sourcedId"].startswith("sis-g") else "student"
        gen.HEADERS["users.csv"].append("role")
        try:
            read = _read(delta)
        finally:
            gen.HEADERS["users.csv"].remove("role")
        assert not read.full
        result = await roster_sync.import_roster(bench, DISTRICT, read, NOW)
        assert result is not None
        assert (result.families_updated, result.students_retired) == (1, 1)
        assert result.families_retired == 0 and result.students_created == 0
        assert await _count(bench, Student) == len(data.students) - 1
        assert await _count(bench, Family, Family.retired_at.is_not(None)) == 0


async def test_a_guardian_absent_from_a_bulk_file_is_retired_and_comes_back_when_listed() -> None:
    data = gen.build(students=10, broken=False)
    async with HandlerBench(Base.metadata) as bench:
        await _sync(bench, data)
        full = data.tables["users.csv"]
        data.tables["users.csv"] = [r for r in full if r["sourcedId"] != "sis-g-000000"]
        _, result, _ = await _sync(bench, data)
        assert result.families_retired == 1
        assert await _count(bench, Family, Family.retired_at.is_not(None)) == 1
        data.tables["users.csv"] = full
        _, result, events = await _sync(bench, data)
        assert result.families_updated == 1 and len(events) == 1  # announced again
        assert await _count(bench, Family, Family.retired_at.is_not(None)) == 0


async def test_a_nightly_re_read_checks_only_the_rows_that_changed() -> None:
    data = gen.build(students=10, broken=False)
    async with HandlerBench(Base.metadata) as bench:
        await _sync(bench, data)
        users = {r["sourcedId"]: r for r in data.tables["users.csv"]}
        users["sis-g-000000"]["email"] = "no-longer-an-address"
        users["sis-g-000001"]["familyName"] = "Renamed"
        known = await roster_sync.known_guardians(bench, DISTRICT)
        assert set(known) == data.guardians
        read = roster.read(data.files(), DISTRICT, known)
        assert {g for g, guardian in read.guardians.items() if guardian.checked} == {
            "sis-g-000001"}
        assert [(e.file, e.row, e.field) for e in read.errors] == [
            ("users.csv", data.row_of("users.csv", "sis-g-000000"), "email")]
        result = await roster_sync.import_roster(bench, DISTRICT, read, NOW)
        assert result is not None and result.families_updated == 1
        assert result.families_unchanged == len(data.guardians) - 2  # the bad row keeps its own
