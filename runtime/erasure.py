"""Erasing personal data from a service's outbox: the internal events it has already published
(OutreachRequested, FamilyReplied...) stay in the outbox for a while after they were sent
(runtime/outbox.py, ``keep_sent``) with the contact details they carried. When a family is
erased, each service rewrites those rows' payloads through ``scrub`` (which answers the event's
new data, or None to leave a row as it is). Rows not yet sent are left to be published as they
are: their consumers drop or erase what they carry."""

import json
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Table, select, text, update

from runtime.uow import UnitOfWork

Scrub = Callable[[dict[str, Any]], dict[str, Any] | None]


async def scrub_sent(uow: UnitOfWork, outbox: Table, ce_types: Iterable[str],
                     scrub: Scrub) -> int:
    """Rewrite the sent outbox rows of ``ce_types`` that ``scrub`` changes; how many."""
    rows = (await uow.session.execute(
        select(outbox.c.seq, outbox.c.payload).where(
            outbox.c.event_type.in_(sorted(ce_types)), outbox.c.sent_at.is_not(None))
        .with_for_update())).all()
    changed = 0
    for seq, payload in rows:
        document = json.loads(payload)
        data = scrub(dict(document.get("data") or {}))
        if data is None:
            continue
        document["data"] = data
        await uow.session.execute(update(outbox).where(outbox.c.seq == seq).values(
            payload=json.dumps(document, separators=(",", ":")).encode()))
        changed += 1
    return changed


ERASURE_LOCK = "ensemble-erasure"


async def erasure_barrier(uow: UnitOfWork, *, exclusive: bool = False) -> None:
    """Keep an erasure and a transaction that copies a family's details (an outreach request,
    a reply's text) from interleaving: an erasure takes this lock exclusively before it reads,
    those transactions take it shared before they read a family, so each sees the other
    committed or not started (PostgreSQL's transaction-level advisory lock; shared holders do
    not wait for each other). SQLite runs one writing transaction at a time: nothing to do."""
    session = uow.session
    if session.bind.dialect.name != "postgresql":
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    if function in uow.held_locks:
        return  # held until this transaction ends: once per batch is enough
    await session.execute(text(f"SELECT {function}(hashtext(:key))"), {"key": ERASURE_LOCK})
    uow.held_locks.add(function)
