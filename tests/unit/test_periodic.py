"""runtime.periodic: the loop under every background worker, in milliseconds."""

import asyncio

import pytest

from runtime.periodic import Periodic, doubling


async def run_until(worker: Periodic, done: asyncio.Event, timeout: float = 2) -> None:
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 1)


async def test_a_wake_up_runs_a_round_before_the_interval() -> None:
    rounds: list[float] = []
    done = asyncio.Event()

    async def work() -> None:
        rounds.append(asyncio.get_running_loop().time())
        if len(rounds) == 2:
            done.set()

    worker = Periodic("test", work, seconds=60)
    asyncio.get_running_loop().call_later(0.05, worker.wake)
    await run_until(worker, done)
    assert len(rounds) == 2 and rounds[1] - rounds[0] < 1


async def test_a_full_batch_is_followed_by_another_round_at_once() -> None:
    left = [100, 100, 3]
    done = asyncio.Event()

    async def work() -> int:
        batch = left.pop(0)
        if not left:
            done.set()
        return batch == 100

    await run_until(Periodic("test", work, seconds=60), done, timeout=1)
    assert left == []


async def test_a_failing_round_backs_off_and_the_next_success_resets_it() -> None:
    outcomes = [OSError("database away"), OSError("still away"), None, None]
    seen_failures: list[int] = []
    done = asyncio.Event()
    worker: Periodic

    async def work() -> None:
        seen_failures.append(worker.failures)
        outcome = outcomes.pop(0)
        if not outcomes:
            done.set()
        if outcome is not None:
            raise outcome

    worker = Periodic("test", work, seconds=0.01, backoff_base=0.01, backoff_max=0.02)
    await run_until(worker, done)
    assert seen_failures == [0, 1, 2, 0]
    assert worker.backoff() == 0.01
    worker.failures = 10
    assert worker.backoff() == 0.02  # capped


async def test_a_cancel_that_comes_with_a_wake_up_ends_the_loop() -> None:
    """The wake-up and the cancel in the same turn of the loop (a service stopping while its
    relay is woken): on Python 3.11 asyncio.wait_for returned the wake-up and dropped the
    cancel, the loop went on, and the service's stop waited on it for ever (a CI run hung)."""
    rounds = 0
    first = asyncio.Event()

    async def work() -> None:
        nonlocal rounds
        rounds += 1
        first.set()

    periodic = Periodic("test", work, seconds=60)
    task = asyncio.create_task(periodic.run())
    await first.wait()
    await asyncio.sleep(0.01)  # waiting for its wake-up now
    periodic.wake()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done == {task} and task.cancelled()
    assert rounds == 1


def test_the_wait_doubles_from_the_base_up_to_the_longest() -> None:
    # A consumer's wait before delivery n + 1 is doubling(n - 1, ...): 1, 2, 4 ... 60 s.
    assert [doubling(n - 1, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize("times", [1_025, 1_441, 100_000])
def test_hours_of_failures_still_wait_the_longest(times: int) -> None:
    # 1.0 * 2 ** 1024 raises OverflowError: the exponent must be capped, not just the result.
    # A mail server down for a day is that many deliveries of one message; a database down
    # for an hour and a half is that many failed rounds of a worker (backoff_max 5 s).
    assert doubling(times, 1.0, 60.0) == 60.0
    worker = Periodic("test", _never_called, seconds=1, backoff_max=5.0)
    worker.failures = times
    assert worker.backoff() == 5.0


async def _never_called() -> None:
    raise AssertionError("not run")
