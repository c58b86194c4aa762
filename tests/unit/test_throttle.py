"""RepeatedWarnings with a fake clock: one line per interval and kind, with the count of the
lines left out. (A real phantom serve under a burst is in test_serve_process.py.)"""

from __future__ import annotations

import logging

from phantom.throttle import LOG_INTERVAL, REMEMBERED_KINDS, RepeatedWarnings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    message: str, *args: object, level: int = logging.WARNING, **extra: object
) -> logging.LogRecord:
    entry = logging.LogRecord("phantom", level, __file__, 1, message, args, None)
    entry.__dict__.update(extra)
    return entry


def test_one_line_per_interval_then_the_count_of_the_others() -> None:
    clock = FakeClock()
    repeats = RepeatedWarnings(clock=clock)
    assert repeats.filter(record("backend %s down", "a"))
    assert not any(repeats.filter(record("backend %s down", "a")) for _ in range(41))
    clock.now += LOG_INTERVAL - 0.1
    assert not repeats.filter(record("backend %s down", "a"))
    clock.now += 0.1
    line = record("backend %s down", "a")
    assert repeats.filter(line)
    assert line.getMessage() == (
        "backend a down (and 42 more like it since the previous line, not logged: at most one"
        " every 5s)"
    )
    clock.now += LOG_INTERVAL
    line = record("backend %s down", "a")
    assert repeats.filter(line) and line.getMessage() == "backend a down"  # nothing held


def test_kinds_are_counted_apart_and_info_always_passes() -> None:
    repeats = RepeatedWarnings(clock=FakeClock())
    assert repeats.filter(record("backend %s down", "a"))
    assert repeats.filter(record("backend %s down", "b"))  # another message
    assert repeats.filter(record("backend %s down", "a", level=logging.ERROR))  # another level
    assert all(repeats.filter(record("tunnel opened", level=logging.INFO)) for _ in range(5))


def test_a_repeat_key_groups_lines_that_differ_in_details() -> None:
    repeats = RepeatedWarnings(clock=FakeClock())
    assert repeats.filter(record("client %s: refused", "10.0.0.1", repeat_key="down"))
    assert not repeats.filter(record("client %s: refused", "10.0.0.2", repeat_key="down"))


def test_memory_is_bounded_and_a_forgotten_kind_logs_again() -> None:
    repeats = RepeatedWarnings(clock=FakeClock())
    for n in range(REMEMBERED_KINDS + 1):
        assert repeats.filter(record("line %d", n))
    assert repeats.filter(record("line %d", 0))  # the oldest was forgotten
    assert not repeats.filter(record("line %d", REMEMBERED_KINDS))
