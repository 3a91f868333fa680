"""The raw JetStream limit on this machine: nats-py alone, no FastStream, no database.

Every other benchmark is read as a fraction of these numbers. Messages are ~600 bytes, the
size of an Ensemble CloudEvents envelope, on a file-backed stream of a private nats-server.
Run alone with `python -m benchmarks.raw_jetstream [--count N] [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from benchmarks.harness import Result, nats_server, percentile, render_table
from runtime.host import run as run_loop

# Names other benchmarks use as `Result.baseline`.
PUBLISH = "raw_jetstream.publish"
CONSUME = "raw_jetstream.consume"
PIPELINE = "raw_jetstream.pipeline"
LATENCY = "raw_jetstream.latency"

STREAM = "BENCH_RAW"
SUBJECT = "ensemble.d001.referrals.opened"
DURABLE = "bench-raw"
WINDOW = 256  # publishes in flight before waiting for their acks
BATCH = 100  # pull fetch size
SENT_HEADER = "Bench-Sent-Ns"
STALL_SECONDS = 10.0  # no message for this long means something is broken: fail, do not hang

DEFAULT_COUNT = 20_000
QUICK_COUNT = 2_000
REPEATS = 3


def envelope(size: int = 600) -> bytes:
    """A CloudEvents-shaped JSON body padded to exactly `size` bytes."""
    event = {
        "specversion": "1.0",
        "id": "018f4b7e-8a1c-7d3e-9b2a-5c6d7e8f9a0b",
        "source": "/ensemble/referrals",
        "type": "ensemble.referrals.opened",
        "subject": "referral/018f4b7e-8a1c-7d3e-9b2a-000000000001",
        "time": "2025-01-15T09:30:00.000000Z",
        "datacontenttype": "application/json",
        "dataschema": "https://ensemble.example/schemas/referrals.opened/v1.json",
        "data": {
            "referral_id": "018f4b7e-8a1c-7d3e-9b2a-000000000001",
            "district": "d001",
            "school_id": "d001-s017",
            "needs": ["food", "clothing"],
            "urgency": "high",
            "opened_at": "2025-01-15T09:30:00Z",
            "due_by": "2025-01-17T09:30:00Z",
            "pad": "",
        },
    }
    base = len(json.dumps(event, separators=(",", ":")).encode())
    event["data"]["pad"] = "x" * max(0, size - base)  # type: ignore[index]
    return json.dumps(event, separators=(",", ":")).encode()


async def _fresh_stream(js: JetStreamContext) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(STREAM)
    await js.add_stream(name=STREAM, subjects=[SUBJECT])


async def _publish(js: JetStreamContext, n: int, payload: bytes) -> float:
    """Publish n messages with publish_async, waiting on the acks every WINDOW messages."""
    start = time.perf_counter()
    window: list[asyncio.Future] = []
    for _ in range(n):
        window.append(await js.publish_async(SUBJECT, payload))
        if len(window) >= WINDOW:
            await asyncio.gather(*window)  # raises if any publish was refused
            window.clear()
    await asyncio.gather(*window)
    return time.perf_counter() - start


async def _drain(
    nc: Client,
    sub: JetStreamContext.PullSubscription,
    n: int,
    on_msg: Callable[[Msg], None] | None = None,
) -> int:
    """Fetch in batches and ack each message until n have arrived; returns how many did."""
    got = 0
    last = time.monotonic()
    while got < n:
        try:
            msgs = await sub.fetch(BATCH, timeout=1.0)
        except TimeoutError:
            if time.monotonic() - last > STALL_SECONDS:
                raise RuntimeError(f"consumer stalled after {got} of {n} messages") from None
            continue
        last = time.monotonic()
        for m in msgs:
            if on_msg is not None:
                on_msg(m)
            await m.ack()
        got += len(msgs)
    await nc.flush()  # the acks have reached the server
    return got


async def _check_settled(js: JetStreamContext, n: int) -> None:
    """Every message stored once and acked: otherwise the rate would flatter a broken run."""
    info = await js.stream_info(STREAM)
    if info.state.messages != n:
        raise RuntimeError(f"stream holds {info.state.messages} messages, expected {n}")
    for _ in range(50):  # acks are applied asynchronously by the server
        ci = await js.consumer_info(STREAM, DURABLE)
        if ci.num_ack_pending == 0 and ci.num_pending == 0:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"consumer left {ci.num_ack_pending} unacked, {ci.num_pending} pending")


async def _publish_then_consume(
    pub: Client, sub_nc: Client, n: int, payload: bytes
) -> tuple[float, float]:
    pjs, sjs = pub.jetstream(), sub_nc.jetstream()
    await _fresh_stream(pjs)
    pub_s = await _publish(pjs, n, payload)
    sub = await sjs.pull_subscribe(SUBJECT, durable=DURABLE, stream=STREAM)
    start = time.perf_counter()
    got = await _drain(sub_nc, sub, n)
    cons_s = time.perf_counter() - start
    await sub.unsubscribe()
    if got != n:
        raise RuntimeError(f"consumed {got}, expected {n}")
    await _check_settled(sjs, n)
    return pub_s, cons_s


async def _pipeline(pub: Client, sub_nc: Client, n: int, payload: bytes) -> float:
    """Publisher and consumer at once, on their own connections, as two services would be."""
    pjs, sjs = pub.jetstream(), sub_nc.jetstream()
    await _fresh_stream(pjs)
    sub = await sjs.pull_subscribe(SUBJECT, durable=DURABLE, stream=STREAM)
    start = time.perf_counter()
    publishing = asyncio.create_task(_publish(pjs, n, payload))
    got = await _drain(sub_nc, sub, n)
    await publishing
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    if got != n:
        raise RuntimeError(f"consumed {got}, expected {n}")
    await _check_settled(sjs, n)
    return elapsed


async def _latency(
    pub: Client, sub_nc: Client, rate: float, seconds: float, payload: bytes
) -> tuple[int, float, list[float]]:
    """Publish at a fixed rate with a send timestamp header; latencies in ms at receipt."""
    pjs, sjs = pub.jetstream(), sub_nc.jetstream()
    await _fresh_stream(pjs)
    sub = await sjs.pull_subscribe(SUBJECT, durable=DURABLE, stream=STREAM)
    total = round(rate * seconds)
    latencies: list[float] = []

    def record(m: Msg) -> None:
        sent = int((m.headers or {})[SENT_HEADER])
        latencies.append((time.perf_counter_ns() - sent) / 1e6)

    async def produce() -> None:
        t0 = time.perf_counter()
        acks = []
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()  # absolute schedule: no drift
            if delay > 0:
                await asyncio.sleep(delay)
            headers = {SENT_HEADER: str(time.perf_counter_ns())}
            acks.append(await pjs.publish_async(SUBJECT, payload, headers=headers))
        await asyncio.gather(*acks)

    start = time.perf_counter()
    producing = asyncio.create_task(produce())
    got = await _drain(sub_nc, sub, total, on_msg=record)
    await producing
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    if got != total or len(latencies) != total:
        raise RuntimeError(f"received {got} of {total} timed messages")
    return got, elapsed, latencies


async def run(
    quick: bool, count: int | None = None, repeats: int = REPEATS, url: str | None = None
) -> list[Result]:
    """Medians of `repeats` runs. Starts its own nats-server unless given a URL."""
    if url is None:
        async with nats_server() as own_url:
            return await run(quick, count, repeats, own_url)

    n = count or (QUICK_COUNT if quick else DEFAULT_COUNT)
    lat_rate, lat_seconds = 100.0, (1.0 if quick else 5.0)
    payload = envelope()
    pub = await nats.connect(url)
    sub_nc = await nats.connect(url)
    try:
        pub_s: list[float] = []
        cons_s: list[float] = []
        pipe_s: list[float] = []
        lat_runs: list[tuple[int, float, list[float]]] = []
        for _ in range(repeats):
            p, c = await _publish_then_consume(pub, sub_nc, n, payload)
            pub_s.append(p)
            cons_s.append(c)
            pipe_s.append(await _pipeline(pub, sub_nc, n, payload))
            lat_runs.append(await _latency(pub, sub_nc, lat_rate, lat_seconds, payload))
    finally:
        await pub.close()
        await sub_nc.close()

    size = f"{len(payload)}-byte messages, file store, median of {repeats}"
    med = statistics.median
    lat_count = lat_runs[0][0]
    return [
        Result.timed(
            PUBLISH,
            n,
            med(pub_s),
            ratio_to_baseline=1.0,
            notes=f"publish_async, acks awaited every {WINDOW}; {size}",
        ),
        Result.timed(
            CONSUME,
            n,
            med(cons_s),
            ratio_to_baseline=1.0,
            notes=f"durable pull fetch({BATCH}), ack each; {size}",
        ),
        Result.timed(
            PIPELINE,
            n,
            med(pipe_s),
            ratio_to_baseline=1.0,
            notes=f"publish and consume at once, two connections; {size}",
        ),
        Result.timed(
            LATENCY,
            lat_count,
            med(r[1] for r in lat_runs),
            p50_ms=med(percentile(r[2], 50) for r in lat_runs),
            p99_ms=med(percentile(r[2], 99) for r in lat_runs),
            notes=f"publish to receive at a fixed {lat_rate:.0f}/s for {lat_seconds:.0f} s; {size}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None, help=f"default {DEFAULT_COUNT}")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(render_table(run_loop(run(args.quick, args.count, args.repeats))))


if __name__ == "__main__":
    main()
