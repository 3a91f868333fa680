"""Issue 18: an upgrade keeps a district's data and its loop. Every service's database is made
at the baseline revision and filled through the real loop (referrals in every state, families,
partners, a message in flight, pending timers); the system stops, `ensemble migrate` upgrades
to head, and the loop goes on: nothing the databases held is lost, the message in flight is sent
once, every pending timer fires once, every open referral can still be closed.

The databases are filled by this code at head and then taken down to the baseline: every
migration after the baseline is additive (`compatible_from`, docs/operations.md) and the
earlier release never wrote what they add, so that is the database the release before would
have left. A migration that is not additive fills at its down-revision with the release before
it instead (ENSEMBLE_TEST_SOURCE, as tests/support/processes.py runs services from another
checkout). Each migration adds its own data-carrying case here:
- 0002_consumer_positions: the upgraded databases have no positions; at start every consumer
  adopts its durable's ack floor and replays nothing (no timer fires twice, nobody hears
  twice).
- 0003_erasure (engagement, notifications, referrals): no family counts as erased (the new
  columns are empty), no daily job has run, nothing is in `erased_families`; erasure itself on
  upgraded rows is tests/integration/test_erasure_migration.py.
- 0004_rosters (engagement): the families are as they were, none retired (``retired_at``
  NULL), and there are no roster records.
- 0005_trace (engagement's outreach, notifications' messages: the referral's correlation id and
  trace context, nullable): empty for every row written before; the message in flight is sent
  and answered without them, its events in the chain the message row kept.
- 0006_phone_lookup (engagement): an index on the families' district and phone, no data to
  carry; the families and the loop after the upgrade are the check.
- 0006_signin (partners): a new table, `partner_links`, empty until a partner with a contact
  e-mail is matched; links themselves are tests/integration/test_partner_links.py.

- 0007_in_school (partners): no organization is an in-school support (``in_school_of`` NULL)
  and no capacity row is one (``in_school`` false, its server default)."""

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
from conftest import Inbox, System, running, token
from sqlalchemy import MetaData, select, text, update

from ensemble.embedded import DevSmsServer
from ensemble.system import build_services
from runtime.db import Database, utcnow
from runtime.migrations import base, current, downgrade, head, migrate, upgrade
from runtime.settings import SERVICES, Settings
from runtime.uow import messaging_tables
from services.referrals.settings import ReferralsSettings

D = {"district_id": "d001"}


@contextlib.asynccontextmanager
async def serving(settings: Settings, smtp: tuple[Inbox, str], *,
                  migrate: bool) -> AsyncIterator[System]:
    """The conftest `system`, started on databases as they are (``migrate=False``) or after
    the test's own migrations."""
    services = build_services(settings)
    sms_store = settings.data_dir / "sms" / "messages.jsonl"
    sms_port = int(str(settings.sms_api_url).rsplit(":", 1)[1])
    port = int(settings.public_base_url.rsplit(":", 1)[1])
    admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
    async with DevSmsServer(sms_store, sms_port, settings.sms_auth_token,
                            f"{settings.public_base_url}/api/v1/sms/inbound"), \
            running(settings, services, port, migrate=migrate) as url, \
            httpx.AsyncClient(base_url=url, timeout=10, headers=admin) as http:
        yield System(settings, http, {s.name: s for s in services}, smtp[0], sms_store)


def databases(settings: Settings) -> dict[str, Database]:
    return {name: Database(settings.database_url(name), MetaData(),
                           settings.database_schema(name)) for name in SERVICES}


