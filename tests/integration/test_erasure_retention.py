"""Erasing a family and the daily retention, through the real loop (NATS, HTTP, SMTP) on SQLite
and PostgreSQL: a district admin erases a family mid-loop and no service's table holds its
name, phone, email, notes or replies any more; retention deletes only what is past its period;
two copies of a service run the daily job once."""

import asyncio
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import System, token
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text, update
from support.sql import statements_run
from support.uow import HandlerBench

from contracts.events import FamilyErased, OutreachRequested
from contracts.taxonomy import Channel
from runtime.daily import DailyJob
from runtime.db import utcnow
from runtime.districts import Retention
from runtime.erasure import erasure_barrier
from runtime.settings import Settings
from runtime.uow import UnitOfWork
from services.engagement.tables import ContactLogEntry
from services.notifications.deps import NotificationsDeps
from services.notifications.erasure import on_family_erased
from services.notifications.handlers import on_outreach_requested
from services.notifications.service import build as build_notifications
from services.notifications.tables import Message
from services.referrals.audit import AuditEntry
from services.referrals.service import build as build_referrals
from services.referrals.tables import JOB_RUNS, Referral


async def stored_text(system: System) -> str:
    """Every row of every table of every service, as text (lower case)."""
    parts: list[str] = []
    for service in system.services.values():
        db = service.runtime.db
        async with db.transaction() as session:
            for table in db.metadata.sorted_tables:
                for row in (await session.execute(select(table))).all():
                    parts.append(" ".join(
                        v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                        for v in row))
    return "\n".join(parts).lower()


async def reply_by_email(system: System, address: str, text: str) -> None:
    async def arrived() -> list[Any]:
        return system.inbox.to(address)

    [email, *_] = await system.eventually(arrived, 30, f"an email to {address}")
    reply = await system.http.post("/api/v1/email/inbound", json={
        "to": email["Reply-To"], "from": address, "text": text})
    assert reply.status_code == 200, reply.text


