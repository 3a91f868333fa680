"""Issue 8: a NATS node killed (SIGKILL) in a three-node cluster mid-stream, then brought back.
Streams have three replicas; the node killed is the leader of the referrals stream, so the
cluster must elect another while services publish and consume through the other nodes."""

import asyncio
import contextlib
import signal
from pathlib import Path

import nats
import pytest
from support.ledger import make_cases
from support.scenario import assert_clean, count, scenario, stream_with_fault

pytestmark = pytest.mark.slow

REFERRALS = count(150, 40)
RATE = 15.0


async def stream_leader(url: str, stream: str) -> str:
    nc = await nats.connect(url.split(","))
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return info.cluster.leader
    finally:
        await nc.close()


async def test_a_nats_node_killed_and_brought_back(tmp_path: Path) -> None:
    async with scenario(tmp_path, nats_nodes=3) as (system, ledger):
        await ledger.register_partners(capacity=REFERRALS * 2)
        cases = make_cases(REFERRALS)
        killed: list[str] = []

        async def kill_a_node() -> None:
            leader = await stream_leader(system.nats.url, "ENSEMBLE_REFERRALS")
            node = system.nats.node(leader)
            await asyncio.to_thread(node.kill)
            killed.append(leader)
            await asyncio.sleep(5)
            node.start()
            await node.wait_healthy(timeout=90)

        await stream_with_fault(ledger, cases, 0.3, kill_a_node, rate=RATE)
        report = await ledger.check(cases, timeout=240)
        assert killed and system.nats.node(killed[0]).process.poll() is None
        assert_clean(report)
        # Every service rode through on the other nodes: none had to be restarted.
        assert all(p.starts == 1 and p.alive for p in system.processes)


async def test_the_outbox_relay_lets_go_when_acks_never_come(tmp_path: Path) -> None:
    from support.processes import Nats

    from contracts.events import ReferralCancelled
    from runtime.settings import Settings
    from services.referrals.service import build

    server = Nats(tmp_path / "nats")
    await server.start()
    rt = build(Settings(nats_url=server.url, data_dir=tmp_path / "data")).runtime
    await rt.start()
    process = server.nodes[0].process
    assert process is not None
    try:
        process.send_signal(signal.SIGSTOP)  # the server takes the bytes and never answers
        async with rt.unit_of_work() as uow:
            uow.emit(ReferralCancelled(referral_id="r-1", reason="test"), district="d001",
                     subject="r-1")
        await asyncio.sleep(1)  # the relay is now waiting for the ack
        await asyncio.wait_for(rt.db.ping(), timeout=20)  # the database is still usable
    finally:
        process.send_signal(signal.SIGCONT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rt.stop(), timeout=10)
        server.stop()
