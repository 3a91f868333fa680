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
    """A server that takes the bytes and never answers: the relay gives up on the acks, the
    database stays usable, and once the server answers again every event committed meanwhile
    is on the stream once, in commit order (re-read from the table, deduped by JetStream)."""
    from support.processes import Nats
    from support.relay import cancel, on_stream, published, unsent

    from runtime.settings import Settings
    from services.referrals.service import build

    server = Nats(tmp_path / "nats")
    await server.start()
    rt = build(Settings(nats_url=server.url, data_dir=tmp_path / "data")).runtime
    await rt.migrate()
    await rt.start()
    process = server.nodes[0].process
    assert process is not None
    try:
        process.send_signal(signal.SIGSTOP)
        await cancel(rt, "r-1")
        await asyncio.sleep(1)  # the relay is now waiting for the ack
        await asyncio.wait_for(rt.db.ping(), timeout=20)  # the database is still usable
        await asyncio.sleep(10)  # past the relay's wait for acks: it has given up on r-1
        await cancel(rt, "r-2")
        process.send_signal(signal.SIGCONT)
        assert await published(server.url, 2, timeout=20) == ["r-1", "r-2"]
        assert await unsent(rt) == 0
        assert await on_stream(server.url) == 2
    finally:
        process.send_signal(signal.SIGCONT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rt.stop(), timeout=10)
        server.stop()
