"""Issue 18, the restore drill: partners' database is backed up in the middle of a stream of
referrals (an online SQLite backup; pg_dump of its schema on PostgreSQL), the loop goes on, one
command reaches partners over HTTP after the backup, then partners is stopped, its database
restored and partners started again.

What must hold: partners re-positions its durable consumers to the positions the backup
recorded and applies every event it consumed after the backup once (its inbox drops what the
backup already had); what it emits again has the ids it had, so no family hears twice and no
referral is matched twice; and the one thing the streams cannot bring back, the capacity
changed over HTTP after the backup, is what `ensemble restore-report partners`, partners' log
and its metric name, and nothing else."""

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats
import pytest
from support.ledger import Ledger, make_cases
from support.processes import SOURCE, ProcessSystem, postgres_url
from support.scenario import assert_clean, scenario
from support.waiting import eventually

BEFORE, DURING, AFTER = 12, 24, 8
OTHER_NEED = "food"  # the partner whose capacity changes after the backup serves no referral


def backends() -> list[Any]:
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", backends())
async def test_a_restored_database_replays_what_it_consumed_and_reports_what_it_lost(
        tmp_path: Path, backend: str) -> None:
    tools = ("pg_dump", "pg_restore", "psql")
    if backend == "postgres" and (postgres_url() is None or not all(map(shutil.which, tools))):
        pytest.skip("PostgreSQL: set ENSEMBLE_TEST_POSTGRES_URL and install postgresql-client")
    backup = tmp_path / "partners.backup"
    async with scenario(tmp_path / "run", backend=backend) as (system, ledger):
        await ledger.register_partners(capacity=200)
        food = await other_partner(ledger)
        cases = make_cases(BEFORE + DURING + AFTER)
        await ledger.register_families(cases)  # languages known before any referral
        await ledger.drive(cases[:BEFORE])
        await ledger.wait_done(cases[:BEFORE])

        # The backup, while referrals flow through partners.
        async def back_up_mid_stream() -> None:
            await ledger.reached(BEFORE + DURING // 3)
            await asyncio.to_thread(take_backup, system, backup)

        await asyncio.gather(ledger.drive(cases[BEFORE:BEFORE + DURING], rate=8),
                             back_up_mid_stream())
        # A command the streams cannot bring back, then more of the loop.
        await set_capacity(ledger, food, 77)
        await ledger.drive(cases[BEFORE + DURING:])
        await ledger.wait_done(cases)
        assert not await ledger.wait_drained()
        lost = await capacity_changes(system, capacity=77)
        assert len(lost) == 1

        # The restore: partners stopped, its database as the backup had it, partners started.
        partners = system.process("partners")
        await partners.terminate()
        await asyncio.to_thread(restore_backup, system, backup)
        await system.restart("partners")

        # Every event it consumed after the backup is applied once, nothing is sent twice.
        report = await ledger.check(cases, timeout=180)
        assert_clean(report)
        log = partners.log.read_text()
        assert "partners-referrals-opened: this database applied" in log, log[-3000:]
        assert await partners.metric("ensemble_consumer_replayed_total", service="partners") > 0
        # ... each ReferralOpened once in its inbox, each referral once in its records
        assert await count(system, "SELECT count(*) FROM inbox WHERE consumer = "
                                   "'partners-referrals-opened'") == len(cases)
        assert await count(system, "SELECT count(*) FROM referral_requests") == len(cases)
        assert await answers_per_referral(system) == {c.referral_id: 1 for c in cases}

        # What the restore lost, named exactly: in partners' log, its metric and the report.
        async def reported() -> float:
            return await partners.metric("ensemble_restore_unexplained_events",
                                         service="partners")

        assert await eventually(reported, "partners' restore check", timeout=120) == 1
        named = [line for line in partners.log.read_text().splitlines()
                 if "published but not in this database" in line]
        assert len(named) == 1 and lost[0] in named[0], named
        out = restore_report(system, "partners")
        assert out.returncode == 1, out.stdout + out.stderr
        listed = [line.split()[2] for line in out.stdout.splitlines() if line.startswith("  ")]
        assert listed == lost, out.stdout
        assert "org.ensemble.partners.capacity_changed.v1" in out.stdout
        for other in ("referrals", "engagement", "notifications"):
            assert restore_report(system, other).returncode == 0, other


async def other_partner(ledger: Ledger) -> dict[str, Any]:
    response = await ledger.api.request("partners", "POST", "/api/v1/partners", json={
        "district_id": ledger.district, "name": "Lincoln Food Bank", "needs": [OTHER_NEED],
        "schools": ["lincoln-es"], "languages": ["en"], "capacity": 5})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def set_capacity(ledger: Ledger, partner: dict[str, Any], capacity: int) -> None:
    service_id = partner["services"][0]["id"]
    response = await ledger.api.request(
        "partners", "PUT", f"/api/v1/partners/services/{service_id}/capacity",
        json={"district_id": ledger.district, "school_id": "lincoln-es", "capacity": capacity})
    assert response.status_code == 200, response.text


# --- backup and restore, as docs/operations.md says --------------------------------------------


def take_backup(system: ProcessSystem, to: Path) -> None:
    if system.schema_prefix is None:
        # SQLite's online backup: a consistent copy of a database in use (sqlite3's .backup).
        source = sqlite3.connect(system.root / "data" / "partners.db")
        target = sqlite3.connect(to)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return
    subprocess.run(["pg_dump", "--format=custom", f"--schema={schema(system)}",
                    f"--file={to}", pg_url()], check=True, capture_output=True, timeout=120)


def restore_backup(system: ProcessSystem, backup: Path) -> None:
    if system.schema_prefix is None:
        database = system.root / "data" / "partners.db"
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            path.unlink(missing_ok=True)
        shutil.copyfile(backup, database)
        return
    subprocess.run(["psql", pg_url(), "-v", "ON_ERROR_STOP=1", "-c",
                    f'DROP SCHEMA "{schema(system)}" CASCADE'], check=True,
                   capture_output=True, timeout=60)
    subprocess.run(["pg_restore", "--exit-on-error", f"--dbname={pg_url()}", str(backup)],
                   check=True, capture_output=True, timeout=120)


def schema(system: ProcessSystem) -> str:
    return f"{system.schema_prefix}_partners"


def pg_url() -> str:
    url = postgres_url()
    assert url is not None
    return url.replace("postgresql+asyncpg", "postgresql")


def restore_report(system: ProcessSystem, service: str) -> subprocess.CompletedProcess[str]:
    env = {**system.process(service).env, "ENSEMBLE_LOG_LEVEL": "ERROR"}
    return subprocess.run([sys.executable, "-m", "ensemble.cli", "restore-report", service],
                          cwd=SOURCE, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120, check=False)


# --- what the stream and partners' database hold ----------------------------------------------


async def partners_events(system: ProcessSystem) -> list[dict[str, Any]]:
    nc = await nats.connect(system.nats.url)
    try:
        js = nc.jetstream()
        count = (await js.stream_info("ENSEMBLE_PARTNERS")).state.messages
        sub = await js.subscribe("ensemble.*.partners.>", stream="ENSEMBLE_PARTNERS",
                                 ordered_consumer=True)
        events = [json.loads((await sub.next_msg(timeout=10)).data) for _ in range(count)]
        await sub.unsubscribe()
        return events
    finally:
        await nc.close()


async def capacity_changes(system: ProcessSystem, capacity: int) -> list[str]:
    return [e["id"] for e in await partners_events(system)
            if e["type"].endswith(".capacity_changed.v1") and e["data"]["capacity"] == capacity]


async def answers_per_referral(system: ProcessSystem) -> dict[str, int]:
    """Distinct PartnerMatched / NoPartnerAvailable ids on the stream, per referral."""
    ids: dict[str, set[str]] = defaultdict(set)
    for event in await partners_events(system):
        if event["type"].endswith((".matched.v1", ".no_partner_available.v1")):
            ids[event["data"]["referral_id"]].add(event["id"])
    return {referral: len(found) for referral, found in ids.items()}


async def count(system: ProcessSystem, query: str) -> int:
    """One number from partners' database."""
    if system.schema_prefix is None:
        def ask() -> int:
            with sqlite3.connect(system.root / "data" / "partners.db") as conn:
                return int(conn.execute(query).fetchone()[0])
        return await asyncio.to_thread(ask)
    import asyncpg

    conn = await asyncpg.connect(pg_url(), server_settings={"search_path": schema(system)})
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()