async def contents(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (the version tables aside), in a stable order."""
    async with db.engine.connect() as conn:
        metadata = MetaData()
        await conn.run_sync(lambda c: metadata.reflect(c))
        found = {}
        for name, table in metadata.tables.items():
            if not name.startswith("alembic_version"):  # the version tables
                rows = (await conn.execute(select(table))).all()
                found[name] = sorted((dict(row._mapping) for row in rows), key=repr)
        return found


# What each migration after the baseline adds, empty right after the upgrade: new tables, and
# new columns of old tables (None in every row kept).
ADDED_TABLES = {"consumer_positions", "job_runs", "erased_families", "roster_records",
                "partner_links"}
ADDED_COLUMNS = {"families": {"erased_at", "erased_by", "retired_at"},
                 # 0005_trace: the referral's chain and trace, on outreach and messages
                 "outreach": {"correlation_id", "traceparent", "tracestate"},
                 "messages": {"traceparent", "tracestate"},
                 # 0007_in_school: an organization's school, a capacity row's flag
                 "partners": {"in_school_of"}, "service_capacity": {"in_school"}}
# An added column with a server default has it in every row kept (the others: None).
ADDED_DEFAULTS: dict[str, Any] = {"in_school": False}


def kept(name: str, held: dict[str, list[dict[str, Any]]],
         now: dict[str, list[dict[str, Any]]]) -> None:
    """Every row held at the baseline is there after the upgrade, unchanged; what the
    migrations added is empty."""
    assert set(now) - set(held) <= ADDED_TABLES, (name, set(now) - set(held))
    for table in set(now) - set(held):
        assert now[table] == [], (name, table)
    for table, rows in held.items():
        added = ADDED_COLUMNS.get(table, set())
        assert [{k: v for k, v in r.items() if k not in added} for r in now[table]] == rows, (
            name, table)
        assert all(r[c] == ADDED_DEFAULTS.get(c) for r in now[table] for c in added if c in r), (
            name, table)


async def post(system: System, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await system.http.post(f"/api/v1{path}", json=D | body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def replies(system: System, family: dict[str, Any]) -> None:
    """The family answers the email (as test_loop's families do): the referral is
    family_contacted."""
    async def sent() -> list[Any]:
        return system.inbox.to(family["email"])

    [email] = await system.eventually(sent, what="the email")
    reply = await system.http.post("/api/v1/email/inbound", json={
        "to": email["Reply-To"], "from": family["email"], "text": "Yes, thank you"})
    assert reply.status_code == 200, reply.text


async def test_a_district_filled_at_the_baseline_goes_on_after_the_upgrade(
        settings: Settings, smtp: tuple[Inbox, str]) -> None:
    known = {"0002_consumer_positions", "0003_erasure", "0004_rosters", "0005_trace",
             "0006_phone_lookup", "0006_signin", "0007_in_school",
             "0001_baseline"}  # insights: its head is its baseline, nothing to carry
    assert all(head(s) in known for s in SERVICES), (
        "a new migration: add its data-carrying case to this test (and fill with the release "
        "before it if it is not additive)")
    settings = ReferralsSettings.of(settings, follow_up_scan_seconds=0.2)
    inbox = smtp[0]
    dbs = databases(settings)
    try:
        for name, db in dbs.items():
            await upgrade(db, name)

        # 1. The loop fills every database (at the baseline: see the docstring).
        async with serving(settings, smtp, migrate=False) as system:
            partner = await system.register_partner(capacity=20)
            families = [await system.register_family() for _ in range(7)]
            refs: dict[str, dict[str, Any]] = {}
            for state, family in zip(("family_contacted", "in_service", "closed", "cancelled"),
                                     families, strict=False):
                refs[state] = await system.open_referral(family)
                await replies(system, family)
                await system.wait_status(refs[state]["id"], "family_contacted")
            refs["accepted"] = await system.open_referral(families[4])  # no answer yet
            await system.wait_status(refs["accepted"]["id"], "matched")
            rid = {state: ref["id"] for state, ref in refs.items()}
            for state in ("accepted", "in_service"):
                await post(system, f"/referrals/{rid[state]}/accept",
                           {"partner_id": partner["id"]})
            await post(system, f"/referrals/{rid['in_service']}/in-service",
                       {"partner_id": partner["id"]})
            await post(system, f"/referrals/{rid['closed']}/close",
                       {"outcome": "services_received"})
            await post(system, f"/referrals/{rid['cancelled']}/cancel", {"reason": "duplicate"})
            refs["no_partner"] = await system.open_referral(families[5], need="vision")
            await system.wait_status(refs["no_partner"]["id"], "no_partner")
            # A message in flight: the mail server refuses it, notifications retries later.
            inbox.refuse = 451
            refs["in_flight"] = await system.open_referral(families[6])
            await system.wait_status(refs["in_flight"]["id"], "matched")
            rid = {state: ref["id"] for state, ref in refs.items()}
            for state in ("accepted", "in_service", "closed", "cancelled"):
                await system.wait_status(rid[state], state)
        assert inbox.to(families[6]["email"]) == []
        for name, db in dbs.items():
            await downgrade(db, name, base(name))
            assert await current(db) == base(name)

        # While the system is down for the upgrade, time passes: the open referrals' timers
        # come due.
        from services.referrals.tables import Referral

        async with dbs["referrals"].transaction() as session:
            pending = set((await session.scalars(
                update(Referral).where(Referral.follow_up_due_at.is_not(None))
                .values(follow_up_due_at=utcnow() - timedelta(minutes=1))
                .returning(Referral.id))).all())
        assert pending >= {rid["family_contacted"], rid["accepted"], rid["in_flight"]}
        held = {name: await contents(db) for name, db in dbs.items()}
        assert held["referrals"]["referrals"] and held["notifications"]["messages"]

        # 2. The upgrade: `ensemble migrate`, every service to head; nothing lost.
        done = await migrate(settings, SERVICES)
        assert [d.after for d in done] == [head(s) for s in SERVICES]
        for name, db in dbs.items():
            assert await current(db) == head(name)
            kept(name, held[name], await contents(db))  # 0002: no positions; 0003: no erasure;
            # 0004: no roster records, no family retired; 0005: no in-school support

        # 3. The loop goes on.
        inbox.refuse = None
        async with serving(settings, smtp, migrate=False) as system:
            # 0002: every consumer adopted its durable's ack floor; nothing was replayed.
            for service in system.services.values():
                await adopted(service)
            await replies(system, families[6])  # sent at last, after the upgrade
            await system.wait_status(rid["in_flight"], "family_contacted", timeout=30)

            async def fired() -> bool:
                for referral_id in pending:
                    events = [e["event"] for e in (await system.referral(referral_id))["timeline"]]
                    if "FollowUpDue" not in events:
                        return False
                return True

            await system.eventually(fired, timeout=20, what="every pending timer fired")
            open_ = [rid[s] for s in ("family_contacted", "accepted", "in_service",
                                      "no_partner", "in_flight")]
            for referral_id in open_:
                closed = await post(system, f"/referrals/{referral_id}/close",
                                    {"outcome": "no_longer_needed"})
                assert closed["status"] == "closed"
            for referral_id in pending:
                events = [e["event"] for e in (await system.referral(referral_id))["timeline"]]
                assert events.count("FollowUpDue") == 1, (referral_id, events)
            # Each family heard once: the one in flight too, after the upgrade.
            for family in families[:5] + families[6:]:
                assert len(inbox.to(family["email"])) == 1, family["email"]
            async with dbs["referrals"].transaction() as session:
                statuses = dict((await session.execute(
                    text("SELECT id, status FROM referrals"))).all())
            assert statuses == {rid[s]: ("cancelled" if s == "cancelled" else "closed")
                                for s in rid}
    finally:
        for db in dbs.values():
            await db.dispose()


async def adopted(service: Any) -> None:
    """Each consumer of the service recorded its durable's ack floor at start."""
    runtime = service.runtime
    positions = messaging_tables(runtime.db.metadata).positions
    async with runtime.db.transaction() as session:
        recorded = dict((await session.execute(
            select(positions.c.consumer, positions.c.stream_seq))).all())
    for consumer in runtime.consumers:
        info = await runtime.jetstream.consumer_info(consumer.stream, consumer.durable)
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        assert recorded.get(consumer.durable, -1) >= floor, (consumer.durable, recorded, floor)
        assert str(info.config.deliver_policy) in ("all", "DeliverPolicy.ALL"), consumer.durable
