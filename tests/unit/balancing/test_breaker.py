"""phantom.balancing.breaker: closed -> open -> half-open -> closed, with the time passed in."""

from __future__ import annotations

from phantom.balancing.breaker import CLOSED, HALF_OPEN, MAX_OPEN_SECONDS, OPEN, Breaker


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = Breaker(failures=3, open_seconds=10)
    assert breaker.failure(0) is None
    assert breaker.failure(0) is None
    assert breaker.success() is None  # a success in between starts the count again
    assert breaker.failure(0) is None
    assert breaker.failure(0) is None
    assert breaker.failure(1) == OPEN
    assert not breaker.admits(1)
    assert not breaker.admits(10.9)
    assert breaker.remaining(6) == 5


def test_half_open_lets_exactly_one_trial_through() -> None:
    breaker = Breaker(failures=1, open_seconds=10)
    breaker.failure(0)
    assert breaker.admits(10)
    assert breaker.begin(10) == HALF_OPEN
    assert breaker.state == HALF_OPEN
    assert not breaker.admits(10)  # the trial is on its way
    assert breaker.success() == CLOSED
    assert breaker.admits(10) and breaker.state == CLOSED


def test_a_failed_trial_reopens_for_twice_as_long_up_to_five_minutes() -> None:
    breaker = Breaker(failures=1, open_seconds=10)
    breaker.failure(0)
    now = 0.0
    periods = []
    for _ in range(8):
        now = breaker.open_until
        breaker.begin(now)
        assert breaker.failure(now) == OPEN
        periods.append(breaker.open_until - now)
    assert periods == [20, 40, 80, 160, 300, 300, 300, 300]
    assert MAX_OPEN_SECONDS == 300
    # Closing starts again from the configured time.
    breaker.begin(breaker.open_until)
    breaker.success()
    breaker.failure(1000)
    assert breaker.open_until == 1010


def test_results_while_open_are_ignored() -> None:
    """A request sent before the breaker opened may end while it is open: it decides nothing."""
    breaker = Breaker(failures=1, open_seconds=10)
    breaker.failure(0)
    assert breaker.success() is None
    assert breaker.failure(5) is None
    assert breaker.state == OPEN and breaker.open_until == 10


def test_an_abandoned_trial_frees_the_slot() -> None:
    breaker = Breaker(failures=1, open_seconds=10)
    breaker.failure(0)
    breaker.begin(10)
    breaker.abandon()
    assert breaker.admits(10) and breaker.state == HALF_OPEN


def test_zero_failures_never_opens() -> None:
    breaker = Breaker(failures=0, open_seconds=10)
    for _ in range(100):
        assert breaker.failure(0) is None
    assert breaker.admits(0)


def test_reset_closes_by_hand() -> None:
    breaker = Breaker(failures=1, open_seconds=10)
    breaker.failure(0)
    assert breaker.reset() == CLOSED
    assert breaker.admits(0)
    assert breaker.reset() is None


def test_a_configured_time_longer_than_five_minutes_is_kept() -> None:
    breaker = Breaker(failures=1, open_seconds=600)
    breaker.failure(0)
    breaker.begin(600)
    breaker.failure(600)
    assert breaker.open_until == 1200
