"""The SQL a database ran, for tests that count statements (one per table, one per batch)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine


def collapsed(sql: str) -> str:
    return " ".join(sql.split())


@contextmanager
def statements_run(engine: AsyncEngine,
                   shape: Callable[[str], str] = collapsed) -> Iterator[list[str]]:
    """Every statement ``engine`` ran inside the block, each as ``shape`` writes it (by default
    with its whitespace collapsed)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(shape(statement))

    sync_engine = engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)


def sqlite_plan(metadata: Any, statement: Any) -> list[str]:
    """SQLite's query plan for ``statement`` (its values bound) on an empty database made from
    ``metadata``: one line per step, e.g. "SEARCH families USING INDEX ... (id=?)"."""
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        return [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
