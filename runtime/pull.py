"""A pull feed for one durable JetStream consumer: low latency when quiet, full batches under load.

nats-py's ``fetch(n)`` waits for all ``n`` messages (or the whole timeout) once the stream has
gone quiet, so a fetch of 100 holds a single message for seconds. Here one pull request is kept
open at a time: messages go to a local queue as the server sends them, and ``next_batch``
returns as soon as there is one, together with whatever else has already arrived.
"""

import asyncio
import contextlib
import json
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

# A pull request lives this long on the server; a new one is sent when it ends or runs dry.
EXPIRES_SECONDS = 5.0
# Status codes that end a pull request (timed out, no messages, max waiting / leader change).
TERMINAL = {"404", "408", "409"}


class PullFeed:
    def __init__(self, nc: Client, stream: str, durable: str, batch: int) -> None:
        self.nc = nc
        self.batch = batch
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._credits = 0  # messages the open request may still bring
        self._ends_at = 0.0  # when the open request expires on the server

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.inbox, cb=self._on_message)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._credits -= 1
            self.queue.put_nowait(msg)
        elif status in TERMINAL:
            self._credits = 0  # 100 (heartbeat) and others leave the request open

    async def _request_more(self) -> None:
        # The request may also die silently (a node restarted): its expiry ends it either way.
        if self._credits > 0 and time.monotonic() < self._ends_at:
            return
        self._credits = self.batch
        self._ends_at = time.monotonic() + EXPIRES_SECONDS
        request = {"batch": self.batch, "expires": int((EXPIRES_SECONDS - 0.1) * 1e9)}
        await self.nc.publish(self.next_subject, json.dumps(request).encode(), reply=self.inbox)

    async def next_batch(self, timeout: float = EXPIRES_SECONDS) -> list[Msg]:
        """Messages already here (up to a batch), else wait up to ``timeout`` for the first."""
        deadline = time.monotonic() + timeout
        msgs: list[Msg] = []
        while self.queue.empty():
            await self._request_more()
            wait = min(self._ends_at, deadline) - time.monotonic()
            try:  # asyncio.timeout: wait_for (3.11) can drop a cancel that comes with a message
                async with asyncio.timeout(max(wait, 0.01)):
                    msgs.append(await self.queue.get())
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return []
        while len(msgs) < self.batch and not self.queue.empty():
            msgs.append(self.queue.get_nowait())
        # Ask for the next batch while this one is handled, so the pipe never runs dry.
        await self._request_more()
        return msgs
