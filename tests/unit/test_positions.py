"""The restore drill's pure parts: where a consumer replays from, its recorded position only
moving forward, and events emitted while applying a cause getting the same ids each time the
cause is applied again (so a replay after a restore is dropped downstream)."""

from sqlalchemy import MetaData

from contracts.envelope import Envelope
from contracts.events import CapacityChanged
from runtime.db import Database
from runtime.positions import record, recorded, replay_from
from runtime.uow import UnitOfWork, messaging_tables


def test_a_database_behind_its_durable_replays_from_the_message_after_its_position() -> None:
    assert replay_from(40, acknowledged=57) == 41
    assert replay_from(0, acknowledged=3) == 1
    assert replay_from(57, acknowledged=57) is None  # caught up
    assert replay_from(60, acknowledged=57) is None  # ahead: acks still on their way
    assert replay_from(None, acknowledged=57) is None  # no position yet: adopted, not replayed


async def test_the_recorded_position_only_moves_forward() -> None:
    metadata = MetaData()
    tables = messaging_tables(metadata)
    db = Database("sqlite://", metadata)
    try:
        await db.create_schema()
        async with db.transaction() as session:
            assert await recorded(session, tables.positions, "partners-x") is None
            await record(session, tables.positions, "partners-x", "ENSEMBLE_REFERRALS", 12)
        async with db.transaction() as session:  # another copy's older batch commits later
            await record(session, tables.positions, "partners-x", "ENSEMBLE_REFERRALS", 9)
        async with db.transaction() as session:
            assert await recorded(session, tables.positions, "partners-x") == 12
            await record(session, tables.positions, "partners-x", "ENSEMBLE_REFERRALS", 30)
            await record(session, tables.positions, "partners-y", "ENSEMBLE_REFERRALS", 2)
        async with db.transaction() as session:
            assert await recorded(session, tables.positions, "partners-x") == 30
            assert await recorded(session, tables.positions, "partners-y") == 2
    finally:
        await db.dispose()


def changed(capacity: int) -> CapacityChanged:
    return CapacityChanged(partner_id="p1", service_id="s1", school_id="lincoln-es",
                           capacity=capacity, reserved=0)


def emitted_ids(cause: Envelope, consumer: str | None, capacities: list[int]) -> list[str]:
    uow = UnitOfWork(session=None, source="/ensemble/partners", cause=cause,  # type: ignore[arg-type]
                     consumer=consumer)
    return [uow.emit(changed(c)).id for c in capacities]


def test_events_emitted_while_applying_a_cause_have_the_same_ids_when_it_is_applied_again(
) -> None:
    cause = Envelope.wrap(changed(1), source="/tests/upstream", district="d001", school=None,
                          subject=None)
    other = Envelope.wrap(changed(1), source="/tests/upstream", district="d001", school=None,
                          subject=None)
    first = emitted_ids(cause, "partners-referrals-opened", [3, 4])
    assert len(set(first)) == 2
    assert emitted_ids(cause, "partners-referrals-opened", [3, 4]) == first  # a replay
    assert set(emitted_ids(other, "partners-referrals-opened", [3, 4])).isdisjoint(first)
    assert set(emitted_ids(cause, "partners-referrals-declined", [3])).isdisjoint(first)
    # Outside a consumer (an HTTP command, a timer) every event gets a new id.
    assert set(emitted_ids(cause, None, [3])).isdisjoint(emitted_ids(cause, None, [3]))


def test_rows_created_while_applying_a_cause_get_the_same_ids_when_it_is_applied_again() -> None:
    cause = Envelope.wrap(changed(1), source="/tests/upstream", district="d001", school=None,
                          subject=None)

    def ids(consumer: str | None) -> list[str]:
        uow = UnitOfWork(session=None, source="/ensemble/engagement",  # type: ignore[arg-type]
                         cause=cause, consumer=consumer)
        return [uow.new_id("outreach"), uow.new_id("outreach"), uow.new_id("invitation")]

    first = ids("engagement-partner-matched")
    assert len(set(first)) == 3
    assert ids("engagement-partner-matched") == first  # a replay makes the same outreach
    assert set(ids("engagement-other")).isdisjoint(first)
    assert set(ids(None)).isdisjoint(ids(None))  # an HTTP command: random every time