async def test_an_erased_family_is_gone_from_every_services_tables(system: System) -> None:
    tag = uuid.uuid4().hex[:6]
    name, email, phone = f"Zebulon Quixley{tag}", f"zq{tag}@example.org", "(415) 555-0187"
    note, reply, logged = (f"Toothache since March {tag}", f"Yes please after six {tag}",
                           f"Grandmother Ophelia called {tag}")
    await system.register_partner(capacity=10)
    family = await system.register_family(name=name, email=email, phone=phone,
                                          sms_consent=True)
    other = await system.register_family(name=f"Philippa Oyelaran{tag}")
    dental = await system.open_referral(family, note=note)
    unserved = await system.open_referral(family, need="vision")  # stays open: no partner
    await reply_by_email(system, email, reply)
    await system.wait_status(dental["id"], "family_contacted")
    await system.wait_status(unserved["id"], "no_partner")
    response = await system.http.post(f"/api/v1/families/{family['id']}/contacts", json={
        "district_id": "d001", "kind": "phone_call", "note": logged})
    assert response.status_code == 201, response.text
    response = await system.http.post(f"/api/v1/referrals/{dental['id']}/notes",
                                      json={"district_id": "d001", "text": note})
    assert response.status_code == 201, response.text
    personal = [name.lower(), *name.lower().split(), email, "+14155550187", note.lower(),
                reply.lower(), logged.lower()]
    before = await stored_text(system)
    assert all(p in before for p in personal)  # the scan below means something

    # Mid-loop: the other family's referral is on its way while the erasure goes through.
    other_referral = await system.open_referral(other)
    url = f"/api/v1/families/{family['id']}"
    coordinator = token(system.settings, "coordinator", "d001", ("lincoln-es",))
    refused = await system.http.delete(url, params={"district_id": "d001"},
                                       headers={"Authorization": f"Bearer {coordinator}"})
    assert refused.status_code == 403, refused.text
    elsewhere = token(system.settings, "district_admin", "d002")
    refused = await system.http.delete(url, params={"district_id": "d002"},
                                       headers={"Authorization": f"Bearer {elsewhere}"})
    assert refused.status_code == 404, refused.text
    erased = await system.http.delete(url, params={"district_id": "d001"})
    assert erased.status_code == 200, erased.text
    view = erased.json()
    assert (view["name"], view["phone"], view["email"]) == ("", None, None)
    assert view["erased_by"] == "test-district_admin" and view["erased_at"]

    left: list[str] = []

    async def gone() -> bool:
        text = await stored_text(system)
        left[:] = [line for line in text.splitlines() if any(p in line for p in personal)]
        return not left

    try:
        await system.eventually(gone, 30, "the family erased everywhere")
    except AssertionError:
        raise AssertionError(f"still stored: {left}") from None
    # An answer to an old email after the erasure is not kept either.
    [email_sent, *_] = system.inbox.to(email)
    late = await system.http.post("/api/v1/email/inbound", json={
        "to": email_sent["Reply-To"], "from": email, "text": f"late answer {tag}"})
    assert late.status_code == 200 and late.json() == {"result": "erased"}, late.text
    # The other family is untouched, and its referral goes on.
    await system.wait_status(other_referral["id"], "matched", timeout=30)
    stored = await stored_text(system)
    assert other["name"].lower() in stored and f"late answer {tag}" not in stored

    # The referrals keep their ids; the audit says who erased the family; one still closes.
    async def audited() -> list[dict[str, Any]] | None:
        trail = await system.http.get(f"/api/v1/referrals/{unserved['id']}/audit",
                                      params={"district_id": "d001"})
        found = [e for e in trail.json() if e["action"] == "family_erased"]
        return found or None

    [entry] = await system.eventually(audited, 30, "the erasure in the audit trail")
    assert (entry["actor"], entry["role"]) == ("test-district_admin", "district_admin")
    closed = await system.http.post(f"/api/v1/referrals/{unserved['id']}/close",
                                    json={"district_id": "d001", "outcome": "unmet_no_partner"})
    assert closed.status_code == 200, closed.text
    await system.wait_status(unserved["id"], "closed")
    refilled = await system.http.patch(url, json={"district_id": "d001", "phone": phone})
    assert refilled.status_code == 409, refilled.text  # not brought back by an update
    again = await system.http.delete(url, params={"district_id": "d001"})
    assert again.status_code == 200 and again.json()["erased_at"] == view["erased_at"]
    # Both erasures applied by referrals; its audit says it once.
    referrals = system.services["referrals"].runtime
    inbox = referrals.tables.inbox

    async def both_applied() -> bool:
        async with referrals.unit_of_work() as uow:
            applied = await uow.session.scalar(select(func.count()).select_from(inbox).where(
                inbox.c.consumer == "referrals-engagement-family-erased"))
        return applied == 2

    await system.eventually(both_applied, 30, "the second erasure applied by referrals")
    trail = await system.http.get(f"/api/v1/referrals/{unserved['id']}/audit",
                                  params={"district_id": "d001"})
    assert [e["action"] for e in trail.json()].count("family_erased") == 1


async def shift(system: System, service: str, statement: Any) -> None:
    async with system.services[service].runtime.unit_of_work() as uow:
        await uow.session.execute(statement)


