"""The layers contract (pyproject.toml, [tool.importlinter]): contracts below runtime below
services below the CLI, no service importing another, no import cycle, no I/O in a
service's domain (lifecycle.py). Run as a test so the
README's one test command (and so .ci/run) checks it."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_layers_contract_holds() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout, result.stdout
