"""Rows a consumer batch will touch, loaded once before its handlers run (``handlers.PREFETCH``,
runtime.uow.Prefetch): one ``SELECT ... IN`` per table instead of a ``Session.get`` per event.

``load`` reads the rows and keeps them, with the keys it looked for, in the transaction's
session (the identity map holds objects weakly: a row no handler holds yet would be dropped).
``get`` answers a handler as ``Session.get`` would, without a round trip for a key the load
covered: the row loaded, or None for a key that was absent, once; a handler that adds that row
through ``add`` is answered it by the next ``get`` (one added with ``session.add`` is found by
the session's own look-up). A key the load did not cover (a handler run on its own, a route, a
test) goes to ``Session.get`` as before.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, inspect, select
from sqlalchemy.orm import Mapper

from runtime.uow import UnitOfWork

T = TypeVar("T")
_KNOWN = "ensemble.prefetched"  # session.info: {entity: {key: _Loaded}}


@cache
def _statement(entity: type[Any], lock: bool) -> Select[Any]:
    """``SELECT entity WHERE pk IN :k0``, built once per entity (binding values is what a
    batch pays). Locked rows come in key order, so two transactions lock them in one order.

    A composite key is one ``IN`` per column (``a IN :k0 AND b IN :k1``), never a row value
    ``(a, b) IN (VALUES ...)``: SQLite reads a whole table for that (every known family, once a
    batch), and the primary key's index for this. ``load`` keeps only the pairs it asked for (with
    a lock, another pair the columns' values also make is locked too: the ids here are unique
    across districts, so that does not happen)."""
    pk = inspect(entity).primary_key
    statement = select(entity).where(
        *(column.in_(bindparam(f"k{i}", expanding=True)) for i, column in enumerate(pk)))
    return statement.order_by(*pk).with_for_update() if lock else statement


@dataclass(frozen=True, slots=True)
class _Loaded:
    row: Any  # None: absent when loaded
    locked: bool


async def load(uow: UnitOfWork, entity: type[T], keys: Iterable[Any], *,
               lock: bool = False) -> list[T]:
    """Load ``entity``'s rows with these primary keys (a tuple per key for a composite one) in
    one statement, ``FOR UPDATE`` with ``lock``; ``get`` answers for them from then on. The
    rows found."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return []
    session = uow.session
    keys = [k if isinstance(k, tuple) else (k,) for k in wanted]
    values = {f"k{i}": sorted({k[i] for k in keys}) for i in range(len(keys[0]))}
    mapper: Mapper[Any] = inspect(entity)
    found = {_key(mapper, row): row
             for row in (await session.scalars(_statement(entity, lock), values)).all()}
    known = session.info.setdefault(_KNOWN, {}).setdefault(entity, {})
    for key, as_tuple in zip(wanted, keys, strict=True):
        known[key] = _Loaded(found.get(as_tuple), lock)
    asked = set(keys)
    return [row for key, row in found.items() if key in asked]  # in the statement's order


def _key(mapper: Mapper[Any], row: Any) -> tuple[Any, ...]:
    return tuple(mapper.primary_key_from_instance(row))


def add(uow: UnitOfWork, row: Any) -> None:
    """``session.add(row)``, and a later ``get`` of its key in this transaction answers it
    without a statement (a batch naming a new row twice adds it once)."""
    uow.session.add(row)
    known = uow.session.info.setdefault(_KNOWN, {}).setdefault(type(row), {})
    key = _key(inspect(type(row)), row)
    known[key if len(key) > 1 else key[0]] = _Loaded(row, locked=True)  # ours until commit


async def get(uow: UnitOfWork, entity: type[T], key: Any, *, lock: bool = False) -> T | None:
    """``Session.get(entity, key, with_for_update=lock)``, from what ``load`` read when it
    covered ``key`` (with a lock, if one is asked for)."""
    session = uow.session
    known = session.info.get(_KNOWN, {}).get(entity, {})
    loaded = known.get(key)
    if loaded is None or (lock and not loaded.locked):
        return await session.get(entity, key, with_for_update=lock or None)
    if loaded.row is None:
        del known[key]  # a handler may add it now: the next look-up is the session's or add's
    return loaded.row  # type: ignore[no-any-return]
