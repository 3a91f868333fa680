"""The consumer's wait between deliveries: doubling, capped, and still a number after a day of
retries (a mail server that is down is waited for without limit: runtime.errors.Unavailable)."""

import pytest

from runtime.consumer import backoff


def test_the_wait_doubles_from_the_base_up_to_the_longest() -> None:
    assert [backoff(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize("delivered", [1_025, 1_441, 100_000])
def test_a_day_of_deliveries_still_waits_the_longest(delivered: int) -> None:
    # 1.0 * 2 ** 1024 raises OverflowError: the exponent must be capped, not just the result.
    assert backoff(delivered, 1.0, 60.0) == 60.0
