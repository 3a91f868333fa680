"""`ensemble roster import` on the server, from a folder, as a process: it refuses a database
that is not migrated (one line, the command to run), then loads the roster and prints every bad
row by file, row and field; the same folder again changes nothing."""

import os
import subprocess
import sys
from pathlib import Path

from support.generators import roster as gen


def _ensemble(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENSEMBLE_")}
    return subprocess.run([sys.executable, "-m", "ensemble.cli", *args, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def test_the_cli_imports_a_folder_on_the_server_and_says_what_it_did(tmp_path: Path) -> None:
    data = gen.build(students=12)
    folder = tmp_path / "sis-export"
    folder.mkdir()
    for name, content in data.files().items():
        (folder / name).write_bytes(content)
    refused = _ensemble("roster", "import", str(folder), "--district", "d001",
                        data_dir=tmp_path / "data")
    assert refused.returncode == 1 and "ensemble migrate engagement" in refused.stderr
    assert "Traceback" not in refused.stderr
    migrated = _ensemble("migrate", "engagement", data_dir=tmp_path / "data")
    assert migrated.returncode == 0, migrated.stderr
    done = _ensemble("roster", "import", str(folder), "--district", "d001",
                     data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"families created {len(data.guardians)}" in done.stdout
    for file, row, field in data.broken:
        assert f"ERROR {file} row {row} field {field}:" in done.stdout
    again = _ensemble("roster", "import", str(folder), "--district", "d001",
                      data_dir=tmp_path / "data")
    assert f"families unchanged {len(data.guardians)}" in again.stdout
    assert "events 0" in again.stdout
