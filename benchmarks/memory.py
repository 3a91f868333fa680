"""Memory of each service process as history grows: RSS after 1,000 referrals and after 100,000
(quick: 200 and 2,000), one process per service on SQLite. History lives in the databases and
streams, never in a process: RSS must stay flat.

Run alone: `python -m benchmarks --only memory [--quick]`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Result
from tests.support.ledger import Ledger, make_cases
from tests.support.processes import SERVICES, ProcessSystem, process_system, system_ledger

FULL = (1_000, 100_000)
QUICK = (200, 2_000)
CHUNK = 1_000  # referrals opened, then waited for, at a time: bounded work in flight
ALLOWED_GROWTH = 1.5  # RSS after the long run over RSS after the short one


async def grow(ledger: Ledger, start: int, count: int, system: ProcessSystem) -> None:
    for first in range(start, start + count, CHUNK):
        cases = make_cases(min(CHUNK, start + count - first), start=first)
        await ledger.register_families(cases)
        await ledger.wait_drained()  # referrals has heard of every family
        await ledger.drive(cases, concurrency=32)
        if await ledger.wait_done(cases, timeout=900) < 0:
            raise RuntimeError(f"referrals {first}.. did not finish")
        sizes = ", ".join(f"{s} {mb:.0f}" for s, mb in rss(system).items())
        print(f"memory: {first + len(cases):,} referrals done; RSS MB {sizes}", file=sys.stderr,
              flush=True)


def rss(system: ProcessSystem) -> dict[str, float]:
    return {s: system.process(s).rss_mb() for s in SERVICES}


async def run(quick: bool) -> list[Result]:
    small, large = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="ensemble-memory-") as tmp:
        async with process_system(Path(tmp)) as system, system_ledger(system) as ledger:
            await ledger.register_partners(capacity=large)  # the API caps a service at 100,000
            await ledger.watch_events()  # the bus says when referrals are done, not polling
            started = time.monotonic()
            await grow(ledger, 0, small, system)
            after_small = rss(system)
            await grow(ledger, small, large - small, system)
            seconds = time.monotonic() - started
            after_large = rss(system)
    results = []
    for service in SERVICES:
        a, b = after_small[service], after_large[service]
        results.append(Result.timed(
            f"memory.{service}", large, seconds, rss_mb=b,
            notes=f"RSS {a:.0f} MB after {small:,} referrals, {b:.0f} MB after {large:,} "
                  f"({(b / a - 1) * 100:+.0f}%)"))
        if b > a * ALLOWED_GROWTH:
            raise RuntimeError(f"{service}: RSS grew from {a:.0f} to {b:.0f} MB with history")
    return results
