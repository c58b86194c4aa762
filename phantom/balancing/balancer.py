"""One server's backends: which one takes the next request, and what became of each.

Pure module (the clock and the random generator are passed in; state changes are logged, once
each). The request path asks :meth:`Balancer.pick` for a backend, tells :meth:`answered` or
:meth:`failed` what came of the attempt, and :meth:`release` when the exchange is over (the
response relayed in full); a tunnel counts from :meth:`tunnel_opened` to
:meth:`tunnel_closed`. The health checker reports with :meth:`checked`, the control API drains
and enables.

Which backends may take a request: the primary ones (not ``backup``) that pass their health
checks, are not drained and whose breaker admits one; only when none does, the backups the same
way. A server with one backend never opens its breaker (as nginx ignores ``max_fails`` for a
single server): with nothing to fail over to, a client is better served by trying than by a 503.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..config import BackendURL, ServerConfig
from .backend import DRAINING, HEALTHY, Backend
from .breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from .budget import RetryBudget
from .strategies import Strategy, strategy_for

__all__ = ["RETRY_OUTCOMES", "Balancer"]

log = logging.getLogger("phantom.balancer")

# phantom_retries_total's outcome values.
RETRY_OUTCOMES: Final = ("success", "failure", "budget_exhausted", "no_backend")
# Retry-After when nothing says when a backend may be back (every backend drained, say).
DEFAULT_RETRY_AFTER: Final = 5


@dataclass(frozen=True, slots=True)
class _Tier:
    backends: tuple[Backend, ...]
    strategy: Strategy


class Balancer:
    def __init__(
        self,
        server: ServerConfig,
        *,
        previous: Balancer | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """The backends of ``server``. With ``previous`` (the balancer this one replaces on a
        reload), a backend both name keeps its state and counts, and one only ``previous``
        names is drained and listed until its last request and tunnel are done; neither
        happens before ``take_over()``, so a reload that fails changes nothing."""
        self.server = server.name
        self.load_balance = server.load_balance
        self.hash_key = server.hash_key
        self.clock = clock
        self.retries = server.retries
        self.budget = RetryBudget(server.retry_budget)
        self.failure_statuses = frozenset(server.breaker_statuses)
        self.health = server.health_check
        # phantom_retries_total; a reload carries the counts on.
        self.retry_counts: dict[str, int] = (
            dict.fromkeys(RETRY_OUTCOMES, 0) if previous is None else previous.retry_counts
        )
        self._config = server
        self._previous = previous
        pool = server.pool
        self._failures = server.breaker_failures if len(pool) > 1 else 0
        known = [] if previous is None else list(previous.everyone())
        backends = []
        for config in pool:
            old = next((b for b in known if b.same_address(config.url)), None)
            if old is None:
                started = server.health_check is None or server.health_check_start == HEALTHY
                breaker = Breaker(self._failures, server.breaker_open)
                backends.append(Backend(config, breaker, started))
            else:
                known.remove(old)
                backends.append(old)
        self.backends: tuple[Backend, ...] = tuple(backends)
        self._removed = known
        self.retired: list[Backend] = []  # removed by a reload: no new work, shown until idle
        generator = rng or random.Random()
        self.tiers = tuple(
            _Tier(
                tuple(b for b, _ in tier),
                strategy_for(
                    server.load_balance, [b for b, _ in tier], [c.weight for _, c in tier],
                    generator,
                ),
            )
            for tier in (
                [(b, c) for b, c in zip(backends, pool, strict=True) if not c.backup],
                [(b, c) for b, c in zip(backends, pool, strict=True) if c.backup],
            )
            if tier
        )
        # The common case, one backend, skips the clock, the tiers and the budget.
        self.single = backends[0] if len(pool) == 1 else None
        self.down = False  # no backend admitted the last request (logged once)
        if previous is None:
            self.take_over()

    def take_over(self) -> None:
        """Apply the new settings to the backends kept from ``previous``, and drain those it
        had and this one has not (once the reload is sure to go through)."""
        server, previous = self._config, self._previous
        self._previous = None
        earlier = [] if previous is None else previous.retired
        for backend, config in zip(self.backends, server.pool, strict=True):
            backend.url, backend.weight, backend.backup = config.url, config.weight, config.backup
            backend.breaker.configure(self._failures, server.breaker_open)
            backend.removed = False  # (added back before it was idle, maybe)
            if server.health_check is None:
                backend.healthy = True  # nothing would ever bring it back
            backend.refresh()
        for backend in self._removed:
            if backend not in earlier:  # a removal by an earlier reload was said then
                backend.removed = True
                if backend.busy:
                    log.info(
                        "server %s: backend %s removed; draining (%d requests, %d tunnels open)",
                        self.server, backend.url, backend.inflight, backend.tunnels,
                    )
        self.retired = [b for b in self._removed if b.busy]
        self._removed = []

    # -- the request path ------------------------------------------------------------------

    def pick(self, key: bytes | None = None) -> Backend | None:
        """The backend for a new request or tunnel, counted in flight; None when every
        backend is down, open or drained (the caller answers 503, see ``retry_after``)."""
        single = self.single
        if single is not None:
            if single.ready:  # its breaker never opens: healthy and not drained
                single.inflight += 1
                return single
            self._none_left()
            return None
        now = self.clock()
        if self.retries:
            self.budget.request(now)
        return self._choose(now, key, ())

    def retry(self, key: bytes | None, tried: Collection[Backend]) -> Backend | None:
        """Another backend than those ``tried`` for a failed attempt, counted in flight; None
        when the retry budget is spent or no other backend may take it (counted as such; a
        lone backend has no other, and is not counted)."""
        if self.single is not None:
            return None
        now = self.clock()
        if not self.budget.try_retry(now):
            self.retry_counts["budget_exhausted"] += 1
            return None
        backend = self._choose(now, key, tried)
        if backend is None:
            self.retry_counts["no_backend"] += 1
        return backend

    def retried(self, succeeded: bool) -> None:
        """What the retried attempt came to: an answer, or another failure."""
        self.retry_counts["success" if succeeded else "failure"] += 1

    def _choose(self, now: float, key: bytes | None, tried: Collection[Backend]) -> Backend | None:
        for tier in self.tiers:
            candidates = [
                b for b in tier.backends if (b.ready or b.admits(now)) and b not in tried
            ]
            if candidates:
                backend = tier.strategy.choose(candidates, key)
                if not backend.ready and backend.breaker.begin(now) == HALF_OPEN:
                    self._changed(backend, OPEN, HALF_OPEN, "trying one request")
                backend.inflight += 1
                if self.down:
                    self.down = False
                    log.info("server %s: a backend is available again", self.server)
                return backend
        if not tried:
            self._none_left()
        return None

    def _none_left(self) -> None:
        if not self.down:
            self.down = True
            log.warning(
                "server %s: no backend available (%s); answering 503",
                self.server,
                ", ".join(f"{b.url}: {b.state(self.clock())}" for b in self.backends),
            )

    def answered(self, backend: Backend, status: int) -> None:
        """The backend sent a response head."""
        backend.responses[status // 100] += 1
        if status in self.failure_statuses:
            self._failure(backend, f"answered {status}")
        elif not backend.ready or backend.breaker.streak:
            if backend.breaker.success() == CLOSED:
                backend.refresh()
                self._changed(backend, HALF_OPEN, HEALTHY, f"answered {status}")

    def failed(self, backend: Backend, error: str) -> None:
        """The attempt got no response: a connect error, a reset before any response byte,
        or a timeout."""
        backend.responses[0] += 1
        self._failure(backend, error)

    def _failure(self, backend: Backend, error: str) -> None:
        backend.last_error = error
        breaker = backend.breaker
        was = breaker.state
        if breaker.failure(self.clock()) == OPEN:
            backend.refresh()
            why = error if was == HALF_OPEN else f"{breaker.failures} failures, last: {error}"
            self._changed(backend, was, f"open for {breaker.open_for:g}s", why)

    def release(self, backend: Backend) -> None:
        """The exchange is over (its response relayed, or abandoned)."""
        backend.inflight -= 1
        if not backend.ready and backend.breaker.trial and backend.breaker.state == HALF_OPEN:
            backend.breaker.abandon()  # no verdict: the next request is the trial

    @staticmethod
    def tunnel_opened(backend: Backend) -> None:
        backend.tunnels += 1

    @staticmethod
    def tunnel_closed(backend: Backend) -> None:
        """(A Backend outlives the balancer that opened its tunnel, on a reload: this may be
        called on any of them.)"""
        backend.tunnels -= 1

    def _prune(self) -> None:
        """Forget the removed backends that are idle now."""
        for backend in [b for b in self.retired if not b.busy]:
            self.retired.remove(backend)
            log.info("server %s: removed backend %s is drained", self.server, backend.url)

    def retry_after(self) -> int:
        """Seconds a client told 503 should wait: until the first open breaker half-opens,
        or the health checks could bring an unhealthy backend back."""
        now = self.clock()
        waits = []
        check = self.health
        for backend in self.backends:
            if backend.draining:
                continue
            if not backend.healthy and check is not None:
                waits.append(check.interval * max(1, check.healthy_threshold - backend.passes))
            elif backend.breaker.state == OPEN:
                waits.append(backend.breaker.remaining(now))
        if not waits:
            return DEFAULT_RETRY_AFTER
        return max(1, math.ceil(min(waits)))

    # -- health checks and the operator ------------------------------------------------------

    def checked(self, backend: Backend, error: str | None) -> None:
        """One active health check's result: None = passed, else what failed."""
        check = self.health
        assert check is not None
        if error is None:
            backend.fails = 0
            backend.passes += 1
            if not backend.healthy and backend.passes >= check.healthy_threshold:
                backend.healthy = True
                backend.refresh()
                self._changed(backend, "unhealthy", "healthy", f"{backend.passes} checks passed")
            return
        backend.passes = 0
        backend.fails += 1
        backend.last_error = f"health check: {error}"
        if backend.healthy and backend.fails >= check.unhealthy_threshold:
            backend.healthy = False
            backend.refresh()
            self._changed(
                backend, "healthy", "unhealthy", f"{backend.fails} checks failed, last: {error}"
            )

    def find(self, url: BackendURL) -> Backend | None:
        """The backend at ``url``'s address, a removed one still draining included."""
        return next((b for b in self.everyone() if b.same_address(url)), None)

    def drain(self, backend: Backend) -> None:
        """No new requests or tunnels; those open go on."""
        if not backend.draining:
            was = backend.state(self.clock())
            backend.draining = True
            backend.refresh()
            self._changed(backend, was, DRAINING, "by the operator")

    def enable(self, backend: Backend) -> None:
        """Back in rotation: no longer drained, and its breaker closed (the operator says it
        is fixed). A removed backend can't come back this way: it is not in the config."""
        if backend in self.retired:
            return
        was = backend.state(self.clock())
        backend.draining = False
        backend.breaker.reset()
        backend.refresh()
        now = backend.state(self.clock())
        if now != was:
            self._changed(backend, was, now, "enabled by the operator")

    def report(self) -> list[dict[str, Any]]:
        """``GET /backends``: each backend (removed ones still draining last)."""
        now = self.clock()
        everyone = self.everyone()
        return [
            {
                "url": str(b.url),
                "weight": b.weight,
                "backup": b.backup,
                "state": b.state(now),
                "inflight": b.inflight,
                "tunnels_open": b.tunnels,
                "last_error": b.last_error,
                **({"removed": True} if b in self.retired else {}),
            }
            for b in everyone
        ]

    def everyone(self) -> Sequence[Backend]:
        """The backends configured, then those removed and still draining."""
        self._prune()
        return (*self.backends, *self.retired)

    def _changed(self, backend: Backend, was: str, now: str, why: str) -> None:
        level = logging.INFO if now in (HEALTHY, HALF_OPEN, DRAINING) else logging.WARNING
        log.log(
            level, "server %s: backend %s: %s -> %s (%s)", self.server, backend.url, was, now, why
        )

