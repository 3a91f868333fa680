"""Outreach requests become queued messages; the dispatcher sends them. A bulk request (one
chunk of an announcement or invitation) becomes its messages in one multi-row INSERT."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

from sqlalchemy import insert, select

from contracts.envelope import Envelope
from contracts.events import (
    BulkOutreachRequested,
    Event,
    FamilyErased,
    OutreachRequested,
    PartnerLinkRequested,
    StaffDigestRequested,
)
from runtime.db import key_in
from runtime.erasure import erasure_barrier
from runtime.tracing import current_fields
from runtime.uow import UnitOfWork
from services.notifications.deps import NotificationsDeps
from services.notifications.erasure import is_erased, on_family_erased
from services.notifications.lifecycle import MessageStatus, initial
from services.notifications.metrics import BULK_QUEUED
from services.notifications.partner_links import on_partner_link_requested, send_or_retry
from services.notifications.policy import Holding
from services.notifications.providers import Outgoing
from services.notifications.tables import ErasedFamily, Message

_KNOWN = "notifications.outreach"  # the session's info key for load_outreach's findings


def outreach_key(outreach_id: str, attempt: int) -> str:
    return outreach_id if attempt == 1 else f"{outreach_id}:{attempt}"


def new_message(holds: Holding, now: datetime, **fields: Any) -> dict[str, Any]:
    """A message row, already held to the end of quiet hours when it is a routine one."""
    row: dict[str, Any] = {
        "id": str(uuid4()), "token": secrets.token_hex(16), "status": MessageStatus.queued.value,
        "attempts": 0,
        "fell_back": False, "next_attempt_at": now, "created_at": now, "held_reason": None,
        "batch_id": None, "referral_id": None, "causation_id": None, "email": None,
        "phone": None, "traceparent": None, "tracestate": None,
        **current_fields(),  # the trace of the work that asked for it
    } | fields
    hold = holds.hold(SimpleNamespace(**row), now)  # what a hold reads; an ORM object costs more
    if hold:
        row["next_attempt_at"], row["held_reason"] = hold.until, hold.reason
    row["status"] = initial(row["channels"]).value
    return row


@dataclass
class _Known:
    """What ``load_outreach`` found for a batch: the outreach keys asked about, those already
    queued, and the batch's families that were erased."""

    asked: set[str]
    queued: set[str]
    erased: set[tuple[str, str]]


async def load_outreach(uow: UnitOfWork, batch: list[tuple[Envelope, Event]],
                        deps: NotificationsDeps) -> None:
    """The batch's queued outreach keys and erased families in one statement each, before its
    handlers (``PREFETCH``), instead of two look-ups per request."""
    await erasure_barrier(uow)  # read after any erasure in progress, as the handler does
    requests = [(env, ev) for env, ev in batch if isinstance(ev, OutreachRequested)]
    keys = {outreach_key(ev.outreach_id, ev.attempt) for _, ev in requests}
    families = {(env.districtid, ev.family_id) for env, ev in requests}
    if not keys:
        return
    queued = set((await uow.session.scalars(
        select(Message.idempotency_key).where(Message.idempotency_key.in_(keys)))).all())
    erased = {(d, f) for d, f in (await uow.session.execute(
        select(ErasedFamily.district_id, ErasedFamily.family_id).where(
            *key_in((ErasedFamily.district_id, ErasedFamily.family_id), families)))).all()} \
        & families
    uow.session.info[_KNOWN] = _Known(keys, queued, erased)


