"""The shared database layer's process-level behaviour."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

UNDISPOSED = """
import asyncio, sys
from sqlalchemy import MetaData, text
from runtime.db import Database

async def main() -> None:
    db = Database(f"sqlite:///{sys.argv[1]}", MetaData())
    async with db.transaction() as session:
        assert (await session.execute(text("SELECT 1"))).scalar() == 1
    # The engine is never disposed, as after a crash in a test or a service's start.

asyncio.run(main())
"""


def test_an_undisposed_sqlite_engine_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    # The inline SQLite connection keeps aiosqlite's thread for lock waits; a non-daemon thread
    # would hang the interpreter at exit (a test run that never ends in CI).
    done = subprocess.run([sys.executable, "-c", UNDISPOSED, str(tmp_path / "x.db")],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
