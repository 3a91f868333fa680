"""`ensemble demo` as a newcomer runs it: a whole system started by the command itself."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import System

from ensemble.demo import run_demo
from runtime.auth import issue_token


def test_demo_takes_every_referral_to_its_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NATS_URL", "SMTP_URL", "SMS_API_URL", "ENSEMBLE_PUBLIC_BASE_URL")
           and not k.startswith("ENSEMBLE_QUIET_HOURS")}  # the demo's own choice is tested
    done = subprocess.run(
        [sys.executable, "-m", "ensemble.cli", "demo", "--data-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "every referral reached its end" in out
    assert "quiet hours are off for the demo" in out  # or at night it would wait for morning
    assert "PartnerMatched -> Smile Bright Dental Clinic" in out
    assert "NoPartnerAvailable" in out
    assert out.count("ReferralClosed: services_received") == 2
    # It leaves a day's work for the console to show, and says how to look at it.
    assert "left open for the console: stu-6240 (tutoring)" in out
    assert "ensemble up --data-dir" in out
    assert "the family texts back" in out and "the family answers the email" in out
    # What the families received is in the local mailbox and the dev SMS store.
    assert any((tmp_path / "demo" / "mailbox" / "new").iterdir())
    assert "Roosevelt Middle School" in (tmp_path / "demo" / "sms" / "messages.jsonl").read_text()
    # The provider's delivery report reached the system the demo started (its own port).
    assert "status callback failed" not in done.stderr


@pytest.fixture
def quiet_hours_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Quiet hours around this moment in d001's time zone (after the suite's autouse fixture
    turned them off); returns when they end, in UTC."""
    now = datetime.now(ZoneInfo("America/Los_Angeles")).replace(second=0, microsecond=0)
    start, end = now - timedelta(hours=2), now + timedelta(hours=2)
    monkeypatch.setenv("ENSEMBLE_QUIET_HOURS_START", f"{start:%H:%M}")
    monkeypatch.setenv("ENSEMBLE_QUIET_HOURS_END", f"{end:%H:%M}")
    return end.astimezone(UTC)


async def test_demo_says_messages_are_held_for_quiet_hours_and_until_when(
        quiet_hours_now: datetime, system: System, capsys: pytest.CaptureFixture[str]) -> None:
    """`ensemble demo --url` against a system in the district's quiet hours: not a bare
    "timed out", but why nothing moves and until when, without waiting out its timeout."""
    token = issue_token(system.settings.jwt_secret, subject="demo", role="district_admin",
                        district="d001")
    started = time.monotonic()
    ok = await run_demo(str(system.http.base_url).rstrip("/"), token, timeout=45)
    out = capsys.readouterr().out
    assert not ok
    assert time.monotonic() - started < 30, out  # it stops once every message is held
    assert "timed out" not in out, out
    assert "held for quiet hours until" in out
    assert f"{quiet_hours_now:%H:%M} UTC" in out, out
    assert "ENSEMBLE_QUIET_HOURS_START" in out