async def test_retention_deletes_only_what_is_past_its_period(system: System) -> None:
    await system.register_partner(capacity=10)
    families = [await system.register_family() for _ in range(2)]
    referrals = [await system.open_referral(f) for f in families]
    for family in families:
        await reply_by_email(system, family["email"], "Yes please")
    for referral in referrals:
        await system.wait_status(referral["id"], "family_contacted", timeout=30)
        closed = await system.http.post(f"/api/v1/referrals/{referral['id']}/close", json={
            "district_id": "d001", "outcome": "services_received"})
        assert closed.status_code == 200, closed.text
    old, kept = referrals[0]["id"], referrals[1]["id"]
    long_ago = utcnow() - timedelta(days=60)
    await shift(system, "referrals", update(Referral).where(Referral.id == old)
                .values(closed_at=long_ago))
    await shift(system, "referrals", update(AuditEntry).where(AuditEntry.referral_id == old)
                .values(at=long_ago))
    await shift(system, "notifications", update(Message).where(
        Message.family_id == families[0]["id"]).values(created_at=long_ago))
    await shift(system, "engagement", update(ContactLogEntry).where(
        ContactLogEntry.family_id == families[0]["id"]).values(at=long_ago))
    district = system.services["referrals"].runtime.districts.get("d001")
    assert district is not None
    district.retention = Retention(closed_referrals_days=30, audit_days=30, messages_days=30,
                                   replies_days=30)

    def removed(service: str, kind: str) -> float:
        labels = {"service": service, "kind": kind}
        return REGISTRY.get_sample_value("ensemble_retention_removed_total", labels) or 0.0

    counted = removed("referrals", "closed_referrals")
    # Each service's job ran at start (nothing configured then) and is due again tomorrow.
    tomorrow = utcnow() + timedelta(days=1, minutes=1)
    for name in ("referrals", "notifications", "engagement"):
        job: DailyJob = system.services[name].retention  # type: ignore[attr-defined]
        job.clock = lambda: tomorrow
        runs = job.runs
        await job.round()
        assert job.runs == runs + 1, name
        await job.round()  # not due again until the day after
        assert job.runs == runs + 1, name

    assert removed("referrals", "closed_referrals") == counted + 1
    gone = await system.http.get(f"/api/v1/referrals/{old}", params={"district_id": "d001"})
    assert gone.status_code == 404
    assert (await system.referral(kept))["status"] == "closed"
    async with system.services["notifications"].runtime.unit_of_work() as uow:
        left = set((await uow.session.scalars(select(Message.family_id))).all())
    assert left == {families[1]["id"]}
    async with system.services["engagement"].runtime.unit_of_work() as uow:
        notes = dict((await uow.session.execute(select(
            ContactLogEntry.family_id, ContactLogEntry.note).where(
            ContactLogEntry.by == "family"))).all())
    assert notes == {families[0]["id"]: None, families[1]["id"]: "Yes please"}
    async with system.services["referrals"].runtime.unit_of_work() as uow:
        audited = set((await uow.session.scalars(select(AuditEntry.referral_id))).all())
    assert old not in audited and kept in audited


async def test_two_copies_run_the_daily_job_once(tmp_path: Path,
                                                 backend: dict[str, str]) -> None:
    settings = Settings(data_dir=tmp_path / "data", **backend)
    copies = [build_referrals(settings).runtime for _ in range(2)]
    await copies[0].migrate()
    ran: list[str] = []

    def work_of(copy: str) -> Any:
        async def work(uow: UnitOfWork, now: datetime) -> dict[str, int]:
            ran.append(copy)
            await asyncio.sleep(0.3)  # the other copy checks while this one holds the run
            return {}
        return work

    day = utcnow()
    jobs = [DailyJob("referrals retention", rt.unit_of_work, JOB_RUNS, work_of(f"copy-{i}"),
                     lambda: day, holder=f"copy-{i}") for i, rt in enumerate(copies)]
    try:
        for days in range(3):
            day = utcnow() + timedelta(days=days, minutes=1)
            await asyncio.gather(*(job.round() for job in jobs), *(job.round() for job in jobs))
        assert len(ran) == 3, ran  # once a day, whichever copy got there first
        async with copies[1].unit_of_work() as uow:
            [row] = (await uow.session.execute(select(JOB_RUNS))).all()
        assert row.last_holder == ran[-1]
    finally:
        for rt in copies:
            await rt.db.dispose()


