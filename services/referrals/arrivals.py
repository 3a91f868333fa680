"""Waiting, briefly, for a family's registration to reach referrals.

A client registers a family with engagement and opens its referral at once; the registration
travels as ``FamilyRegistered`` and usually lands within milliseconds, but not always before the
next request. ``POST /referrals`` therefore waits up to a few seconds for it instead of refusing
a family that exists. The wait is woken by this process's own consumer and, for a copy of the
service whose sibling applied the event, by a short re-read of the table."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

RECHECK_SECONDS = 0.25


class FamilyArrivals:
    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def arrived(self) -> None:
        """Called after each commit that made a family known: whoever waits looks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seconds: float, known: Callable[[], Awaitable[bool]]) -> bool:
        """True once ``known()`` says the family is there, False after ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if await known():
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, RECHECK_SECONDS))
