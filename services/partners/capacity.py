"""Open slots, reserved and released atomically: never negative, also when two referrals race
for the last slot (the database decides, with a conditional UPDATE)."""

from sqlalchemy import update

from runtime.outbox import UnitOfWork
from services.partners.tables import PartnerService

_services = PartnerService.__table__


async def reserve(uow: UnitOfWork, service_id: str) -> bool:
    result = await uow.session.execute(
        update(_services)
        .where(_services.c.id == service_id, _services.c.reserved < _services.c.capacity)
        .values(reserved=_services.c.reserved + 1)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def release(uow: UnitOfWork, service_id: str) -> None:
    await uow.session.execute(
        update(_services)
        .where(_services.c.id == service_id, _services.c.reserved > 0)
        .values(reserved=_services.c.reserved - 1)
    )
