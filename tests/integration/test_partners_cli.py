"""`ensemble partners import|export` against a real running system over HTTP: the per-row
report, the exit code when a file failed, export to a folder and back in, and the errors a person
gets when the service cannot be asked. `ensemble partners` alone still runs the service."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from conftest import System, token
from support.generators import gen  # the HSDS data set generator, loaded once
from typer.testing import CliRunner

from ensemble.cli import app


async def _cli(system: System, *args: str, district: str = "d001") -> Result:
    """The command in a thread: the system it talks to runs on this test's event loop."""
    env = {"ENSEMBLE_URL": str(system.http.base_url),
           "ENSEMBLE_TOKEN": token(system.settings, "district_admin", district)}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def _folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "hsds-in"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


async def test_import_reports_every_bad_row_and_fails_for_a_failed_file(
        system: System, tmp_path: Path) -> None:
    data = gen.build(organizations=60)
    folder = _folder(tmp_path, data.files)

    result = await _cli(system, "partners", "import", str(folder), "--district", "d001",
                        "--capacity", "2")
    assert result.exit_code == 1, result.output  # cost_options.csv failed as a whole
    lines = result.output.splitlines()
    assert lines[0].startswith("loaded: 60 organizations created, 0 updated; "
                               f"{data.services} services created")
    assert "FAILED cost_options.csv: nothing of it loaded" in lines
    assert any(line.startswith("ERROR cost_options.csv: file not loaded: header lacks column(s)"
                               " service_id") for line in lines)
    for file, row, field in data.broken:
        assert any(line.startswith(f"ERROR {file} row {row} field {field}: ")
                   for line in lines), (file, row, field)
    for file, row, field in data.capacity_warnings:
        assert any(line.startswith(f"WARNING {file} row {row} field {field}: ")
                   for line in lines), (file, row, field)
    assert lines[-1].endswith(", 1 files failed")
    # The good rows are in the running service.
    listed = (await system.http.get("/api/v1/partners", params={"district_id": "d001"})).json()
    assert len(listed) == 60
    assert sum(len(p["services"]) for p in listed) == data.services

    # Without the failed file it passes: bad rows alone are reported, not a failure.
    (folder / "cost_options.csv").unlink()
    again = await _cli(system, "partners", "import", str(folder), "--district", "d001")
    assert again.exit_code == 0, again.output
    assert again.output.startswith("loaded: 0 organizations created, 60 updated; 0 services "
                                   f"created, {data.services} updated")
    assert "FAILED" not in again.output and ", 0 files failed" in again.output


async def test_export_to_a_folder_and_import_it_elsewhere(system: System,
                                                          tmp_path: Path) -> None:
    data = gen.build(organizations=40)
    loaded = await system.http.post(
        "/api/v1/partners/import/hsds", params={"district_id": "d001", "capacity": 2},
        content=data.zip(), headers={"Content-Type": "application/zip"})
    assert loaded.status_code == 200, loaded.text

    out = tmp_path / "hsds-out"
    result = await _cli(system, "partners", "export", str(out), "--district", "d001")
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"organizations.csv", "services.csv", "service_areas.csv", "languages.csv",
            "service_capacity.csv", "units.csv"} <= names
    assert result.output.startswith(f"wrote {len(names)} files to {out}")

    moved = await _cli(system, "partners", "import", str(out), "--district", "d002",
                       district="d002")
    assert moved.exit_code == 0, moved.output
    assert moved.output.startswith(f"loaded: 40 organizations created, 0 updated; "
                                   f"{data.services} services created")
    assert "ERROR" not in moved.output

    as_json = await _cli(system, "partners", "export", str(tmp_path / "json"), "--district",
                         "d001", "--json")
    assert as_json.exit_code == 0, as_json.output
    page: dict[str, Any] = json.loads((tmp_path / "json" / "hsds.json").read_text())
    assert page["total_items"] == data.services
    back = await _cli(system, "partners", "import", str(tmp_path / "json" / "hsds.json"),
                      "--district", "d002", district="d002")
    assert back.exit_code == 0, back.output
    assert back.output.startswith(f"loaded: 0 organizations created, 40 updated; 0 services "
                                  f"created, {data.services} updated")

    # Refused as a whole: another district's token, a token that is no token.
    foreign = await _cli(system, "partners", "export", str(out), "--district", "d001",
                         district="d002")
    assert foreign.exit_code == 1 and "answered 403" in foreign.output
    bad = await asyncio.to_thread(
        CliRunner().invoke, app, ["partners", "import", str(out), "--district", "d001"],
        env={"ENSEMBLE_URL": str(system.http.base_url), "ENSEMBLE_TOKEN": "not-a-token"})
    assert bad.exit_code == 1 and "answered 401" in bad.output


def test_import_says_what_is_wrong_before_any_service_is_asked(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"ENSEMBLE_TOKEN": "t", "ENSEMBLE_URL": "http://127.0.0.1:9"}  # nothing listens
    empty = runner.invoke(app, ["partners", "import", str(tmp_path), "--district", "d001"],
                          env=env)
    assert empty.exit_code == 1 and "holds no .csv files" in empty.output
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    wrong = runner.invoke(app, ["partners", "import", str(note), "--district", "d001"], env=env)
    assert wrong.exit_code == 1 and "give a folder of HSDS CSV files" in wrong.output
    (tmp_path / "organizations.csv").write_text("id,name\no1,Clinic\n")
    down = runner.invoke(app, ["partners", "import", str(tmp_path), "--district", "d001"],
                         env=env)
    assert down.exit_code == 1 and "cannot reach the partners service" in down.output
    missing = runner.invoke(app, ["partners", "import", str(tmp_path / "nope"), "--district",
                                  "d001"], env=env)
    assert missing.exit_code == 2  # a usage error, from the argument's own check


def test_partners_alone_still_runs_the_service(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[list[str], str, int]] = []

    async def serve(built: Any, host: str, port: int) -> None:  # records instead of serving
        served.append((sorted(built.state.services), host, port))

    monkeypatch.setattr("runtime.host.serve", serve)
    # As docker-compose and the k8s manifests start it: migrated first, then the service.
    migrated = CliRunner().invoke(app, ["migrate", "partners", "--data-dir", str(tmp_path)])
    assert migrated.exit_code == 0, migrated.output
    result = CliRunner().invoke(app, ["partners", "--port", "8123", "--data-dir",
                                      str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert served == [(["partners"], "127.0.0.1", 8123)]
