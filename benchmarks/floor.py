"""The least a step of the referral loop costs in this stack, with no domain work in it.

A referral is one HTTP request and nine to twelve transactions across four processes (see
docs/benchmarks.md, "Why the loop's ratio to raw cannot reach 3 %"). This measures the CPU of
the two kinds of step with nothing in them, so the loop's CPU per referral can be read against
what its steps cost at the least:

- one transaction of one Core insert through the services' own `runtime.db.Database` (SQLite
  on a file, as a service runs it; PostgreSQL too when ENSEMBLE_TEST_POSTGRES_URL is set);
- one empty JSON `POST` over loopback HTTP to a FastAPI app served by uvicorn, client (aiohttp,
  as the loop's driver) and server in this one process, as the loop counts both;
- one short email handed over SMTP on an open connection, client (aiosmtplib, as
  notifications) and server (aiosmtpd, as the loop's mail server) in this one process.

CPU is this process's user + system time (`time.process_time`). Run alone with
`python -m benchmarks.floor [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import aiosmtplib
import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text

from benchmarks.harness import Result, percentile, render_table
from runtime.db import Database
from runtime.host import run as run_loop

WARM_UP = 200


def _table() -> tuple[MetaData, Table]:
    metadata = MetaData()
    table = Table("steps", metadata, Column("id", Integer, primary_key=True),
                  Column("value", String(40), nullable=False))
    return metadata, table


async def _transactions(url: str, schema: str | None, label: str, count: int) -> Result:
    metadata, table = _table()
    db = Database(url, metadata, schema=schema)
    await db.create_schema()
    statement = insert(table)
    try:
        for _ in range(WARM_UP):
            async with db.transaction() as session:
                await session.execute(statement, {"value": "warm"})
        waits: list[float] = []
        cpu, started = time.process_time(), time.perf_counter()
        for _ in range(count):
            one = time.perf_counter()
            async with db.transaction() as session:
                await session.execute(statement, {"value": "step"})
            waits.append((time.perf_counter() - one) * 1000)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        async with db.transaction() as session:
            stored = await session.scalar(select(func.count()).select_from(table))
        if stored != WARM_UP + count:  # every transaction committed its row, or the run is wrong
            raise RuntimeError(f"{stored} rows stored, {WARM_UP + count} written")
    finally:
        if schema:
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await db.dispose()
    return Result.timed(
        f"floor.{label}.transaction", count, seconds,
        p50_ms=percentile(waits, 50), p99_ms=percentile(waits, 99),
        notes=f"one Core insert in its own transaction (runtime.db.Database, {label}), one "
              f"after another; CPU {cpu / count * 1e6:.0f} µs per transaction",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _empty_posts(count: int) -> Result:
    app = FastAPI()

    @app.post("/steps", status_code=201)
    async def step(body: dict[str, str]) -> dict[str, str]:
        return {"id": body.get("id", "")}

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    for _ in range(1000):  # uvicorn says it is up by this flag only
        if server.started or serving.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        raise RuntimeError("uvicorn did not start")
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:

            async def post(body: dict[str, str]) -> None:
                async with client.post("/steps", json=body) as answer:
                    if answer.status != 201:
                        raise RuntimeError(f"POST /steps answered {answer.status}")
                    await answer.read()

            for _ in range(WARM_UP):
                await post({"id": "warm"})
            waits: list[float] = []
            cpu, started = time.process_time(), time.perf_counter()
            for _ in range(count):
                one = time.perf_counter()
                await post({"id": str(uuid.uuid4())})
                waits.append((time.perf_counter() - one) * 1000)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        server.should_exit = True
        await serving
    return Result.timed(
        "floor.http.empty_post", count, seconds,
        p50_ms=percentile(waits, 50), p99_ms=percentile(waits, 99),
        notes="an empty JSON POST to FastAPI over loopback, aiohttp client and uvicorn server in "
              f"one process, one after another; CPU {cpu / count * 1e6:.0f} µs per request",
    )


class _Count:
    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.received += 1
        return "250 OK"


MESSAGE = (b"From: school@example.org\r\nTo: family@example.org\r\nSubject: A step\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"Hello. " * 60 + b"\r\n")


async def _emails(count: int) -> Result:
    handler = _Count()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=controller.port, start_tls=False)
        await smtp.connect()
        for _ in range(WARM_UP):
            await smtp.sendmail("school@example.org", ["family@example.org"], MESSAGE)
        waits: list[float] = []
        cpu, started = time.process_time(), time.perf_counter()
        for _ in range(count):
            one = time.perf_counter()
            await smtp.sendmail("school@example.org", ["family@example.org"], MESSAGE)
            waits.append((time.perf_counter() - one) * 1000)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        await smtp.quit()
    finally:
        controller.stop()
    if handler.received != WARM_UP + count:
        raise RuntimeError(f"{handler.received} emails received, {WARM_UP + count} sent")
    return Result.timed(
        "floor.smtp.email", count, seconds,
        p50_ms=percentile(waits, 50), p99_ms=percentile(waits, 99),
        notes=f"a {len(MESSAGE)}-byte email on an open SMTP connection, aiosmtplib client and "
              f"aiosmtpd server in one process, one after another; CPU {cpu / count * 1e6:.0f} "
              "µs per email",
    )


async def run(quick: bool) -> list[Result]:
    count = 500 if quick else 5000
    results = []
    with tempfile.TemporaryDirectory(prefix="ensemble-bench-floor-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'floor.db'}"
        results.append(await _transactions(url, None, "sqlite", count))
    pg = os.environ.get("ENSEMBLE_TEST_POSTGRES_URL")
    if pg:
        schema = f"bench_floor_{uuid.uuid4().hex[:8]}"
        results.append(await _transactions(pg, schema, "postgres", count))
    results.append(await _empty_posts(count))
    results.append(await _emails(count))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(render_table(run_loop(run(args.quick))))


if __name__ == "__main__":
    main()
