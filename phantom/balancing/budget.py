"""The retry budget of one server: retries may add at most a share of the recent requests.

Pure module: the caller passes a monotonic time in seconds. The window is
:data:`WINDOW_SECONDS` long, counted in one-second buckets. Besides the share, a floor of
:data:`MIN_RETRIES` retries per window lets a quiet server retry its rare failures (Finagle's
and Linkerd's budgets have one for the same reason): a failing tier gets at most that share,
plus one request a second, more load from retries, never twice its load.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["MIN_RETRIES", "WINDOW_SECONDS", "RetryBudget"]

WINDOW_SECONDS: Final = 10
MIN_RETRIES: Final = 10


class RetryBudget:
    __slots__ = ("_ends", "_index", "_requests", "_retries", "_seconds", "share")

    def __init__(self, share: float) -> None:
        self.share = share  # retries / requests at most, over the window
        self._seconds = [-1] * WINDOW_SECONDS  # which second each bucket counts
        self._requests = [0] * WINDOW_SECONDS
        self._retries = [0] * WINDOW_SECONDS
        self._index = 0  # the bucket of the latest second seen
        self._ends = -math.inf  # when that second ends

    def _bucket(self, now: float) -> int:
        if now < self._ends:
            return self._index
        second = math.floor(now)
        index = second % WINDOW_SECONDS
        if self._seconds[index] != second:
            self._seconds[index] = second
            self._requests[index] = 0
            self._retries[index] = 0
        self._index, self._ends = index, second + 1  # the clock is monotonic
        return index

    def request(self, now: float) -> None:
        """Count a request (its first attempt); every request pays this, so the common case,
        the same second as the previous request, is one comparison."""
        self._requests[self._bucket(now)] += 1

    def try_retry(self, now: float) -> bool:
        """Take one retry from the budget; False when it is spent."""
        index = self._bucket(now)
        oldest = math.floor(now) - WINDOW_SECONDS
        requests = retries = 0
        for second, made, retried in zip(self._seconds, self._requests, self._retries, strict=True):
            if second > oldest:
                requests += made
                retries += retried
        if retries >= max(self.share * requests, MIN_RETRIES if self.share else 0):
            return False
        self._retries[index] += 1
        return True
