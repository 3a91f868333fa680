"""A roster (roster.py) written into families and students: a sync, not a load.

- Each SIS person is remembered in ``roster_records`` with what Ensemble made of them (a family
  id, a student_ref) and a fingerprint of what was loaded: the same row again writes nothing and
  publishes nothing; a changed one updates its family or student in place.
- A new family is announced with ``FamilyRegistered`` (ids and language only), and again when
  its language or school changes. Students are never in an event; their ``student_ref`` is a
  random pseudonym, linked to the SIS id only here.
- Retired: a guardian or student marked ``tobedeleted``, or (a ``bulk`` users file) not in the
  file at all. A retired family keeps its history and gets ``retired_at``; a retired student is
  unlinked. A delta file retires only what it marks.
- A student whose guardians all failed or are unknown, or a guardian linked to no student (and
  not already placed by an earlier import), is reported and left out.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from contracts.events import FamilyRegistered
from contracts.taxonomy import Channel
from runtime.districts import District
from runtime.outbox import UnitOfWork
from services.engagement.roster import Guardian, Problem, Roster
from services.engagement.tables import Family, RosterRecord, Student

CHUNK = 500


@dataclass
class SyncResult:
    families_created: int = 0
    families_updated: int = 0
    families_unchanged: int = 0
    families_retired: int = 0
    families_erased: int = 0  # erased on request: the roster never fills them again
    students_created: int = 0
    students_updated: int = 0
    students_unchanged: int = 0
    students_retired: int = 0
    events: int = 0


@dataclass
class _Record:
    """A roster_records row as read (plain values: a district's 100,000 rows load in a fraction
    of the time ORM objects take); changed ones are written back together."""

    kind: str
    source_id: str
    target_id: str
    fingerprint: str
    status: str
    dirty: bool = False

    def set(self, **values: str) -> None:
        for name, value in values.items():
            setattr(self, name, value)
        self.dirty = True


@dataclass
class _Sync:
    uow: UnitOfWork
    district: District
    roster: Roster
    now: datetime
    records: dict[tuple[str, str], _Record]
    result: SyncResult

    def record(self, kind: str, source_id: str, target_id: str, fingerprint: str) -> None:
        """The new person's record (inserted together at the end, in bulk)."""
        self.new_records.append({
            "district_id": self.district.id, "kind": kind, "source_id": source_id,
            "target_id": target_id, "fingerprint": fingerprint, "status": "active",
            "updated_at": self.now})

    def announce(self, family_id: str, school_id: str, language: str, channel: str) -> None:
        self.uow.emit(FamilyRegistered(family_id=family_id, school_id=school_id,
                                       preferred_language=language,
                                       preferred_channel=Channel(channel)),
                      district=self.district.id, school=school_id, subject=family_id)
        self.result.events += 1

    def __post_init__(self) -> None:
        self.new_records: list[dict[str, Any]] = []
        self.new_families: list[dict[str, Any]] = []
        self.new_students: list[dict[str, Any]] = []


async def _load(session: Any, model: Any, column: Any, keys: Sequence[Any]) -> list[Any]:
    rows: list[Any] = []
    for i in range(0, len(keys), CHUNK):
        rows += (await session.scalars(select(model).where(column.in_(keys[i:i + CHUNK])))).all()
    return rows


async def sync(uow: UnitOfWork, district: District, roster: Roster,
               now: datetime) -> SyncResult:
    """Apply the roster's good rows (the caller's unit of work makes it all or nothing)."""
    t = RosterRecord.__table__
    records = {(r.kind, r.source_id): _Record(*r) for r in await uow.session.execute(
        select(t.c.kind, t.c.source_id, t.c.target_id, t.c.fingerprint, t.c.status)
        .where(t.c.district_id == district.id))}
    state = _Sync(uow, district, roster, now, records, SyncResult())
    await _guardians(state)
    await _students(state)
    await _retire(state)
    session = uow.session
    changed = [{"district_id": district.id, "kind": r.kind, "source_id": r.source_id,
                "target_id": r.target_id, "fingerprint": r.fingerprint, "status": r.status,
                "updated_at": now} for r in records.values() if r.dirty]
    for i in range(0, len(changed), CHUNK):
        await session.execute(update(RosterRecord), changed[i:i + CHUNK])
    for model, rows in ((Family, state.new_families), (Student, state.new_students),
                        (RosterRecord, state.new_records)):
        for i in range(0, len(rows), CHUNK):
            await session.execute(insert(model), rows[i:i + CHUNK])
    return state.result


