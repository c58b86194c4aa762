"""Rate limits for log lines: one line stands for a burst of the same thing.

:class:`Throttle` says yes at most once per interval (the descriptor warnings use one each);
:class:`RepeatedWarnings` is a logging filter that applies one per kind of warning, so a
backend that is down under load writes one line every few seconds instead of one per request.
The access log and the metrics still count every request and every failure.

Pure module: the clock is injected, nothing here does I/O.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["LOG_INTERVAL", "RepeatedWarnings", "Throttle"]

# At most one line of each kind this often: enough to see it is still happening, not a flood.
LOG_INTERVAL = 5.0
# Kinds of warning remembered at once (the least recently seen are forgotten first): a kind
# forgotten just logs its next line at once, so this only bounds memory.
REMEMBERED_KINDS = 256


class Throttle:
    """Says yes at most once per ``interval`` seconds: one log line stands for a burst."""

    __slots__ = ("_clock", "_interval", "_next")

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._next = -math.inf

    def __call__(self) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._interval
        return True


class _Kind:
    __slots__ = ("held", "throttle")

    def __init__(self, throttle: Throttle) -> None:
        self.throttle = throttle
        self.held = 0  # lines not logged since the last one that was


class RepeatedWarnings(logging.Filter):
    """A handler filter: of repeated warnings (and errors) of one kind, one line per
    ``interval`` is logged, and it says how many were left out since the previous one.

    A kind is the logger, the level and the message, or the ``repeat_key`` a caller passes in
    ``extra`` to group lines that differ only in details (a backend that is down fails the
    same way for every client and path). Lower levels always pass."""

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._kinds: OrderedDict[Hashable, _Kind] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = getattr(record, "repeat_key", None)
        if key is None:
            key = (record.name, record.levelno, record.getMessage())
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._kinds[key] = _Kind(Throttle(self._interval, self._clock))
            if len(self._kinds) > REMEMBERED_KINDS:
                self._kinds.popitem(last=False)
        else:
            self._kinds.move_to_end(key)
        if not kind.throttle():
            kind.held += 1
            return False
        if kind.held:
            record.msg = (
                f"{record.getMessage()} (and {kind.held} more like it since the previous line,"
                f" not logged: at most one every {self._interval:g}s)"
            )
            record.args = None
            kind.held = 0
        return True
