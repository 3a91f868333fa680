"""`ensemble demo` as a newcomer runs it: a whole system started by the command itself."""

import os
import subprocess
import sys
from pathlib import Path


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