async def on_outreach_requested(uow: UnitOfWork, env: Envelope, ev: OutreachRequested,
                                deps: NotificationsDeps) -> None:
    await erasure_barrier(uow)  # an erasure in progress commits first, or waits for this
    key = outreach_key(ev.outreach_id, ev.attempt)
    known: _Known | None = uow.session.info.get(_KNOWN)
    if known is not None and key in known.asked:
        if key in known.queued:
            return
        if (env.districtid, ev.family_id) in known.erased:
            return  # requested before the family was erased, arrived after: not kept
        known.queued.add(key)  # the same request twice in one batch: one message
    else:  # called alone (a test), without the batch's look-ups
        if await uow.session.scalar(select(Message.id).where(Message.idempotency_key == key)):
            return
        if await is_erased(uow, env.districtid, ev.family_id):
            return
    row = new_message(
        deps.holds, deps.clock(), idempotency_key=key, district_id=env.districtid,
        school_id=ev.school_id, family_id=ev.family_id, outreach_id=ev.outreach_id,
        referral_id=ev.referral_id, correlation_id=env.correlationid, causation_id=env.id,
        kind=ev.kind, urgency=ev.urgency.value, language=ev.language,
        channels=[c.value for c in ev.channels], email=ev.email, phone=ev.phone,
        family_name=ev.family_name, variables=ev.variables)
    await uow.session.execute(insert(Message), [row])  # Core: no ORM object to flush
    uow.after_commit.append(deps.wake)


async def on_bulk(uow: UnitOfWork, env: Envelope, ev: BulkOutreachRequested,
                  deps: NotificationsDeps) -> None:
    await erasure_barrier(uow)
    # One message per family of the batch, even if a family is listed twice.
    recipients = list({r.family_id: r for r in ev.recipients}.values())
    keys = {r.family_id: f"{ev.batch_id}:{r.family_id}" for r in recipients}
    existing = set((await uow.session.scalars(
        select(Message.idempotency_key).where(Message.idempotency_key.in_(keys.values()))
    )).all())
    erased = set((await uow.session.scalars(select(ErasedFamily.family_id).where(
        ErasedFamily.district_id == env.districtid,
        ErasedFamily.family_id.in_(list(keys))))).all())
    recipients = [r for r in recipients if r.family_id not in erased]
    now = deps.clock()
    rows = [
        new_message(
            deps.holds, now, idempotency_key=keys[r.family_id], district_id=env.districtid,
            school_id=r.school_id, family_id=r.family_id, outreach_id=ev.batch_id,
            batch_id=ev.batch_id, correlation_id=env.correlationid, causation_id=env.id,
            kind=ev.kind, urgency=ev.urgency.value, language=r.language,
            channels=[c.value for c in r.channels], email=r.email, phone=r.phone,
            family_name=r.family_name, variables={**ev.variables, **r.variables})
        for r in recipients if keys[r.family_id] not in existing
    ]
    if rows:
        await uow.session.execute(insert(Message), rows)  # one executemany
        count = len(rows)
        uow.after_commit.append(lambda: BULK_QUEUED.labels(ev.kind).inc(count))
        uow.after_commit.append(deps.wake)


async def on_staff_digest_requested(uow: UnitOfWork, env: Envelope, ev: StaffDigestRequested,
                                    deps: NotificationsDeps) -> None:
    """The weekly digest to each address of the school's staff list (the districts file).
    Sent here, in the consumer's transaction: a failure is retried with the event (without
    limit while nobody has it yet, as the mail server is down; a few times once some staff do,
    as each retry sends them theirs again), and a resend carries the same Message-ID."""
    school = deps.districts.school(env.districtid, ev.school_id) if deps.districts else None
    if school is None or deps.email is None or not school.staff_emails:
        return
    sent = 0
    for address in school.staff_emails:
        sent += await send_or_retry(deps, Outgoing(
            to=str(address), subject=ev.subject, text=ev.text, html=ev.html,
            idempotency_key="digest-" + hashlib.sha256(
                f"{ev.digest_id}/{address}".encode()).hexdigest()[:32],
            headers={"Auto-Submitted": "auto-generated"}), what=f"staff digest {ev.digest_id}",
            others_have_it=sent > 0)


# Per event type, what a consumer batch loads once before its handlers (runtime.uow.Prefetch).
PREFETCH = {OutreachRequested: load_outreach}

HANDLERS = {
    OutreachRequested: on_outreach_requested,
    BulkOutreachRequested: on_bulk,
    PartnerLinkRequested: on_partner_link_requested,
    FamilyErased: on_family_erased,
    StaffDigestRequested: on_staff_digest_requested,
}