def _channel(email: str | None, phone: str | None, current: str | None = None) -> str:
    if (current == "sms" and phone) or (current == "email" and email):
        return current
    return "email" if email else "sms"


async def _guardians(state: _Sync) -> None:
    roster, session = state.roster, state.uow.session
    todo: list[tuple[Guardian, str | None]] = []
    for guardian in roster.guardians.values():
        record = state.records.get(("guardian", guardian.source_id))
        school = next((roster.students[s].school_id for s in guardian.students
                       if s in roster.students), None)
        if record is not None and record.status == "active" and school is not None \
                and record.fingerprint == guardian.fingerprint(school):
            state.result.families_unchanged += 1
        else:
            todo.append((guardian, school))
    ids = [state.records[("guardian", g.source_id)].target_id for g, _ in todo
           if ("guardian", g.source_id) in state.records]
    families = {f.id: f for f in await _load(session, Family, Family.id, ids)}
    for guardian, school in todo:
        if not guardian.checked:  # read as unchanged against these very records
            state.result.families_unchanged += 1
            continue
        record = state.records.get(("guardian", guardian.source_id))
        family = families.get(record.target_id) if record else None
        school = school or (family.school_id if family else None)
        if school is None:
            roster.errors.append(Problem("users.csv", guardian.row, "agentSourcedIds", (
                f"guardian {guardian.source_id} is linked to no student loaded: a family "
                "belongs to the school of its students")))
            continue
        if family is not None and family.erased_at is not None:
            # A district admin erased this family (docs/privacy.md): a later roster, changed or
            # not, must not write its name and contacts back. The SIS should drop it too.
            state.result.families_erased += 1
            continue
        fingerprint = guardian.fingerprint(school)
        if record is not None and record.status == "active" and family is not None \
                and record.fingerprint == fingerprint:
            state.result.families_unchanged += 1
            continue
        if family is None:
            _new_family(state, guardian, school, fingerprint, record)
            continue
        _update_family(state, family, guardian, school)
        record.set(fingerprint=fingerprint, status="active")


def _update_family(state: _Sync, family: Family, guardian: Guardian, school: str) -> None:
    announce = (family.preferred_language != guardian.language
                or family.school_id != school or family.retired_at is not None)
    family.name, family.phone, family.email = guardian.name, guardian.phone, guardian.email
    family.preferred_language, family.school_id = guardian.language, school
    family.preferred_channel = _channel(guardian.email, guardian.phone, family.preferred_channel)
    family.email_consent = family.email_consent and guardian.email is not None
    family.retired_at = None
    state.result.families_updated += 1
    if announce:
        state.announce(family.id, school, family.preferred_language, family.preferred_channel)


def _new_family(state: _Sync, guardian: Guardian, school: str, fingerprint: str,
                record: _Record | None) -> None:
    family_id = str(uuid.uuid4())
    channel = _channel(guardian.email, guardian.phone)
    # The SIS's contacts give no consent to texts: a family gives that itself.
    state.new_families.append({
        "id": family_id, "district_id": state.district.id, "school_id": school,
        "name": guardian.name, "preferred_language": guardian.language, "phone": guardian.phone,
        "email": guardian.email, "preferred_channel": channel, "sms_consent": False,
        "email_consent": guardian.email is not None, "sms_opted_out": False,
        "email_opted_out": False, "created_at": state.now, "retired_at": None})
    if record is None:
        state.record("guardian", guardian.source_id, family_id, fingerprint)
    else:  # its family was deleted since: made again
        record.set(target_id=family_id, fingerprint=fingerprint, status="active")
    state.result.families_created += 1
    state.announce(family_id, school, guardian.language, channel)


