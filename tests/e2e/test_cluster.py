"""Issue 7: a real three-node NATS cluster (JetStream, routes, sync_interval always, streams with
three replicas) and every service running twice as its own process (8 processes), on PostgreSQL
when ENSEMBLE_TEST_POSTGRES_URL is set (production's shape), else on shared SQLite files.
Hundreds of referrals; each reaches its end exactly once."""

from pathlib import Path

import nats
import pytest
from support.ledger import make_cases
from support.processes import postgres_url
from support.scenario import assert_clean, count, scenario

pytestmark = pytest.mark.slow

REFERRALS = count(300, 60)


async def test_two_copies_of_every_service_on_a_three_node_cluster(tmp_path: Path) -> None:
    backend = "postgres" if postgres_url() else "sqlite"
    async with scenario(tmp_path, copies=2, nats_nodes=3, backend=backend) as (system, ledger):
        assert len(system.processes) == 8
        await ledger.register_partners(capacity=REFERRALS * 2)
        cases = make_cases(REFERRALS)
        await ledger.drive(cases, concurrency=24)
        report = await ledger.check(cases, timeout=180)
        assert_clean(report)

        nc = await nats.connect(system.nats.url.split(","))
        try:
            js = nc.jetstream()
            for stream in await js.streams_info():
                assert stream.config.num_replicas == 3, stream.config.name
                assert stream.cluster is not None and len(stream.cluster.replicas or []) == 2
                # Both copies share each durable: one consumer per durable name, not two.
                names = [c.name for c in await js.consumers_info(stream.config.name)]
                assert len(names) == len(set(names))
        finally:
            await nc.close()
        # Both copies of every service did work: the load was shared, not failed over.
        for proc in system.processes:
            assert proc.alive, proc.label
            applied = await proc.metric("ensemble_messages_consumed_total", result="applied")
            assert applied > 0, f"{proc.label} applied nothing"
