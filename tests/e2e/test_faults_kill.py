"""Issue 8: kill -9 (SIGKILL) of each service's process in the middle of a stream of referrals,
then a restart. Nothing is lost and nothing happens twice, except what the dispatcher documents:
an email sent just before the kill whose 'sent' was not yet committed is sent again (same
message key). Those resends are counted and reported, and allowed only when notifications died.
"""

import asyncio
from pathlib import Path

import pytest
from support.ledger import make_cases
from support.processes import SERVICES
from support.scenario import assert_clean, count, scenario, stream_with_fault

pytestmark = pytest.mark.slow

REFERRALS = count(150, 40)
RATE = 15.0  # referrals per second: the stream lasts ~10 s, the kill lands in its middle


@pytest.mark.parametrize("service", SERVICES)
async def test_kill_9_mid_stream_then_restart(tmp_path: Path, service: str) -> None:
    async with scenario(tmp_path) as (system, ledger):
        await ledger.register_partners(capacity=REFERRALS * 2)
        cases = make_cases(REFERRALS)

        async def crash_and_restart() -> None:
            await system.kill(service)
            await asyncio.sleep(2)
            await system.restart(service)

        await stream_with_fault(ledger, cases, 0.3, crash_and_restart, rate=RATE)
        report = await ledger.check(cases, timeout=240)
        assert system.process(service).starts == 2
        print(f"kill -9 {service}: {report.resends} resent emails "
              f"({len(report.resent_recipients)} families), "
              f"{len(report.distinct_duplicates)} distinct duplicates")
        assert_clean(report, allow_resends=service == "notifications")