async def _students(state: _Sync) -> None:
    roster, session = state.roster, state.uow.session
    made = {r["source_id"]: r["target_id"] for r in state.new_records if r["kind"] == "guardian"}
    for student in roster.students.values():
        family_id = None
        for guardian in student.guardians:
            record = state.records.get(("guardian", guardian))
            family_id = made.get(guardian) or (
                record.target_id if record is not None and record.status == "active" else None)
            if family_id:
                break
        if family_id is None:
            roster.errors.append(Problem("users.csv", student.row, "agentSourcedIds", (
                f"student {student.source_id} has no guardian loaded (parent, guardian or "
                "relative with a phone or an email): a student is reached through its family")))
            continue
        fingerprint = student.fingerprint(family_id)
        record = state.records.get(("student", student.source_id))
        if record is not None and record.status == "active" and record.fingerprint == fingerprint:
            state.result.students_unchanged += 1
            continue
        values = {"family_id": family_id, "school_id": student.school_id, "grade": student.grade}
        if record is None:
            ref = f"stu-{uuid.uuid4().hex}"
            state.new_students.append({"district_id": state.district.id, "student_ref": ref,
                                       **values})
            state.record("student", student.source_id, ref, fingerprint)
            state.result.students_created += 1
            continue
        row = await session.get(Student, (state.district.id, record.target_id))
        if row is None:
            state.new_students.append({"district_id": state.district.id,
                                       "student_ref": record.target_id, **values})
        else:
            row.family_id, row.school_id, row.grade = family_id, student.school_id, student.grade
        record.set(fingerprint=fingerprint, status="active")
        state.result.students_updated += 1


async def _retire(state: _Sync) -> None:
    """Who the file marks tobedeleted, and (a bulk users file) who it leaves out."""
    roster, session = state.roster, state.uow.session
    gone: dict[str, list[_Record]] = {"guardian": [], "student": []}
    for (kind, source_id), record in state.records.items():
        if record.status != "active":
            continue
        if source_id in roster.deleted[kind] or (
                roster.full and source_id not in roster.present[kind]):
            gone[kind].append(record)
    refs = [r.target_id for r in gone["student"]]
    families = [r.target_id for r in gone["guardian"]]
    for i in range(0, max(len(refs), len(families)), CHUNK):
        if refs[i:i + CHUNK]:
            await session.execute(delete(Student).where(
                Student.district_id == state.district.id,
                Student.student_ref.in_(refs[i:i + CHUNK])))
        if families[i:i + CHUNK]:
            await session.execute(update(Family).where(Family.id.in_(families[i:i + CHUNK]))
                                  .values(retired_at=state.now))
    for kind, records in gone.items():
        for record in records:
            record.set(status="retired")
        setattr(state.result, f"{'families' if kind == 'guardian' else 'students'}_retired",
                len(records))


async def known_guardians(runtime: Any, district: District) -> dict[str, str]:
    """The fingerprints of the district's active guardians, for ``roster.read`` to leave the
    rows that are the same again unchecked."""
    t = RosterRecord.__table__
    async with runtime.unit_of_work() as uow:
        return {source: fingerprint for source, fingerprint in await uow.session.execute(
            select(t.c.source_id, t.c.fingerprint).where(
                t.c.district_id == district.id, t.c.kind == "guardian",
                t.c.status == "active"))}


async def import_roster(runtime: Any, district: District, roster: Roster,
                        now: datetime) -> SyncResult | None:
    """Sync a read roster in one unit of work (all or nothing), if it has anything to apply."""
    if not roster.usable:
        return None
    async with runtime.unit_of_work() as uow:
        return await sync(uow, district, roster, now)
