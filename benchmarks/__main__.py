"""Run every registered benchmark: `python -m benchmarks [--quick] [--write-readme]`."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Protocol, cast

from benchmarks.harness import Result, apply_baselines, render_table, write_readme_table
from runtime.host import run as run_loop

# A benchmark is a module exposing `async def run(quick: bool) -> list[Result]` that starts
# whatever it needs (its own nats-server via harness.nats_server) and stops it again.
# Listed in run order; raw_jetstream comes first because the others' ratios refer to it
# (set `Result.baseline` to e.g. raw_jetstream.CONSUME and the ratio is filled in).
BENCHMARKS: list[str] = [
    "benchmarks.raw_jetstream",
    "benchmarks.floor",
    "benchmarks.fanout",
    "benchmarks.matching",
    "benchmarks.loop",
    "benchmarks.memory",
    "benchmarks.http_load",
    "benchmarks.roster",
    "benchmarks.insights",
]

README = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


class Benchmark(Protocol):
    async def run(self, quick: bool) -> list[Result]: ...


async def run_all(quick: bool, modules: list[str]) -> list[Result]:
    results: list[Result] = []
    for name in modules:
        bench = cast(Benchmark, importlib.import_module(name))
        started = time.perf_counter()
        got = await bench.run(quick)
        print(
            f"{name}: {len(got)} results in {time.perf_counter() - started:.1f} s", file=sys.stderr
        )
        results.extend(got)
    apply_baselines(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, under a minute")
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help="write the table between the benchmarks markers of docs/benchmarks.md",
    )
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only modules whose name contains TEXT (repeatable)",
    )
    args = parser.parse_args(argv)

    modules = [m for m in BENCHMARKS if not args.only or any(t in m for t in args.only)]
    results = run_loop(run_all(args.quick, modules))
    print(render_table(results))
    if args.write_readme and not write_readme_table(args.readme, results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
