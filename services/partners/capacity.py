"""Open slots per service and school, reserved and released atomically: never negative, also
when two referrals race for the last slot. The database decides with a conditional UPDATE: on
PostgreSQL the second transaction waits for the first's row lock, re-reads the row and finds no
slot (rowcount 0); on SQLite writers are serialized (BEGIN IMMEDIATE). CHECK constraints on the
table are the last guard."""

from sqlalchemy import bindparam, select, update

from runtime.db import advisory_locks
from runtime.errors import Conflict
from runtime.outbox import UnitOfWork
from services.partners.tables import ServiceCapacity

_cap = ServiceCapacity.__table__
_THIS = (_cap.c.service_id == bindparam("sid"), _cap.c.school_id == bindparam("school"))
# Built once: a match only binds values (see assign.py).
_RESERVE = update(_cap).where(*_THIS, _cap.c.reserved < _cap.c.capacity).values(
    reserved=_cap.c.reserved + 1)
_RELEASE = update(_cap).where(*_THIS, _cap.c.reserved > 0).values(reserved=_cap.c.reserved - 1)


async def lock_capacity_and_stats(uow: UnitOfWork) -> None:
    """On PostgreSQL a transaction takes this one lock before the first capacity or stats row
    it changes, and holds it to its commit. Two copies of partners each apply a batch of events
    in one transaction; without it they locked capacity and stats rows in opposite orders and
    deadlocked (PostgreSQL breaks one after a second and the batch is retried: seconds per
    referral with two copies). SQLite has one writer at a time anyway."""
    session = uow.session
    if not session.info.get("capacity_locked"):  # once per transaction: it is held to the end
        await advisory_locks(session, ["ensemble-partners-capacity"])
        session.info["capacity_locked"] = True


async def reserve(uow: UnitOfWork, service_id: str, school_id: str) -> bool:
    await lock_capacity_and_stats(uow)
    connection = await uow.session.connection()
    result = await connection.execute(_RESERVE, {"sid": service_id, "school": school_id})
    return result.rowcount == 1


async def release(uow: UnitOfWork, service_id: str, school_id: str) -> bool:
    await lock_capacity_and_stats(uow)
    connection = await uow.session.connection()
    result = await connection.execute(_RELEASE, {"sid": service_id, "school": school_id})
    return result.rowcount == 1


async def set_capacity(uow: UnitOfWork, service_id: str, school_id: str, capacity: int) -> int:
    """Set a school's slots; refused below what is reserved now. Returns the reserved count."""
    await lock_capacity_and_stats(uow)
    result = await uow.session.execute(
        update(_cap)
        .where(_cap.c.service_id == service_id, _cap.c.school_id == school_id,
               _cap.c.reserved <= capacity)
        .values(capacity=capacity)
        .returning(_cap.c.reserved)
    )
    reserved = result.scalar_one_or_none()
    if reserved is None:
        held = await uow.session.scalar(
            select(_cap.c.reserved).where(_cap.c.service_id == service_id,
                                          _cap.c.school_id == school_id))
        raise Conflict(f"{held} slots are reserved at {school_id}; capacity cannot go below")
    return int(reserved)
