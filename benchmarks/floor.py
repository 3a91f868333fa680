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
import tempfile
import uuid
from pathlib import Path

import aiohttp
import aiosmtplib
import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text

from benchmarks.harness import (
    CountingSmtp,
    Result,
    free_port,
    percentile,
    render_table,
    timed_steps,
)
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

    async def step() -> None:
        async with db.transaction() as session:
            await session.execute(statement, {"value": "step"})

    try:
        timing = await timed_steps(step, count, WARM_UP)
        async with db.transaction() as session:
            stored = await session.scalar(select(func.count()).select_from(table))
        if stored != WARM_UP + count:  # every transaction committed its row, or the run is wrong
            raise RuntimeError(f"{stored} rows stored, {WARM_UP + count} written")
    finally:
        if schema:
            async with db.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await db.dispose()
    return _result(f"floor.{label}.transaction", count, timing, "transaction",
                   f"one Core insert in its own transaction (runtime.db.Database, {label})")


async def _empty_posts(count: int) -> Result:
    app = FastAPI()

    @app.post("/steps", status_code=201)
    async def answer(body: dict[str, str]) -> dict[str, str]:
        return {"id": body.get("id", "")}

    port = free_port()
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

            async def step() -> None:
                async with client.post("/steps", json={"id": str(uuid.uuid4())}) as reply:
                    if reply.status != 201:
                        raise RuntimeError(f"POST /steps answered {reply.status}")
                    await reply.read()

            timing = await timed_steps(step, count, WARM_UP)
    finally:
        server.should_exit = True
        await serving
    return _result("floor.http.empty_post", count, timing, "request",
                   "an empty JSON POST to FastAPI over loopback, aiohttp client and uvicorn "
                   "server in one process")


MESSAGE = (b"From: school@example.org\r\nTo: family@example.org\r\nSubject: A step\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"Hello. " * 60 + b"\r\n")


async def _emails(count: int) -> Result:
    handler = CountingSmtp()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=controller.port, start_tls=False)
        await smtp.connect()
        timing = await timed_steps(
            lambda: smtp.sendmail("school@example.org", ["family@example.org"], MESSAGE),
            count, WARM_UP)
        await smtp.quit()
    finally:
        controller.stop()
    if handler.count != WARM_UP + count:
        raise RuntimeError(f"{handler.count} emails received, {WARM_UP + count} sent")
    return _result("floor.smtp.email", count, timing, "email",
                   f"a {len(MESSAGE)}-byte email on an open SMTP connection, aiosmtplib client "
                   "and aiosmtpd server in one process")


def _result(name: str, count: int, timing: tuple[float, float, list[float]], unit: str,
            what: str) -> Result:
    seconds, cpu, waits = timing
    return Result.timed(name, count, seconds, p50_ms=percentile(waits, 50),
                        p99_ms=percentile(waits, 99),
                        notes=f"{what}, one after another; CPU {cpu / count * 1e6:.0f} µs per "
                              f"{unit}")


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
