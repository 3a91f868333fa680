"""The webhooks dispatcher's loop (runtime.periodic.Periodic): woken by a commit, again at once
after a full batch, backing off after a failed round. Its rounds are stood in for; what a round
sends is tested against a real receiver in tests/integration/test_webhooks_service.py."""

import asyncio
from typing import Any, cast

import httpx

from runtime.settings import Settings
from services.webhooks.dispatch import Dispatcher
from services.webhooks.settings import webhooks_settings


def dispatcher(**settings: Any) -> Dispatcher:
    config = webhooks_settings(Settings(), webhooks_poll_seconds=60, webhooks_batch=10,
                               **settings)
    return Dispatcher(cast(Any, None), config)


async def rounds_of(d: Dispatcher, answers: list[int | Exception], *,
                    wake_after: float | None = None) -> list[float]:
    """Run ``d`` until it has done a round per answer (each the number sent, or a failure);
    when each round began."""
    started: list[float] = []
    done = asyncio.Event()

    async def dispatch_due(client: httpx.AsyncClient) -> int:
        assert isinstance(client, httpx.AsyncClient)
        started.append(asyncio.get_running_loop().time())
        answer = answers[len(started) - 1]
        if len(started) == len(answers):
            done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    d.dispatch_due = dispatch_due  # type: ignore[method-assign]
    task = asyncio.create_task(d.run())
    if wake_after is not None:
        asyncio.get_running_loop().call_later(wake_after, d.wake)
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        d.worker.stop()
        await asyncio.wait_for(task, 1)
    return started


async def test_a_wake_up_sends_before_the_poll_interval() -> None:
    started = await rounds_of(dispatcher(), [0, 1], wake_after=0.05)
    assert started[1] - started[0] < 1  # not the 60 s poll


async def test_a_full_batch_is_followed_by_the_next_at_once() -> None:
    started = await rounds_of(dispatcher(), [10, 10, 3])
    assert started[-1] - started[0] < 1


async def test_a_failed_round_is_retried_after_a_back_off() -> None:
    d = dispatcher()
    started = await rounds_of(d, [OSError("database away"), OSError("still away"), 0])
    assert 0.35 < started[1] - started[0] < 2  # 0.2 x 2
    assert 0.75 < started[2] - started[1] < 2.5  # 0.2 x 4
    assert d.worker.failures == 0  # the round that worked reset it
