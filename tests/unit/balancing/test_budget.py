"""phantom.balancing.budget: retries at most a share of the last 10 s's requests."""

from __future__ import annotations

from phantom.balancing.budget import MIN_RETRIES, RetryBudget


def test_a_busy_server_retries_at_most_its_share() -> None:
    budget = RetryBudget(0.2)
    for _ in range(1000):
        budget.request(5.0)
    granted = sum(budget.try_retry(5.5) for _ in range(1000))
    assert granted == 200


def test_a_quiet_server_still_retries_a_few() -> None:
    budget = RetryBudget(0.2)
    budget.request(0.0)
    assert sum(budget.try_retry(0.1) for _ in range(100)) == MIN_RETRIES


def test_zero_turns_retries_off() -> None:
    budget = RetryBudget(0.0)
    for _ in range(100):
        budget.request(0.0)
    assert not budget.try_retry(0.0)


def test_the_window_slides() -> None:
    budget = RetryBudget(0.2)
    for _ in range(1000):
        budget.request(0.5)
    assert sum(budget.try_retry(0.5) for _ in range(1000)) == 200
    # 9 s later the requests still count, and so do the retries taken.
    assert not budget.try_retry(9.4)
    # 10 s later both have left the window: only the floor is left.
    assert sum(budget.try_retry(10.6) for _ in range(100)) == MIN_RETRIES
