"""Data-layer tenancy: while a request runs with a scope, every ORM SELECT of an entity that has
a ``district_id`` column is limited to that district, one with ``school_id`` to the caller's
schools (coordinators) and one with ``partner_id`` to the caller's partner (partners). Endpoints
need not remember it; a row outside the scope simply does not exist for that caller."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria


@dataclass(frozen=True)
class Scope:
    district: str
    schools: frozenset[str] | None = None
    partner_id: str | None = None


_scope: ContextVar[Scope | None] = ContextVar("tenancy_scope", default=None)


def set_scope(scope: Scope | None) -> None:
    _scope.set(scope)


def current_scope() -> Scope | None:
    return _scope.get()


@contextmanager
def beyond_partner() -> Iterator[None]:
    """Reads in the block are not limited to the caller's partner (still to its district and
    schools): for the one case where a partner must reach a row it no longer holds, its own
    retried decline, once the caller has shown the row's history names it."""
    scope = _scope.get()
    token = _scope.set(replace(scope, partner_id=None) if scope else None)
    try:
        yield
    finally:
        _scope.reset(token)


@event.listens_for(Session, "do_orm_execute")
def _limit_to_scope(state: ORMExecuteState) -> None:
    scope = _scope.get()
    if scope is None or not state.is_select or state.is_column_load or state.is_relationship_load:
        return
    options = []
    for mapper in state.all_mappers:
        cls, columns = mapper.class_, mapper.columns
        # Plain expressions, not lambdas: their values become bound parameters of the cached
        # statement, so one request's district never leaks into another's query.
        if "district_id" in columns:
            options.append(with_loader_criteria(cls, cls.district_id == scope.district))
        if scope.schools is not None and "school_id" in columns:
            options.append(with_loader_criteria(cls, cls.school_id.in_(sorted(scope.schools))))
        if scope.partner_id is not None and "partner_id" in columns:
            options.append(with_loader_criteria(cls, cls.partner_id == scope.partner_id))
    if options:
        state.statement = state.statement.options(*options)
