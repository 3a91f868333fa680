"""The one loop every background worker runs on (outbox relay, dispatchers, timers, gauges):
do a round of work, then wait for the interval or an explicit wake-up; a round that fails is
logged without personal data and retried with back-off, so a database or NATS away for a while
loses nothing and floods no log."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from runtime.errors import describe_error

log = logging.getLogger("ensemble.periodic")

Round = Callable[[], Awaitable[bool | int | None]]


def doubling(times: int, base: float, longest: float) -> float:
    """``base`` doubled ``times`` times, at most ``longest``: the wait after a failure. The
    exponent is capped too, as ``2 ** 1024`` is past a float and an outage of hours is more
    failures than that (a worker's or a message's back-off then raised instead of waiting)."""
    return min(base * 2 ** min(max(times, 0), 30), longest)


@dataclass
class Periodic:
    """``run()`` calls ``work`` every ``seconds`` (sooner after ``wake()``). A round that answers
    truthy (more to do: a full batch) is followed by another at once; a round that raises waits
    ``backoff_base * 2**failures`` up to ``backoff_max`` before the next."""

    name: str
    work: Round
    seconds: float
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    wake_event: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0
    _stopping: bool = False

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self) -> None:
        self._stopping = True
        self.wake_event.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                more = await self.work()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning("%s failed (%s); retrying", self.name, describe_error(exc))
                await asyncio.sleep(self.backoff())
                continue
            if more:
                await asyncio.sleep(0)  # let requests in between full batches
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the wake-up and
            # drops a cancel that comes with it, and the loop went on for ever (a service's
            # stop waited on it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.seconds):
                    await self.wake_event.wait()
            self.wake_event.clear()

    def backoff(self) -> float:
        return doubling(self.failures, self.backoff_base, self.backoff_max)
