"""Running out of descriptors: when the warning fires, how often, and the accept-failure line
(a fake clock; the real thing over loopback is in tests/integration/test_serve_process.py)."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Iterator

import pytest

from phantom.descriptors import (
    LOG_INTERVAL,
    AcceptFailureLog,
    DescriptorWatch,
    Throttle,
    open_file_limit,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "phantom.descriptors"]


def test_throttle_says_yes_once_per_interval(clock: FakeClock) -> None:
    throttle = Throttle(5.0, clock)
    assert throttle()
    assert not throttle()
    clock.now += 4.9
    assert not throttle()
    clock.now += 0.1
    assert throttle()
    assert not throttle()


def test_no_warning_below_95_percent(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    watch = DescriptorWatch(20_000, clock)
    assert watch.threshold == 19_000
    watch.check(18_999)
    assert lines(caplog) == []


def test_one_warning_per_interval_near_the_limit(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    watch = DescriptorWatch(20_000, clock)
    for in_use in range(19_000, 19_500):
        watch.check(in_use)
    assert lines(caplog) == [
        "running low on file descriptors: 19000 in use of the open-file limit 20000; new "
        "clients will be refused when they run out; raise it with ulimit -n"
    ]
    assert caplog.records[0].levelno == logging.WARNING
    clock.now += LOG_INTERVAL
    watch.check(19_999)
    assert len(lines(caplog)) == 2
    assert "19999 in use" in lines(caplog)[1]


def test_a_new_limit_moves_the_threshold(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    watch = DescriptorWatch(1000, clock)
    watch.set_limit(40_000)
    watch.check(19_500)
    assert lines(caplog) == []
    watch.set_limit(0)  # unlimited: never warns
    watch.check(10**9)
    assert lines(caplog) == []


def test_open_file_limit_is_the_soft_limit() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert open_file_limit() == (0 if soft == resource.RLIM_INFINITY else soft)


def test_a_failed_accept_is_one_error_line_per_interval(
    clock: FakeClock, loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    handler = AcceptFailureLog(clock)
    failure = {"message": "socket.accept() out of system resource",
               "exception": OSError(errno.EMFILE, "Too many open files")}
    for _ in range(10):
        handler(loop, failure)
    assert lines(caplog) == [
        f"cannot accept connections: Too many open files (open-file limit {open_file_limit()}; "
        "raise it with ulimit -n); new clients wait until descriptors are free"
    ]
    assert caplog.records[0].levelno == logging.ERROR
    clock.now += LOG_INTERVAL
    handler(loop, failure)
    assert len(lines(caplog)) == 2


def test_other_exceptions_go_to_the_default_handler(
    clock: FakeClock, loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    handler = AcceptFailureLog(clock)
    handler(loop, {"message": "boom", "exception": OSError(errno.ECONNRESET, "reset")})
    handler(loop, {"message": "no exception at all"})
    assert lines(caplog) == []
    defaults = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert defaults == ["boom", "no exception at all"]


def test_asyncio_retrying_an_accept_on_a_closed_listener_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio schedules ``_start_serving`` again after a failed accept; after shutdown the
    listener's socket is gone and that retry raises ValueError: not worth a traceback."""

    def _start_serving() -> None:
        raise ValueError("Invalid file descriptor: -1")

    def unrelated() -> None:
        raise ValueError("a real bug")

    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(AcceptFailureLog())
        with caplog.at_level(logging.DEBUG):
            loop.call_soon(_start_serving)
            loop.call_soon(unrelated)
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unrelated" in errors[0]
