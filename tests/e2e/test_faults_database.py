"""Issue 8: the database goes away mid-stream. On PostgreSQL (ENSEMBLE_TEST_POSTGRES_URL) the
server is restarted with pg_ctlcluster when this runs as root on a machine that has it; on SQLite
another writer holds every service's file locked (BEGIN EXCLUSIVE) for a few seconds. Either
way every referral still reaches its end once and nothing is dead-lettered."""

import asyncio
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from support.ledger import make_cases
from support.processes import SERVICES, postgres_url
from support.scenario import assert_clean, count, scenario, stream_with_fault

pytestmark = pytest.mark.slow

REFERRALS = count(150, 40)
RATE = 15.0
LOCK_SECONDS = 5.0


def hold_locked(files: list[Path], seconds: float) -> float:
    """Take the write lock of every file as another process would, hold it, let go."""
    connections = []
    try:
        for file in files:
            conn = sqlite3.connect(file, timeout=30, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            connections.append(conn)
        held = time.monotonic()
        time.sleep(seconds)
        return time.monotonic() - held
    finally:
        for conn in connections:
            conn.execute("ROLLBACK")
            conn.close()


async def test_sqlite_files_locked_by_another_writer(tmp_path: Path) -> None:
    async with scenario(tmp_path, backend="sqlite") as (_system, ledger):
        await ledger.register_partners(capacity=REFERRALS * 2)
        cases = make_cases(REFERRALS)
        files = [tmp_path / "data" / f"{service}.db" for service in SERVICES]
        held: list[float] = []

        async def lock() -> None:
            held.append(await asyncio.to_thread(hold_locked, files, LOCK_SECONDS))

        await stream_with_fault(ledger, cases, 0.3, lock, rate=RATE)
        report = await ledger.check(cases, timeout=240)
        assert held and held[0] >= LOCK_SECONDS
        assert_clean(report)


def pg_restart_command() -> list[str] | None:
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not versions:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "restart"]


async def test_postgres_restarted_mid_stream(tmp_path: Path) -> None:
    if not postgres_url():
        pytest.skip("PostgreSQL: set ENSEMBLE_TEST_POSTGRES_URL")
    command = pg_restart_command()
    if command is None:
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster (Debian's postgresql)")
    async with scenario(tmp_path, backend="postgres") as (system, ledger):
        await ledger.register_partners(capacity=REFERRALS * 2)
        cases = make_cases(REFERRALS)

        async def restart() -> None:
            done = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                           text=True, timeout=120)
            assert done.returncode == 0, done.stderr

        await stream_with_fault(ledger, cases, 0.3, restart, rate=RATE)
        report = await ledger.check(cases, timeout=240)
        assert_clean(report)
        assert all(p.starts == 1 and p.alive for p in system.processes)
