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
from support.replies import family_replies_by_email

from ensemble.embedded import free_port
from runtime.settings import SERVICES


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
    assert set(checks) == set(SERVICES)  # every service of the deployment, insights too
    assert all(all(c.values()) for c in checks.values())
    assert (await system.http.get("/health/live")).json() == {"status": "alive"}


async def test_readiness_fails_when_nats_is_gone(system: System) -> None:
    rt = system.services["partners"].runtime
    await rt.nats.close()
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


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, process group, start time) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``, with its start time (a reused pid is another)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in _all_pids():
        if (stat := _proc_stat(pid)) and stat[0] != "Z":
            children.setdefault(stat[1], []).append(pid)
            starts[pid] = stat[3]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def _still_running(pids: dict[int, int]) -> list[int]:
    return [pid for pid, start in pids.items()
            if (stat := _proc_stat(pid)) and stat[3] == start and stat[0] != "Z"]


def _start_up(data: Path, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """A real `ensemble up` with its embedded nats-server, mailbox and SMS provider, in its own
    process group; returns it when ready, with its port and the nats-server pid it logged."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("NATS_URL", "SMTP_URL", "SMS_API_URL", "ENSEMBLE_PUBLIC_BASE_URL")}
    env["ENSEMBLE_LOG_LEVEL"] = "INFO"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ensemble.cli", "up", "--port", str(port), "--data-dir",
             str(data)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if ready.status_code == 200:
                    break
            assert time.monotonic() < deadline, "never ready: " + log.read_text()[-3000:]
            time.sleep(0.2)
        [nats_pid] = [pid for pid in _descendants(process.pid)
                      if Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server"]
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    return process, port, nats_pid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_up_stops_every_process_it_started(tmp_path: Path,
                                                       sig: signal.Signals) -> None:
    """Not only the services: the nats-server it started (which, left running, holds the data
    folder's JetStream store) and any other child end before `ensemble up` exits."""
    log = tmp_path / "up.log"
    process, _port, nats_pid = _start_up(tmp_path / "data", log)
    try:
        children = _descendants(process.pid)
        process.send_signal(sig)
        code = process.wait(timeout=60)
        output = log.read_text()
        assert code in (0, -sig), output[-3000:]
        assert _still_running(children) == [], output[-3000:]
        group = [pid for pid in _all_pids()
                 if (stat := _proc_stat(pid)) and stat[2] == process.pid and stat[0] != "Z"]
        assert group == [], output[-3000:]
        assert "referrals stopped: consumers drained, outbox flushed" in output
        assert f"nats-server pid {nats_pid}" in output  # for an operator's eyes
        assert "Traceback" not in output, output[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_second_up_on_the_same_data_folder_refuses(tmp_path: Path) -> None:
    """Two JetStream servers on one store corrupt it: the second `ensemble up` says who holds
    the folder and exits 2, and the first runs on."""
    process, port, nats_pid = _start_up(tmp_path / "data", tmp_path / "up.log")
    try:
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
        second = subprocess.Popen(
            [sys.executable, "-m", "ensemble.cli", "up", "--port", str(free_port()),
             "--data-dir", str(tmp_path / "data")], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = second.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(second.pid, signal.SIGKILL)
        assert second.returncode == 2, out + err
        assert f"nats-server (pid {nats_pid})" in err
        assert "is in use by ensemble up" in err
        assert "Traceback" not in err
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
