"""What an on-call engineer relies on: metrics that parse, health that tells the truth."""

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import System
from prometheus_client.parser import text_string_to_metric_families
from test_loop import family_replies_by_email

from ensemble.embedded import free_port


async def test_metrics_parse_and_count_the_loop(system: System) -> None:
    await system.register_partner()
    family = await system.register_family()
    referral = await system.open_referral(family)
    await family_replies_by_email(system, family, "yes")
    await system.wait_status(referral["id"], "family_contacted")

    response = await system.http.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in ("ensemble_messages_consumed", "ensemble_messages_published",
                 "ensemble_handler_seconds", "ensemble_http_requests",
                 "ensemble_outbox_backlog", "ensemble_notifications"):
        assert name in families, name
    applied = [s for s in families["ensemble_messages_consumed"].samples
               if s.labels.get("result") == "applied" and s.name.endswith("_total")]
    assert {s.labels["service"] for s in applied} >= {"referrals", "partners", "engagement",
                                                      "notifications"}
    # Labels stay bounded: route templates, never ids.
    routes = {s.labels.get("route") for s in families["ensemble_http_requests"].samples}
    assert any(r and r.endswith("/referrals/{referral_id}") for r in routes)
    assert not any(referral["id"] in (r or "") for r in routes)
    assert family["email"] not in response.text


async def test_readiness_reports_each_dependency(system: System) -> None:
    ready = await system.http.get("/health/ready")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert set(checks) == {"referrals", "partners", "engagement", "notifications", "webhooks"}
    assert all(all(c.values()) for c in checks.values())
    assert (await system.http.get("/health/live")).json() == {"status": "alive"}


async def test_readiness_fails_when_nats_is_gone(system: System) -> None:
    rt = system.services["partners"].runtime
    await rt.broker.config.connection_state.connection.close()
    ready = await system.http.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["partners"]["nats"] is False


async def test_promtool_accepts_the_metrics(system: System) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    await system.register_partner()
    text = (await system.http.get("/metrics")).text
    checked = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True,
        text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_sigterm_stops_the_whole_system_gracefully(tmp_path: Path, nats_url: str) -> None:
    """`ensemble up` on SIGTERM: stops taking messages, flushes, exits 0 within seconds."""
    port = free_port()
    env = {**os.environ, "NATS_URL": nats_url, "ENSEMBLE_LOG_LEVEL": "INFO"}
    env.pop("SMTP_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "ensemble.cli", "up", "--port", str(port), "--data-dir",
         str(tmp_path / "data")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        output = process.stdout.read().decode() if process.stdout else ""
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert code in (0, -signal.SIGTERM), output[-3000:]
        assert time.monotonic() - started < 30
        for service in ("referrals", "partners", "engagement", "notifications", "webhooks"):
            assert f"{service} stopped: consumers drained, outbox flushed" in output
        assert '"level": "ERROR"' not in output, output[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
