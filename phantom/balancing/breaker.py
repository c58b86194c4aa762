"""A backend's circuit breaker: closed -> open -> half-open -> closed (or open again).

Pure module: the caller passes the time (a monotonic clock in seconds) and gets back the state
change, if any, so it can log each change once instead of each failure.

- closed: requests flow; ``failures`` consecutive failures (``0`` = never) open it.
- open: the backend is skipped for ``open_seconds``; each re-open doubles that, up to
  :data:`MAX_OPEN_SECONDS` (or the configured time when it is longer), and a close resets it.
- half-open: the open time is over; one trial request (or handshake) is let through, and its
  outcome closes the breaker or opens it again. Results of requests sent before the breaker
  opened are ignored while it is open.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CLOSED", "HALF_OPEN", "MAX_OPEN_SECONDS", "OPEN", "Breaker"]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"

MAX_OPEN_SECONDS: Final = 300.0


class Breaker:
    __slots__ = ("failures", "open_for", "open_seconds", "open_until", "state", "streak", "trial")

    def __init__(self, failures: int, open_seconds: float) -> None:
        self.failures = failures  # the threshold; 0 = never open
        self.open_seconds = open_seconds  # the first open period
        self.state: str = CLOSED
        self.streak = 0  # consecutive failures while closed
        self.open_for = open_seconds  # the current open period
        self.open_until = 0.0
        self.trial = False  # half-open: the trial request is on its way

    def configure(self, failures: int, open_seconds: float) -> None:
        """New settings (a reload); the state stays."""
        self.failures = failures
        self.open_seconds = open_seconds
        self.open_for = min(self.open_for, self._longest) if self.state != CLOSED else open_seconds

    @property
    def _longest(self) -> float:
        return max(MAX_OPEN_SECONDS, self.open_seconds)

    def admits(self, now: float) -> bool:
        """Whether a new request may go to the backend now (no change of state)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return now >= self.open_until
        return not self.trial

    def begin(self, now: float) -> str | None:
        """A request goes to the backend (``admits`` said yes). Returns the new state when the
        request is the half-open trial."""
        if self.state == CLOSED:
            return None
        self.trial = True
        if self.state == OPEN:
            self.state = HALF_OPEN
            return HALF_OPEN
        return None

    def success(self) -> str | None:
        """The backend answered. Returns ``CLOSED`` when that ends a half-open trial."""
        self.streak = 0
        if self.state == HALF_OPEN:
            self.state = CLOSED
            self.trial = False
            self.open_for = self.open_seconds
            return CLOSED
        return None

    def failure(self, now: float) -> str | None:
        """The backend failed. Returns ``OPEN`` when that opens the breaker."""
        if self.state == HALF_OPEN:
            self.open_for = min(self.open_for * 2, self._longest)
            return self._open(now)
        if self.state == CLOSED and self.failures:
            self.streak += 1
            if self.streak >= self.failures:
                return self._open(now)
        return None

    def abandon(self) -> None:
        """The trial ended without a verdict (its client went away): the next request is the
        trial."""
        self.trial = False

    def reset(self) -> str | None:
        """Closed again by hand (``POST /backends/enable``). Returns ``CLOSED`` if it was not."""
        was = self.state
        self.state = CLOSED
        self.streak = 0
        self.trial = False
        self.open_for = self.open_seconds
        return None if was == CLOSED else CLOSED

    def remaining(self, now: float) -> float:
        """Seconds until an open breaker lets a trial through (0 when it is not open)."""
        return max(0.0, self.open_until - now) if self.state == OPEN else 0.0

    def _open(self, now: float) -> str:
        self.state = OPEN
        self.trial = False
        self.streak = 0
        self.open_until = now + self.open_for
        return OPEN
