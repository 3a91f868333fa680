"""Issue 18, rolling upgrades (expand, then contract; docs/operations.md): an old and a new copy
of partners run side by side across one additive migration.

The new release is this checkout plus one migration, `0003_rolling_probe`, that adds a nullable
column and declares `compatible_from` this code's head (HEAD). The new
release's `ensemble migrate partners` expands the database while the old copy serves; the old
copy keeps working on it, starts on it again (a pod restarted mid-rollout), and serves side by
side with a new copy; then the old copy goes away. Every referral through all of it reaches its
end, once, and every family hears once."""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.ledger import make_cases
from support.processes import SOURCE, ProcessSystem, ServiceProcess
from support.scenario import assert_clean, scenario

from runtime.migrations import head

HEAD = head("partners")  # this code's partners head, which the probe follows

PROBE = '''"""A new release's additive migration (tests/e2e/test_rolling_upgrade.py).

Revision ID: 0003_rolling_probe
Revises: HEAD
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_rolling_probe"
down_revision = "HEAD"
branch_labels = None
depends_on = None
compatible_from = "HEAD"


def upgrade() -> None:
    op.add_column("referral_requests", sa.Column("probe", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("referral_requests", "probe")
'''


def new_release(root: Path) -> Path:
    """This checkout's code with one more, additive, migration for partners."""
    for package in ("contracts", "runtime", "services", "ensemble"):
        shutil.copytree(SOURCE / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    versions = root / "services" / "partners" / "migrations" / "versions"
    (versions / "0003_rolling_probe.py").write_text(PROBE.replace("HEAD", HEAD))
    return root


def migrate(system: ProcessSystem, release: Path) -> str:
    """The new release's one-shot `ensemble migrate partners` (compose and Kubernetes)."""
    out = subprocess.run([sys.executable, "-m", "ensemble.cli", "migrate", "partners"],
                         cwd=release, env=system.process("partners").env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def backends() -> list[Any]:
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", backends())
async def test_an_old_and_a_new_copy_serve_side_by_side_across_an_additive_migration(
        tmp_path: Path, backend: str) -> None:
    if backend == "postgres":
        from support.processes import postgres_url

        if postgres_url() is None:
            pytest.skip("PostgreSQL: set ENSEMBLE_TEST_POSTGRES_URL")
    release = new_release(tmp_path / "new-release")
    async with scenario(tmp_path / "run", backend=backend) as (system, ledger):
        old = system.process("partners")
        await ledger.register_partners(capacity=200)
        cases = make_cases(40)
        await ledger.register_families(cases)
        await ledger.drive(cases[:10])
        await ledger.wait_done(cases[:10])

        # Expand: the new release migrates while the old copy serves, and it goes on serving.
        said = migrate(system, release)
        assert f"partners: at 0003_rolling_probe (was {HEAD})" in said, said
        await ledger.drive(cases[10:20])
        await ledger.wait_done(cases[10:20])
        # An old copy that restarts during the rollout starts on the expanded database.
        await system.restart("partners")
        assert f"declares itself compatible with code from {HEAD}" in old.log.read_text()

        # Side by side: a copy of the new release joins the old one on the same durables.
        new = ServiceProcess("partners", 1, old.env, system.root / "services" / "partners-1.log",
                             source=release)
        system.services["partners"].append(new)
        new.start()
        await new.wait_ready()
        await ledger.drive(cases[20:32], rate=4)
        await ledger.wait_done(cases[20:32])
        opened = "org.ensemble.referrals.opened.v1"
        handled = [await copy.metric("ensemble_messages_consumed_total", service="partners",
                                     event=opened, result="applied") for copy in (old, new)]
        assert all(n > 0 for n in handled), f"old and new copies applied {handled}"

        # The old copy goes (a later release may contract what only it used).
        await old.terminate()
        await ledger.drive(cases[32:])
        report = await ledger.check(cases, timeout=180)
        assert_clean(report)
        assert "ahead of this code" not in new.log.read_text()
