"""A process system with a ledger attached, and a fault injected mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .ledger import Case, Ledger, Report
from .processes import ProcessSystem, process_system, system_ledger

QUICK = bool(os.environ.get("ENSEMBLE_TEST_QUICK"))


def count(full: int, quick: int) -> int:
    """How many referrals a test drives: ENSEMBLE_TEST_QUICK=1 for a fast local run."""
    return quick if QUICK else full


@contextlib.asynccontextmanager
async def scenario(
    root: Path, **system_options: Any
) -> AsyncIterator[tuple[ProcessSystem, Ledger]]:
    """Start the processes and a ledger; on failure print every process's log tail."""
    async with process_system(root, **system_options) as system, \
            system_ledger(system, system.district) as ledger:
        try:
            yield system, ledger
        except BaseException:
            print(system.diagnosis())
            raise


async def stream_with_fault(ledger: Ledger, cases: Sequence[Case], at: float,
                            fault: Callable[[], Awaitable[None]], rate: float | None = None,
                            concurrency: int = 16) -> None:
    """Open the referrals; once a fraction `at` of them is open, run `fault` alongside."""

    async def inject() -> None:
        await ledger.reached(max(1, int(len(cases) * at)))
        await fault()

    await asyncio.gather(ledger.drive(cases, concurrency=concurrency, rate=rate), inject())


def assert_clean(report: Report, allow_resends: bool = False) -> None:
    print(report.summary())
    problems = report.problems(allow_resends=allow_resends)
    assert not problems, "\n".join([report.summary(), *problems])
