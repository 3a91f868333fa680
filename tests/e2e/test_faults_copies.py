"""Issue 8: two copies of every service consuming the same durable consumers (shared SQLite
files), one copy of each killed (SIGKILL) mid-stream and restarted later: the other copies carry
the load, the killed copies' unacked messages come back, nothing is applied twice."""

import asyncio
from pathlib import Path

import pytest
from support.ledger import make_cases
from support.processes import SERVICES
from support.scenario import assert_clean, count, scenario, stream_with_fault

REFERRALS = count(200, 60)
RATE = 15.0


@pytest.mark.slow
async def test_two_copies_share_consumers_and_survive_losing_one(tmp_path: Path) -> None:
    async with scenario(tmp_path, copies=2) as (system, ledger):
        await ledger.register_partners(capacity=REFERRALS * 2)
        cases = make_cases(REFERRALS)

        async def lose_one_copy_of_each() -> None:
            await asyncio.gather(*(system.kill(s, copy=0) for s in SERVICES))
            await ledger.reached(int(len(cases) * 0.6))
            await asyncio.gather(*(system.restart(s, copy=0) for s in SERVICES))

        await stream_with_fault(ledger, cases, 0.3, lose_one_copy_of_each, rate=RATE)
        report = await ledger.check(cases, timeout=240)
        assert_clean(report, allow_resends=True)  # notifications copy 0 died too
        for service in SERVICES:
            survivor = system.process(service, 1)
            applied = await survivor.metric("ensemble_messages_consumed_total", result="applied")
            assert survivor.starts == 1 and applied > 0, service
