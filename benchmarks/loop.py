"""The whole referral loop, each service its own process: referrals opened over HTTP until the
family's message is sent (FamilyContacted now needs the family's reply, which no benchmark
family gives, so the loop is measured opened → NotificationSent). Sustained referrals/s and
per-hop latency from the referral timeline's `at` and notifications' `sent_at`, on SQLite and
PostgreSQL (ENSEMBLE_TEST_POSTGRES_URL, else skipped), one and two copies per service.

Each row's notes give the CPU each process used per referral over the timed window (from
/proc: user + system seconds, so it holds on a loaded machine); `--profile DIR` also samples
every service process with py-spy over that window and prints where its CPU went.

Run alone: `python -m benchmarks.loop [--quick] [--only sqlite-x1] [--profile DIR]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cpu import DRIVER, CpuMeter, profiled, report
from benchmarks.harness import Result, render_table
from benchmarks.raw_jetstream import PIPELINE
from runtime.host import run as run_loop
from tests.support.ledger import make_cases
from tests.support.processes import postgres_url, process_system, system_ledger

FULL_COUNT = 600
QUICK_COUNT = 100
CONCURRENCY = 32
HOPS = ("opened→matched", "matched→sent", "opened→sent")
# (backend, copies per service, fixed rate of referrals per second or None for as fast as 32
# in flight allow): the target is p99 opened → matched under 50 ms at 100/s.
CONFIGS = (("sqlite", 1, None), ("sqlite", 2, None), ("postgres", 1, None), ("postgres", 2, None),
           ("sqlite", 1, 100.0), ("postgres", 1, 100.0))


async def measure(backend: str, copies: int, count: int, root: Path,
                  rate: float | None = None, profile: Path | None = None) -> list[Result]:
    name = f"loop.{backend}.x{copies}" + (f".at{rate:.0f}" if rate else "")
    async with process_system(root, copies=copies, backend=backend) as system, \
            system_ledger(system) as ledger:
        await ledger.register_partners(capacity=count * 2)
        await ledger.watch_events()  # the bus says when referrals are done, not polling
        warm = make_cases(10, start=10**6)  # first requests pay for imports and caches
        await ledger.drive(warm)
        await ledger.wait_done(warm, timeout=120)
        cases = make_cases(count)
        # Families sign up once; the loop measured is a referral's, opened to sent.
        await ledger.register_families(cases)
        await ledger.wait_drained()  # every service has heard FamilyRegistered
        pids = {p.label: p.pid for p in system.processes}
        meter = CpuMeter(pids | {node.name: node.process.pid for node in system.nats.nodes
                                 if node.process} | {DRIVER: os.getpid()})
        # The window ends when the bus says the last family's message is sent: the reads
        # that check every referral and message afterwards are the benchmark's, not the loop's.
        with profiled(pids, profile / name if profile else None):
            meter.start()
            ledger.started = time.monotonic()
            await ledger.drive(cases, concurrency=CONCURRENCY, rate=rate)
            seconds = await ledger.wait_done(cases, timeout=600, confirm=False)
            meter.stop()
        report = await ledger.check([*warm, *cases], timeout=600, timed=cases)
        report.seconds = seconds if seconds >= 0 else report.seconds
    problems = report.problems()
    if problems:
        raise RuntimeError(f"{name}: {problems}")
    pct = report.percentiles()
    hops = "; ".join(f"{hop} p50 {pct[hop][0]:.0f} / p99 {pct[hop][1]:.0f} ms"
                     for hop in HOPS if hop in pct)
    e2e = pct.get("opened→sent", (None, None))
    results = [Result.timed(
        name, count, report.seconds, p50_ms=e2e[0], p99_ms=e2e[1], baseline=PIPELINE,
        notes=f"referral opened over HTTP → NotificationSent (families registered before), "
              f"{f'{rate:.0f}/s' if rate else f'{CONCURRENCY} in flight'}, {copies} process(es) "
              f"per service on {backend}; {hops}; {meter.summary(count)}")]
    results += [Result.timed(f"{name}.{hop}", count, report.seconds, p50_ms=pct[hop][0],
                             p99_ms=pct[hop][1], notes="per hop, same run")
                for hop in HOPS if hop in pct and hop != "opened→sent"]
    return results


async def run(quick: bool, only: list[str] | None = None,
              rate: float | None = None, profile: Path | None = None) -> list[Result]:
    """``rate`` runs the as-fast-as-possible shapes at that fixed rate instead (a slower
    machine's latency below its ceiling)."""
    count = QUICK_COUNT if quick else FULL_COUNT
    results: list[Result] = []
    configs = CONFIGS if rate is None else tuple((b, c, rate) for b, c, r in CONFIGS if r is None)
    for backend, copies, rate in configs:
        label = f"{backend}-x{copies}" + (f"-at{rate:.0f}" if rate else "")
        if only and not any(o in label for o in only):
            continue
        if backend == "postgres" and not postgres_url():
            print(f"loop: {label} skipped (set ENSEMBLE_TEST_POSTGRES_URL)", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory(prefix=f"ensemble-loop-{label}-") as tmp:
            results += await measure(backend, copies, count, Path(tmp), rate, profile)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", action="append", default=[], help="e.g. sqlite-x1")
    parser.add_argument("--rate", type=float, help="referrals/s offered, e.g. 40")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample each service with py-spy into DIR and print where CPU goes")
    args = parser.parse_args()
    print(render_table(run_loop(run(args.quick, args.only, args.rate, args.profile))))
    if args.profile:
        for sub in sorted(p for p in args.profile.iterdir() if p.is_dir()):
            print(f"\n== {sub.name}{report(sub)}")


if __name__ == "__main__":
    main()
