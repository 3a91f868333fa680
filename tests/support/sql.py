"""The SQL a database ran, for tests that count statements (one per table, one per batch)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
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
