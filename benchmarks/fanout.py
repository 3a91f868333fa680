"""Announcement fan-out: messages per second from the notifications dispatcher to a local SMTP
server (aiosmtpd) and to the development SMS provider (Twilio's API shape over HTTP), for
10,000 and 100,000 families (quick: 1,000). Messages are inserted as one bulk request does it
(multi-row INSERT), then dispatched in batches as the service does: a few open SMTP connections
per batch, SMS concurrently within a bounded window, one commit per batch. The SMTP server and
the SMS provider run in a process of their own, as real providers do: their CPU is not the
dispatcher's. Run alone with `python -m benchmarks.fanout [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import time as clock_time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

from benchmarks.harness import Result, free_port, render_table
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


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


def _serve_providers(conn: Connection, sms_store: str) -> None:
    """The providers' side (child process): an SMTP server counting what it gets and the dev
    SMS provider; answers "count" with the number of emails, stops on "stop"."""
    async def serve() -> None:
        counter = _Counter()
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

    def __init__(self, conn: Connection, smtp_port: int, sms_url: str) -> None:
        self.conn, self.smtp_url, self.sms_url = conn, f"smtp://127.0.0.1:{smtp_port}", sms_url

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
        yield Providers(parent, smtp_port, sms_url)
    finally:
        parent.send("stop")
        await asyncio.to_thread(process.join, 15)
        if process.is_alive():
            process.kill()


async def _one(channel: Channel, families: int, tmp: Path) -> list[Result]:
    async with providers_process(tmp / f"sms-{channel}-{families}.jsonl") as sinks:
        settings = config = NotificationsSettings(
            data_dir=tmp / f"{channel}-{families}", smtp_url=sinks.smtp_url,
            sms_api_url=sinks.sms_url, sms_auth_token=TOKEN, sms_account_sid="ACbench",
            public_base_url="http://127.0.0.1:9", quiet_hours_start=clock_time(0),
            quiet_hours_end=clock_time(0), daily_message_cap=10, dispatch_batch=500)
        client = TwilioSmsClient(sinks.sms_url, "ACbench", TOKEN, "+15005550006")
        providers = {
            Channel.email: SmtpEmail(settings.smtp_url, settings.email_from,
                                     connections=config.smtp_connections),
            Channel.sms: TwilioSms(client, window=config.sms_window),
        }
        rt = ServiceRuntime("notifications", settings, Base.metadata)
        await rt.db.create_schema()
        dispatcher = Dispatcher(rt, providers, config)
        try:
            return await _measure(rt, dispatcher, channel, families, sinks, tmp)
        finally:
            await client.aclose()
            await rt.db.dispose()


async def _measure(rt: ServiceRuntime, dispatcher: Dispatcher, channel: Channel, families: int,
                   sinks: Providers, tmp: Path) -> list[Result]:
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
        async with rt.unit_of_work() as uow:
            await uow.session.execute(insert(Message), rows)
    queued = time.perf_counter() - started

    started = time.perf_counter()
    while await dispatcher.dispatch_due():
        pass
    seconds = time.perf_counter() - started
    async with rt.unit_of_work() as uow:
        sent = await uow.session.scalar(
            select(func.count()).where(Message.status == "sent"))
    if sent != families:
        raise RuntimeError(f"{channel}: {sent} of {families} sent")
    if channel == Channel.email and (got := sinks.emails()) != families:
        raise RuntimeError(f"SMTP server got {got} of {families}")
    name = f"fanout.{channel.value}.{families}"
    target = "local SMTP (aiosmtpd), 4 connections" if channel == Channel.email else \
        "dev SMS provider over HTTP, window 50"
    return [
        Result.timed(f"fanout.queue.{channel.value}.{families}", families, queued,
                     notes="bulk INSERT of messages, 500 a statement (SQLite)"),
        Result.timed(name, families, seconds, notes=f"{target}; SQLite; batches of 500"),
    ]


async def run(quick: bool) -> list[Result]:
    sizes = [1_000] if quick else [10_000, 100_000]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ensemble-fanout-") as tmp:
        for families in sizes:
            for channel in (Channel.email, Channel.sms):
                results += await _one(channel, families, Path(tmp))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, help="families (overrides the sizes)")
    args = parser.parse_args()

    async def go() -> list[Result]:
        if args.count:
            with tempfile.TemporaryDirectory(prefix="ensemble-fanout-") as tmp:
                return [r for c in (Channel.email, Channel.sms)
                        for r in await _one(c, args.count, Path(tmp))]
        return await run(args.quick)

    print(render_table(run_loop(go())))


if __name__ == "__main__":
    main()
