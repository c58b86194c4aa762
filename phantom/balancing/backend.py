"""One backend as the balancer sees it: its settings, health, breaker and load.

Pure module. A :class:`Backend` outlives a reload that keeps its URL (the requests and tunnels
on their way hold it, and their counts must land where the next picks look), so its settings
can change in place.
"""

from __future__ import annotations

from typing import Final

from ..config import BackendConfig, BackendURL
from .breaker import CLOSED, HALF_OPEN, OPEN, Breaker

__all__ = ["DRAINING", "HEALTHY", "STATUS_CLASSES", "UNHEALTHY", "Backend"]

HEALTHY: Final = "healthy"
UNHEALTHY: Final = "unhealthy"
DRAINING: Final = "draining"

# phantom_backend_requests_total's status_class values, by index: status // 100, and
# "error" at 0 for an attempt that got no response (connect error, reset, timeout).
STATUS_CLASSES: Final = ("error", "1xx", "2xx", "3xx", "4xx", "5xx")


class Backend:
    __slots__ = (
        "backup",
        "breaker",
        "current",
        "draining",
        "fails",
        "healthy",
        "inflight",
        "last_error",
        "passes",
        "ready",
        "removed",
        "responses",
        "tunnels",
        "url",
        "weight",
    )

    def __init__(self, config: BackendConfig, breaker: Breaker, healthy: bool) -> None:
        self.url: BackendURL = config.url
        self.weight = config.weight
        self.backup = config.backup
        self.breaker = breaker
        self.healthy = healthy  # what the active health checks say (True without checks)
        self.draining = False  # drained by the operator: no new requests or tunnels
        # Removed from its server by a reload: the new configuration sends it nothing, and
        # connections opened before the reload, which keep the old one, finish with it.
        self.removed = False
        self.inflight = 0  # requests sent and not yet answered in full
        self.tunnels = 0  # open upgrade tunnels
        self.last_error: str | None = None
        self.current = 0  # smooth weighted round robin's running score
        self.passes = 0  # consecutive passed health checks
        self.fails = 0  # consecutive failed health checks
        self.responses = [0] * len(STATUS_CLASSES)  # attempts by STATUS_CLASSES index
        self.ready = False  # see refresh()
        self.refresh()

    def __repr__(self) -> str:
        return f"<Backend {self.url} {self.state(0.0)}>"

    @property
    def load(self) -> int:
        """What least_connections and random_two compare (divided by the weight)."""
        return self.inflight + self.tunnels

    @property
    def busy(self) -> bool:
        return bool(self.inflight or self.tunnels)

    def refresh(self) -> None:
        """Set ``ready``: healthy, not drained, breaker closed. The picks read this one flag
        and ask ``admits`` only where it is False, so the owner calls this after every change of
        those three."""
        self.ready = self.healthy and not self.draining and self.breaker.state == CLOSED

    def admits(self, now: float) -> bool:
        """Whether a new request or tunnel may go here now."""
        return self.ready or (self.healthy and not self.draining and self.breaker.admits(now))

    @property
    def up(self) -> bool:
        """phantom_backend_up: the checks pass and the breaker is not open. Draining is an
        operator's choice, not an outage: a drained backend stays up."""
        return self.healthy and self.breaker.state != OPEN

    def breaker_state(self, now: float) -> str:
        """closed / open / half-open; an open breaker whose time is over is half-open (the
        next request is the trial)."""
        breaker = self.breaker
        if breaker.state == OPEN and now >= breaker.open_until:
            return HALF_OPEN
        return breaker.state

    def state(self, now: float) -> str:
        """healthy / unhealthy / open / half-open / draining, the worst first."""
        if self.draining or self.removed:
            return DRAINING
        if not self.healthy:
            return UNHEALTHY
        breaker = self.breaker_state(now)
        return HEALTHY if breaker == CLOSED else breaker

    def same_address(self, url: BackendURL) -> bool:
        """The same backend: scheme, host and port (the base path is not an address)."""
        mine = self.url
        return (mine.scheme, mine.host, mine.port) == (url.scheme, url.host, url.port)
