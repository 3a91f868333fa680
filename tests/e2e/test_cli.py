"""What a newcomer types first: mistakes get one clear line and exit code 2, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.auth import Role, verify_token
from runtime.districts import DistrictsFileError, load_districts
from runtime.settings import DEFAULT_DISTRICTS_FILE, DEV_JWT_SECRET


def ensemble(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ensemble.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, **(env or {})})


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refusal prints, after checking it is only that."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def dev_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENSEMBLE_JWT_SECRET", raising=False)
    monkeypatch.delenv("ENSEMBLE_DISTRICTS_FILE", raising=False)


def test_token_for_a_coordinator_names_the_missing_school() -> None:
    line = refused(ensemble("token", "--role", "coordinator", "--district", "d001"))
    assert "--school" in line


def test_token_for_a_partner_names_the_missing_partner() -> None:
    assert "--partner" in refused(ensemble("token", "--role", "partner", "--district", "d001"))


def test_token_for_a_district_not_in_the_file_is_refused() -> None:
    line = refused(ensemble("token", "--role", "district_admin", "--district", "d009"))
    assert "'d009'" in line and "d001, d002" in line


def test_token_for_a_school_of_another_district_is_refused() -> None:
    line = refused(ensemble("token", "--role", "coordinator", "--district", "d002",
                            "--school", "lincoln-es"))
    assert "'lincoln-es' is not a school of d002" in line


def test_token_for_a_known_scope_is_issued() -> None:
    done = ensemble("token", "--role", "coordinator", "--district", "d001", "--school",
                    "lincoln-es")
    assert done.returncode == 0, done.stderr
    principal = verify_token(DEV_JWT_SECRET, done.stdout.strip())
    assert principal.role == Role.coordinator
    assert principal.district == "d001" and principal.schools == {"lincoln-es"}


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_DISTRICTS_FILE.read_text()
    assert old in text
    path = tmp_path / "districts.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_bad_time_zone_stops_up_with_one_line_naming_district_and_field(
        tmp_path: Path) -> None:
    path = _broken(tmp_path, '"America/Chicago"', '"America/Chicagoo"')
    done = ensemble("up", "--port", "1", "--data-dir", str(tmp_path / "data"),
                    env={"ENSEMBLE_DISTRICTS_FILE": str(path)})
    assert refused(done).endswith(
        f"{path}: district d002: timezone: unknown time zone 'America/Chicagoo'")
    assert not (tmp_path / "data").exists()  # refused before anything started


@pytest.mark.parametrize(("old", "new", "says"), [
    ('grades = [9, 10, 11, 12]', 'grades = [9, 10, 11, 12]\ntimezone = "Lakeview/Local"',
     "district d002, school lakeview-hs: timezone: unknown time zone 'Lakeview/Local'"),
    ('crisis_hours = 1', 'crisis_hours = "soon"',
     "district d001: follow_up.crisis_hours: Input should be a valid number"),
    ('"2026-11-27"', '"2026-11-31"', "district d001: non_school_days.1: Input should be a "
                                     "valid date"),
    ('name = "Lakeview School District"\n', '', "district d002: name: missing"),
    ('id = "d002"', 'id = "d001"', "duplicate id d001"),
    ('[[districts]]', '[[districts', "not valid TOML"),
], ids=["school-zone", "follow-up", "date", "missing", "duplicate", "toml"])
def test_every_invalid_districts_file_value_is_one_line(tmp_path: Path, old: str, new: str,
                                                        says: str) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(DistrictsFileError) as raised:
        load_districts(path)
    message = str(raised.value)
    assert message.startswith(f"districts file {path}: ") and says in message, message
    assert "\n" not in message


def test_a_missing_districts_file_says_which_setting(tmp_path: Path) -> None:
    line = refused(ensemble("token", "--role", "district_admin", "--district", "d001",
                            env={"ENSEMBLE_DISTRICTS_FILE": str(tmp_path / "nope.toml")}))
    assert "nope.toml" in line and "ENSEMBLE_DISTRICTS_FILE" in line


@pytest.mark.parametrize("service", ["referrals", "notifications", "console"])
def test_a_service_module_answers_help_instead_of_starting(service: str) -> None:
    done = subprocess.run([sys.executable, "-m", f"services.{service}", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"python -m services.{service} {service}" in done.stdout
    assert "--port" in done.stdout
