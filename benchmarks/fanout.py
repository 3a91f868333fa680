"""Announcement fan-out: messages per second from the notifications dispatcher to a local SMTP
server (aiosmtpd) and to the development SMS provider (Twilio's API shape over HTTP), for
10,000 and 100,000 families (quick: 1,000). Messages are inserted as one bulk request does it
(multi-row INSERT), then dispatched in batches as the service does: a few open SMTP connections
per batch, SMS concurrently within a bounded window, one commit per batch. The SMTP server and
the SMS provider run in a process of their own, as real providers do: their CPU is not the
dispatcher's. Run alone with `python -m benchmarks.fanout [--quick]`; `--dispatchers 2` runs a
second dispatcher copy in its own process on the same database, as a second notifications
process would. Each row notes the CPU seconds the dispatchers and the providers' process used.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import time as clock_time
from multiprocessing.connection import Connection
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

from benchmarks.cpu import cpu_seconds
from benchmarks.harness import CountingSmtp, Result, free_port, render_table
from contracts.taxonomy import Channel
from runtime.host import run as run_loop
from runtime.service import ServiceRuntime
from services.notifications.dev_sms import DevSmsServer, create_dev_sms_app
from services.notifications.dispatch import Dispatcher
from services.notifications.handlers import new_message
from services.notifications.providers import SmtpEmail, TwilioSms
from services.notifications.settings import NotificationsSettings
from services.notifications.tables import Base, Message
from services.notifications.twilio import TwilioSmsClient

TOKEN = "bench-token"
CHUNK = 500  # families per bulk request, as engagement sends them


def _serve_providers(conn: Connection, sms_store: str) -> None:
    """The providers' side (child process): an SMTP server counting what it gets and the dev
    SMS provider; answers "count" with the number of emails, stops on "stop"."""
    async def serve() -> None:
        counter = CountingSmtp()
        smtp = Controller(counter, hostname="127.0.0.1", port=free_port())
        smtp.start()
        try:
            async with DevSmsServer(create_dev_sms_app(Path(sms_store), TOKEN)) as sms:
                conn.send((smtp.port, sms.base_url))
                loop = asyncio.get_running_loop()
                while await loop.run_in_executor(None, conn.recv) == "count":
                    conn.send(counter.count)
        finally:
            smtp.stop()

    asyncio.run(serve())


class Providers:
    """The parent's handle on the providers' process."""

    def __init__(self, conn: Connection, smtp_port: int, sms_url: str, pid: int) -> None:
        self.conn, self.smtp_url, self.sms_url = conn, f"smtp://127.0.0.1:{smtp_port}", sms_url
        self.pid = pid

    def emails(self) -> int:
        self.conn.send("count")
        return int(self.conn.recv())


@asynccontextmanager
async def providers_process(sms_store: Path) -> AsyncIterator[Providers]:
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, no inherited event loop
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve_providers, args=(child, str(sms_store)), daemon=True)
    process.start()
    try:
        if not await asyncio.to_thread(parent.poll, 60):
            raise RuntimeError("the providers' process did not start")
        smtp_port, sms_url = parent.recv()
        yield Providers(parent, smtp_port, sms_url, process.pid or 0)
    finally:
        parent.send("stop")
        await asyncio.to_thread(process.join, 15)
        if process.is_alive():
            process.kill()


def _settings(data_dir: Path, smtp_url: str, sms_url: str) -> NotificationsSettings:
    return NotificationsSettings(
        data_dir=data_dir, smtp_url=smtp_url, sms_api_url=sms_url, sms_auth_token=TOKEN,
        sms_account_sid="ACbench", public_base_url="http://127.0.0.1:9",
        quiet_hours_start=clock_time(0), quiet_hours_end=clock_time(0), daily_message_cap=10,
        dispatch_batch=500)


@asynccontextmanager
async def dispatcher_of(settings: NotificationsSettings) -> AsyncIterator[Dispatcher]:
    """A dispatcher as the service builds it: a few SMTP connections, the SMS window."""
    client = TwilioSmsClient(settings.sms_api_url or "", "ACbench", TOKEN, "+15005550006")
    providers = {
        Channel.email: SmtpEmail(settings.smtp_url, settings.email_from,
                                 connections=settings.smtp_connections),
        Channel.sms: TwilioSms(client, window=settings.sms_window),
    }
    rt = ServiceRuntime("notifications", settings, Base.metadata)
    try:
        yield Dispatcher(rt, providers, settings)
    finally:
        for provider in providers.values():
            await provider.aclose()
        await rt.db.dispose()


async def drain(dispatcher: Dispatcher, patience: float = 30.0) -> None:
    """Rounds until no message is left to send; a round that finds none waits for what another
    dispatcher copy has leased (with one copy the first empty round ends it), but not for
    retries: nothing moving for ``patience`` seconds ends it too (the caller counts)."""
    last, since = -1, time.monotonic()
    while True:
        if await dispatcher.dispatch_due():
            continue
        async with dispatcher.rt.unit_of_work() as uow:
            left = await uow.session.scalar(select(func.count()).where(
                Message.status.in_(("queued", "sending"))))
        if not left:
            return
        if left != last:
            last, since = left, time.monotonic()
        elif time.monotonic() - since > patience:
            return
        await asyncio.sleep(0.05)


def _copy(conn: Connection, data_dir: str, smtp_url: str, sms_url: str) -> None:
    """Another dispatcher copy (child process), as a second notifications process would run:
    starts its rounds on "go", answers "done" with nothing left to send."""
    async def serve() -> None:
        async with dispatcher_of(_settings(Path(data_dir), smtp_url, sms_url)) as dispatcher:
            conn.send("ready")
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            await drain(dispatcher)
        conn.send("done")

    run_loop(serve())


@asynccontextmanager
async def copies(count: int, settings: NotificationsSettings
                 ) -> AsyncIterator[list[tuple[Connection, int]]]:
    """``count`` more dispatcher copies in their own processes, ready for "go"."""
    ctx = multiprocessing.get_context("spawn")
    started = []
    for _ in range(count):
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_copy, daemon=True, args=(
            child, str(settings.data_dir), settings.smtp_url, settings.sms_api_url))
        process.start()
        started.append((parent, process))
    try:
        for parent, _ in started:
            if not await asyncio.to_thread(parent.poll, 60) or parent.recv() != "ready":
                raise RuntimeError("a dispatcher copy did not start")
        yield [(parent, process.pid or 0) for parent, process in started]
    finally:
        for _, process in started:
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()


async def _one(channel: Channel, families: int, tmp: Path, dispatchers: int = 1
               ) -> list[Result]:
    async with providers_process(tmp / f"sms-{channel}-{families}.jsonl") as sinks:
        settings = _settings(tmp / f"{channel}-{families}", sinks.smtp_url, sinks.sms_url)
        async with dispatcher_of(settings) as dispatcher:
            await dispatcher.rt.db.create_schema()
            queued = await _queue(dispatcher, channel, families)
            async with copies(dispatchers - 1, settings) as others:
                return [Result.timed(f"fanout.queue.{channel.value}.{families}", families,
                                     queued,
                                     notes="bulk INSERT of messages, 500 a statement (SQLite)"),
                        await _measure(dispatcher, channel, families, sinks, others)]


async def _queue(dispatcher: Dispatcher, channel: Channel, families: int) -> float:
    now = dispatcher.clock()
    started = time.perf_counter()
    for start in range(0, families, CHUNK):
        rows = [
            new_message(
                dispatcher, now, idempotency_key=f"bench:{n}", district_id="d001",
                school_id="lincoln-es", family_id=f"fam-{n}", outreach_id="bench",
                batch_id="bench", correlation_id="bench", kind="announcement",
                urgency="crisis", language=("en", "es", "vi", "zh", "ar")[n % 5],
                channels=[channel.value], email=f"family{n}@example.org",
                phone=f"+1415{n:07d}", family_name=f"Family {n}",
                variables={"title": "Schools closed tomorrow", "school_name": "Lincoln",
                           "body": "All schools are closed on Friday because of the storm."})
            for n in range(start, min(start + CHUNK, families))
        ]
        async with dispatcher.rt.unit_of_work() as uow:
            await uow.session.execute(insert(Message), rows)
    return time.perf_counter() - started


async def _measure(dispatcher: Dispatcher, channel: Channel, families: int, sinks: Providers,
                   others: list[tuple[Connection, int]]) -> Result:
    """Seconds from the first round to the last message handed to a provider, and the CPU
    seconds the dispatcher copies and the providers' process used meanwhile."""
    pids = {"dispatchers": [os.getpid(), *(pid for _, pid in others)], "providers": [sinks.pid]}
    before = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
    started = time.perf_counter()
    for conn, _ in others:
        conn.send("go")
    await drain(dispatcher)
    for conn, _ in others:
        if not await asyncio.to_thread(conn.poll, 600) or conn.recv() != "done":
            raise RuntimeError("a dispatcher copy did not finish")
    seconds = time.perf_counter() - started
    cpu = {name: sum(cpu_seconds(p) for p in group) - before[name]
           for name, group in pids.items()}
    async with dispatcher.rt.unit_of_work() as uow:
        sent = await uow.session.scalar(
            select(func.count()).where(Message.status == "sent"))
    if sent != families:
        raise RuntimeError(f"{channel}: {sent} of {families} sent")
    if channel == Channel.email and (got := sinks.emails()) != families:
        raise RuntimeError(f"SMTP server got {got} of {families}")
    name = f"fanout.{channel.value}.{families}"
    target = "local SMTP (aiosmtpd), 4 connections" if channel == Channel.email else \
        "dev SMS provider over HTTP, window 50"
    copies_note = f"; {len(others) + 1} dispatcher processes" if others else ""
    return Result.timed(name, families, seconds, notes=(
        f"{target}; SQLite; batches of 500{copies_note}; {seconds:.1f} s; CPU s: "
        f"dispatchers {cpu['dispatchers']:.1f}, providers {cpu['providers']:.1f}"))


async def run(quick: bool, dispatchers: int = 1) -> list[Result]:
    sizes = [1_000] if quick else [10_000, 100_000]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ensemble-fanout-") as tmp:
        for families in sizes:
            for channel in (Channel.email, Channel.sms):
                results += await _one(channel, families, Path(tmp), dispatchers)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, help="families (overrides the sizes)")
    parser.add_argument("--dispatchers", type=int, default=1,
                        help="dispatcher copies, each its own process (as notifications runs "
                             "with more than one copy); default 1")
    parser.add_argument("--channel", choices=[c.value for c in Channel],
                        help="only this channel (default: email, then SMS)")
    args = parser.parse_args()
    channels = [Channel(args.channel)] if args.channel else [Channel.email, Channel.sms]

    async def go() -> list[Result]:
        if args.count:
            with tempfile.TemporaryDirectory(prefix="ensemble-fanout-") as tmp:
                return [r for c in channels
                        for r in await _one(c, args.count, Path(tmp), args.dispatchers)]
        return await run(args.quick, args.dispatchers)

    print(render_table(run_loop(go())))


if __name__ == "__main__":
    main()