async def test_a_coordinator_cannot_erase_and_an_unknown_family_is_404(system: System) -> None:
    family = await system.register_family()
    lincoln = token(system.settings, "coordinator", "d001", ("lincoln-es",))
    async with httpx.AsyncClient(base_url=str(system.http.base_url), timeout=10,
                                 headers={"Authorization": f"Bearer {lincoln}"}) as coordinator:
        refused = await coordinator.delete(f"/api/v1/families/{family['id']}",
                                           params={"district_id": "d001"})
    assert refused.status_code == 403
    missing = await system.http.delete("/api/v1/families/nobody", params={"district_id": "d001"})
    assert missing.status_code == 404
    unnamed = await system.http.delete(f"/api/v1/families/{family['id']}")
    assert unnamed.status_code == 422 and "district_id" in unnamed.text
    detail = await system.http.get(f"/api/v1/families/{family['id']}",
                                   params={"district_id": "d001"})
    assert detail.json()["name"] == family["name"]


async def test_an_erasure_waits_for_a_request_that_copies_the_familys_details(
        tmp_path: Path, backend: dict[str, str]) -> None:
    """PostgreSQL lets transactions interleave: an erasure applied while an outreach request
    for the family is being stored waits for it (runtime.erasure.erasure_barrier), then erases
    what it stored. (SQLite runs one writing transaction at a time: nothing can interleave.)"""
    if not backend:
        pytest.skip("SQLite runs one writing transaction at a time")
    settings = Settings(data_dir=tmp_path / "data", **backend)
    service = build_notifications(settings)
    rt = service.runtime
    # What the service's consumers are given (service.deps is what its routes are given).
    deps = NotificationsDeps(service.dispatcher.holds, service.dispatcher.wake)  # type: ignore[attr-defined]
    await rt.migrate()
    request = OutreachRequested(
        outreach_id="o1", family_id="fam-1", kind="partner_matched", language="en",
        channels=[Channel.email], email="zq@example.org", family_name="Zebulon",
        school_id="lincoln-es")
    stored, release = asyncio.Event(), asyncio.Event()

    async def store_request() -> None:
        async with rt.unit_of_work() as uow:
            await on_outreach_requested(uow, HandlerBench.envelope(request), request, deps)
            await uow.session.flush()
            stored.set()
            await release.wait()  # still uncommitted while the erasure comes

    async def erase() -> None:
        async with rt.unit_of_work() as uow:
            event = FamilyErased(family_id="fam-1", erased_by="admin", erased_at=utcnow())
            await on_family_erased(uow, HandlerBench.envelope(event), event, deps)

    try:
        storing = asyncio.create_task(store_request())
        await stored.wait()
        erasing = asyncio.create_task(erase())
        await asyncio.sleep(0.5)
        assert not erasing.done()  # it waits for the request to commit
        release.set()
        await asyncio.wait_for(asyncio.gather(storing, erasing), 30)
        async with rt.unit_of_work() as uow:
            [message] = (await uow.session.scalars(select(Message))).all()
        assert (message.email, message.family_name, message.status) == (None, "", "failed")
    finally:
        await rt.db.dispose()


async def test_a_batch_takes_the_erasure_barrier_once(tmp_path: Path,
                                                      backend: dict[str, str]) -> None:
    """The shared barrier is a transaction-level lock: a batch of requests takes it once, not
    once per event, and still holds it (an erasure waits) until it commits."""
    if not backend:
        pytest.skip("SQLite runs one writing transaction at a time: no barrier")
    settings = Settings(data_dir=tmp_path / "data", **backend)
    rt = build_notifications(settings).runtime
    await rt.migrate()
    try:
        with statements_run(rt.db.engine) as seen:
            async with rt.unit_of_work() as uow:
                for _ in range(3):  # three events of one batch
                    await erasure_barrier(uow)
                held = (await uow.session.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND mode = 'ShareLock' AND pid = pg_backend_pid()"))).scalar()
        assert len([s for s in seen if "pg_advisory_xact_lock" in s]) == 1 and held == 1
    finally:
        await rt.db.dispose()
