"""POST /api/v1/referrals under concurrent load at a fixed rate (open loop: requests start on
schedule whether or not earlier ones have answered), against the referrals process alone on
SQLite, the other services running beside it. Latency p50/p99 per request.

Run alone: `python -m benchmarks --only http_load [--quick]`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from benchmarks.harness import Result, percentile
from tests.support.ledger import Ledger, consumer_states, make_cases
from tests.support.processes import admin_headers, process_system, system_ledger

FULL = ((50.0, 20.0), (150.0, 20.0))  # (requests per second, seconds)
QUICK = ((50.0, 4.0),)
FAMILIES = 100


async def families_known(ledger: Ledger, count: int) -> list[str]:
    """Register families and wait until referrals has heard of every one."""
    cases = make_cases(count)
    ids = []
    for case in cases:
        response = await ledger.api.request("engagement", "POST", "/api/v1/families", json={
            "district_id": "d001", "school_id": case.school, "name": "Load Family",
            "email": case.email, "preferred_language": case.language})
        ids.append(response.json()["id"])
    for _ in range(300):
        states = await consumer_states(ledger.nats_url)
        if all(not s.pending and not s.ack_pending for s in states
               if s.durable == "referrals-engagement-family-registered"):
            return ids
        await asyncio.sleep(0.2)
    raise RuntimeError("referrals never heard of the families")


async def load(client: httpx.AsyncClient, url: str, families: list[str], rate: float,
               seconds: float) -> tuple[int, int, float, list[float]]:
    total = round(rate * seconds)
    latencies: list[float] = []
    errors = 0
    run = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        nonlocal errors
        body = {"district_id": "d001", "school_id": "lincoln-es", "need": "dental",
                "student_ref": f"load-{run}-{i}", "family_id": families[i % len(families)],
                "urgency": "routine", "consent": "given"}
        sent = time.perf_counter()
        try:
            response = await client.post(f"{url}/api/v1/referrals", json=body)
            ok = response.status_code == 201
        except httpx.HTTPError:
            ok = False
        latencies.append((time.perf_counter() - sent) * 1000)
        errors += not ok

    t0 = time.perf_counter()
    tasks = []
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()  # absolute schedule: no drift
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return total, errors, time.perf_counter() - t0, latencies


async def run(quick: bool) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="ensemble-http-") as tmp:
        async with process_system(Path(tmp)) as system, system_ledger(system) as ledger:
            await ledger.register_partners(capacity=100_000)
            families = await families_known(ledger, FAMILIES)
            url = system.process("referrals").url
            limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
            async with httpx.AsyncClient(timeout=60, limits=limits,
                                         headers=admin_headers()) as client:
                await load(client, url, families, 20.0, 1.0)  # warm-up
                for rate, seconds in QUICK if quick else FULL:
                    total, errors, elapsed, lat = await load(client, url, families, rate,
                                                             seconds)
                    results.append(Result.timed(
                        f"http_load.referrals.post@{rate:.0f}/s", total, elapsed,
                        p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
                        notes=f"open loop at {rate:.0f}/s for {seconds:.0f} s, "
                              f"{errors} errors; SQLite, whole loop running behind"))
    return results
