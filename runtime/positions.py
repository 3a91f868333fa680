"""Where each durable consumer's database stands on its stream, for the restore drill.

A consumer writes the highest stream sequence it has applied (or found already applied, or
parked as a dead letter) into ``consumer_positions`` in the transaction of the effects. A
database restored from a backup therefore says how far it had got; at start a consumer whose
recorded position is behind what its durable has acknowledged is re-created to deliver from the
message after it, and the inbox drops whatever the database already had (docs/operations.md).
"""

from functools import cache
from typing import Any

from sqlalchemy import Table, bindparam, case, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.db import utcnow


async def record(session: AsyncSession, positions: Table, consumer: str, stream: str,
                 seq: int) -> None:
    """Move ``consumer``'s position to ``seq`` unless it is already past it (copies apply
    batches side by side, not necessarily in order). Run last in the transaction: on
    PostgreSQL the row stays locked until the commit."""
    statement = _upsert(positions, session.bind.dialect.name)
    await session.execute(statement, {"consumer": consumer, "stream": stream, "seq": seq,
                                      "at": utcnow()})


@cache
def _upsert(positions: Table, dialect: str) -> Any:
    """The upsert ``record`` runs, built once per table and dialect: building it cost more
    than running it, once per consumer batch."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(positions).values(consumer=bindparam("consumer"),
                                         stream=bindparam("stream"),
                                         stream_seq=bindparam("seq"),
                                         updated_at=bindparam("at"))
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[positions.c.consumer],
        set_={"stream_seq": case((positions.c.stream_seq < excluded.stream_seq,
                                  excluded.stream_seq), else_=positions.c.stream_seq),
              "updated_at": excluded.updated_at})


async def recorded(session: AsyncSession, positions: Table, consumer: str) -> int | None:
    """The last stream sequence ``consumer`` applied in this database; None if it never
    recorded one (a database from before positions, or a consumer that has never started)."""
    found = await session.scalar(
        select(positions.c.stream_seq).where(positions.c.consumer == consumer))
    return None if found is None else int(found)


def replay_from(position: int | None, acknowledged: int) -> int | None:
    """The stream sequence a durable must deliver from again, or None when the database is
    not behind it. ``acknowledged`` is the durable's ack floor: everything up to it was
    acknowledged, hence applied (or parked) in the database as it was then. A consumer with no
    recorded position adopts the ack floor instead (see :func:`adopt`)."""
    if position is None or position >= acknowledged:
        return None
    return position + 1
