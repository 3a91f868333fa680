"""CPU per referral per process, from /proc, and an optional py-spy profile of each service
process over the same window (`python -m benchmarks.loop --profile DIR`).

CPU seconds are what each process used (user + system), so they hold on a loaded machine where
wall-clock rates do not; a profile is read as proportions for the same reason."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

RECORD = re.compile(r"(.+?) (\d+)$", re.MULTILINE | re.DOTALL)
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


DRIVER = "driver"


class CpuMeter:
    """CPU used by each named process between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self.used = {name: cpu_seconds(pid) - self._start[name]
                     for name, pid in self.pids.items()}

    def per_item_ms(self, count: int) -> dict[str, float]:
        return {name: seconds * 1000 / count for name, seconds in self.used.items()}

    def summary(self, count: int) -> str:
        per = self.per_item_ms(count)
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in per.items())
        # The driver is the benchmark's own client (its HTTP requests, its watch of the bus):
        # the system's figure leaves it out, "all" counts it.
        system = sum(ms for name, ms in per.items() if name != DRIVER)
        return (f"CPU ms per referral: {parts}; services and NATS {system:.1f}; "
                f"all {sum(per.values()):.1f}")


def py_spy() -> str | None:
    return shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")


@contextlib.contextmanager
def profiled(pids: dict[str, int], out: Path | None) -> Iterator[None]:
    """py-spy samples each process (collapsed stacks, idle excluded) while the block runs."""
    if out is None:
        yield
        return
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile needs py-spy (pip install -e '.[test]')")
    out.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--nonblocking", "-o", str(out / f"{name}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in pids.items()]
    time.sleep(1)  # attached before the window opens
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


# Where a sample's time goes: walking from the innermost frame out, the first frame that one of
# these rules (in this order) matches names the cost. Library frames called from the envelope's
# code count as the envelope's (decoding, validating, encoding an event).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SQLite executing statements + commit", ("InlineSqlite._execute", "aiosqlite/",
                                               "sqlite3/", "asyncpg/")),
    ("statement construction + compile (SQLAlchemy)", (
        "sql/compiler.py", "cache_key.py", "sql/elements.py", "sql/selectable.py",
        "sql/coercions.py", "sql/base.py", "sql/lambdas.py", "sql/dml.py", "sql/operators.py",
        "sql/annotation.py", "sql/visitors.py", "sql/traversals.py", "sql/default_comparator",
        "sql/functions.py", "sql/type_api.py", "sql/sqltypes.py", "sql/schema.py")),
    ("ORM flush (unit of work, persistence)", (
        "orm/persistence.py", "orm/unitofwork.py", "orm/dependency.py", "orm/sync.py",
        "Session.flush", "Session._flush")),
    ("ORM load, identity map, result rows", (
        "orm/loading.py", "orm/context.py", "engine/result.py", "engine/cursor.py",
        "orm/strategies.py", "orm/identity.py", "engine/row.py")),
    ("SQLAlchemy other (session, engine, attributes)", ("sqlalchemy/", "<sqlalchemy")),
    ("logging", ("logging/",)),
    ("envelope decode + validation", ("decode_envelope", "Envelope.from_", "validate_event")),
    ("envelope encode (wrap, to_bytes)", ("Envelope.to_bytes", "Envelope.wrap")),
    ("JSON encode/decode (elsewhere)", ("json/", "orjson")),
    ("pydantic (HTTP schemas, events)", ("pydantic",)),
    ("email composition + SMTP", ("/email/", "smtplib", "aiosmtplib")),
    ("NATS client", ("nats/",)),
    ("HTTP (uvicorn, starlette, fastapi, httpx, anyio)", (
        "uvicorn", "starlette", "fastapi", "h11", "httpx", "httpcore", "anyio", "httptools")),
    ("metrics + tracing", ("prometheus_client", "opentelemetry", "runtime/tracing.py",
                           "runtime/metrics.py")),
    ("auth (JWT)", ("jwt/",)),
    ("service + runtime code", ("services/", "runtime/", "contracts/", "ensemble/")),
    ("event loop (uvloop, asyncio)", ("asyncio/", "uvloop", "Runner.run")),
)
ENVELOPE = ("contracts/envelope.py",)
# Waiting, not working: a worker thread blocked on its queue; a sample with no Python frame.
IDLE = ("Condition.wait (threading.py", "Queue.get (queue.py")


def categorize(collapsed: Path) -> tuple[Counter[str], int]:
    """Samples per category from py-spy's raw output (``frame;frame;... count``), idle
    samples left out."""
    counts: Counter[str] = Counter()
    total = 0
    # A frame may hold a newline (SQLAlchemy names generated code by its source): a record
    # ends at the line that ends with its sample count.
    for match in RECORD.finditer(collapsed.read_text()):
        frames = [f for f in match.group(1).strip().split(";") if f.strip()]
        if not frames or frames[-1].startswith(IDLE):
            continue
        samples = int(match.group(2))
        total += samples
        counts[_category(frames)] += samples
    return counts, total


SQLITE = CATEGORIES[0]
# SQLAlchemy's own time goes to the operation that asked for it, outermost first: an ORM flush
# (with the statements it builds), else building/compiling a statement, else loading rows.
SQLALCHEMY_PHASES = CATEGORIES[2], CATEGORIES[1], CATEGORIES[3]


def _category(frames: list[str]) -> str:
    if any(n in frames[-1] for n in SQLITE[1]):
        return SQLITE[0]
    if any("sqlalchemy" in f for f in frames[-3:]):
        for name, needles in SQLALCHEMY_PHASES:
            if any(n in f for f in frames for n in needles):
                return name
    for depth, frame in enumerate(reversed(frames)):
        for name, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                if name.startswith(("JSON", "pydantic")) and any(
                        e in f for f in frames[:len(frames) - depth] for e in ENVELOPE):
                    return "envelope decode + validation" if any(
                        "decode" in f or "from_" in f for f in frames) else \
                        "envelope encode (wrap, to_bytes)"
                return name
    return "other"


def report(out: Path) -> str:
    lines = []
    for path in sorted(out.glob("*.txt")):
        counts, total = categorize(path)
        if not total:
            continue
        lines.append(f"\n{path.stem} ({total} samples)")
        for name, n in counts.most_common():
            lines.append(f"  {100 * n / total:5.1f} %  {name}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1])))
